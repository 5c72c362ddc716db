"""The output boundary: the one place where reply text becomes what the page and the API show.

Everything a reply is made of (the template, the assistant's notes, the shopper's own words quoted back,
product titles, the LLM's text) passes :func:`screen` last, so none of it can run or link in the page:

- HTML is escaped (``<img src=x onerror=...>`` is shown as text, never parsed);
- Markdown links and images become their text (``[free gift](https://...)`` -> ``free gift``), and bare
  URLs, ``www.`` hosts and e-mail links are replaced by "(link removed)", except the catalog's own
  addresses (a ``url`` or ``image_url`` column of the products), which stay as plain text;
- reference-style link definitions (``[1]: http://...``) are removed, so ``[x][1]`` stays plain text.

``&`` is kept as written (``Tea & Coffee``): an entity such as ``&lt;img&gt;`` is shown as text too.

Replies are Markdown (bold titles, numbered lists) and stay so; only what could run or link is neutralised.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

LINK_REMOVED = "(link removed)"
# ![alt](target) and [text](target), the target up to the matching ")" (one level of parentheses)
_IMAGE = re.compile(r"!\[([^\]\n]{0,300})\]\(((?:[^()\n]|\([^()\n]*\)){0,2000})\)")
_LINK = re.compile(r"\[([^\]\n]{0,300})\]\(((?:[^()\n]|\([^()\n]*\)){0,2000})\)")
_REFERENCE = re.compile(r"^\s{0,3}\[[^\]\n]{1,300}\]:\s*\S+.*$", re.MULTILINE)  # [1]: http://...
_ANGLE_LINK = re.compile(r"<((?:[a-z][a-z0-9+.-]{1,20}:|mailto:)[^>\s]{1,2000})>", re.IGNORECASE)
# a scheme URL, a www. host, or a bare host with a common top-level domain (linkifiers turn these into links)
_URL = re.compile(
    r"(?:\b[a-z][a-z0-9+.-]{1,20}://|\bwww\.)[^\s<>()\[\]]+"
    r"|\b(?:[a-z0-9-]{1,63}\.)+(?:com|net|org|io|co|uk|de|fr|ru|cn|info|biz|xyz|top|ly|me|app|shop|store|site|online|link|click)"
    r"(?:/[^\s<>()\[\]]*)?\b"
    r"|\b[\w.+-]+@[\w-]+\.[\w.-]+\b"
    r"|\bjavascript:[^\s]*|\bdata:[^\s]*",
    re.IGNORECASE,
)


def screen(text: str, allowed_urls: Iterable[str] = ()) -> str:
    """``text`` as it may be shown: no HTML, no links or images but the catalog's own (see the module)."""
    text = text.replace("\x00", "")
    allowed = {u.strip().rstrip("/").lower() for u in allowed_urls if u}

    def own(url: str) -> bool:
        return url.strip().rstrip("/.,;:!?").rstrip("/").lower() in allowed

    def target(m: re.Match[str]) -> str:
        return m.group(2).strip().split()[0] if m.group(2).strip() else ""

    # the catalog's own link or image stays a link (never an image: a picture is the cards' job)
    text = _IMAGE.sub(lambda m: f"[{m.group(1)}]({target(m)})" if own(target(m)) else m.group(1).strip(), text)
    text = _LINK.sub(lambda m: m.group(0) if own(target(m)) else m.group(1), text)
    text = _REFERENCE.sub(LINK_REMOVED, text)
    text = _ANGLE_LINK.sub(lambda m: m.group(1) if own(m.group(1)) else LINK_REMOVED, text)
    kept = []  # the catalog's links, set aside so the bare-URL pass leaves their targets alone

    def hold(m: re.Match[str]) -> str:
        kept.append(m.group(0))
        return f"\x00{len(kept) - 1}\x00"

    text = _LINK.sub(hold, text)
    text = _URL.sub(lambda m: m.group(0) if own(m.group(0)) else LINK_REMOVED, text)
    text = re.sub(r"\x00(\d+)\x00", lambda m: kept[int(m.group(1))], text)
    return text.replace("<", "&lt;").replace(">", "&gt;")


def screened(texts: Iterable[str], allowed_urls: Iterable[str] = ()) -> Iterator[str]:
    """Each text so far (what :func:`~assistant.writers.accumulate` yields), screened whole: a link that
    arrives over two chunks is seen whole."""
    allowed = tuple(allowed_urls)
    for text in texts:
        yield screen(text, allowed)


def catalog_urls(products) -> set[str]:
    """The catalog's own addresses: every value of its ``url``-like columns (url, link, image, image_url...),
    and the addresses its titles carry (UCI sells a "MUG , DOTCOMGIFTSHOP.COM": its title stays whole)."""
    cols = [c for c in products.columns if re.fullmatch(r"(?:.*_)?(?:url|link|image|image_url|href)", str(c).lower())]
    out: set[str] = set()
    for c in cols:
        out.update(str(v) for v in products[c].dropna() if str(v).strip())
    if "title" in products.columns:
        for title in products["title"].dropna().astype(str):
            if "." in title or "@" in title or ":" in title:
                out.update(m.group(0) for m in _URL.finditer(title))
    return out


def without_markup(text: str) -> str:
    """A shopper's message as the parser should read it: links become their text, addresses and tags go
    (they are not what anyone searches the catalog for)."""
    text = _IMAGE.sub(lambda m: m.group(1), text)
    text = _LINK.sub(lambda m: m.group(1), text)
    text = _ANGLE_LINK.sub(" ", text)
    text = _URL.sub(" ", text)
    return re.sub(r"<[^>]{0,200}>", " ", text)
