"""How products read on screen: titles in a readable case and prices in the shop's currency (pure)."""

from __future__ import annotations

import html
import re

SYMBOLS = {"GBP": "£", "USD": "$", "EUR": "€", "JPY": "¥", "INR": "₹", "CNY": "¥"}
_SMALL = {"a", "an", "and", "as", "at", "but", "by", "for", "in", "of", "on", "or", "the", "to", "with", "from"}
ACRONYMS = {"LED", "USB", "DIY", "UK", "USA", "XL", "XXL", "TV", "DVD", "CD", "BBQ", "PVC", "UV", "OK"}
_WORD = re.compile(r"[A-Za-z][A-Za-z']*")


def readable_title(title: str) -> str:
    """``WHITE HANGING HEART T-LIGHT HOLDER`` -> ``White Hanging Heart T-Light Holder``.

    Only titles written (mostly) in capitals change; mixed-case titles are the shop's own spelling and are
    kept. Small words stay lower case except first; tokens with digits (``3D``, ``12PC``) and short
    all-consonant tokens (``LED``, ``USB``) keep their capitals.
    """
    letters = [c for c in title if c.isalpha()]
    if not letters or sum(c.isupper() for c in letters) < 0.8 * len(letters):
        return title
    out, first = [], True

    def fix(m: re.Match[str]) -> str:
        nonlocal first
        w = m.group(0)
        low = w.lower()
        start = m.start()
        glued = start > 0 and (title[start - 1].isdigit())  # "12PC", "3D": keep as written
        if glued or w in ACRONYMS or (len(w) <= 3 and not re.search(r"[AEIOUY]", w)):
            res = w
        elif low in _SMALL and not first:
            res = low
        else:
            res = low[:1].upper() + low[1:]
        first = False
        return res

    out.append(_WORD.sub(fix, title))
    return "".join(out)


def plotly_text(value: object) -> str:
    """A data string (a title, an id) as plotly shows it: plotly reads ``<a href>``, ``<br>``, ``<b>`` and the like
    in labels, hover text and titles as markup, so a catalog's ``<a href="https://...">`` would become a link;
    escaped, it is shown as typed (plotly decodes the entities)."""
    return html.escape(str(value), quote=False)


def money(price: float | None, currency: str | None) -> str:
    """``£3.25`` for GBP, ``3.25 CHF`` for a code without a symbol, ``3.25`` when the shop gave no currency."""
    if price is None or price != price:
        return "price not given"
    code = (currency or "").upper()
    if code in SYMBOLS:
        return f"{SYMBOLS[code]}{price:,.2f}"
    return f"{price:,.2f} {code}" if code else f"{price:,.2f}"
