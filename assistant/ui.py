"""The Gradio chat. Thin: every handler is a plain function over (inputs, SessionState).

No ``from __future__ import annotations`` here: gr.api reads the real type hints of the API functions.
"""

import html
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from assistant.chat import MAX_MESSAGE_CHARS, Assistant
from assistant.gate import TooManyTurns, client_key
from assistant.insights import Insights, freshness_markdown
from assistant.safety import screen
from assistant.session import SessionState
from assistant.writers import ReplyContext
from index_builder.core.bundle_reader import Bundle
from index_builder.core.errors import AssistantError
from index_builder.core.figures import EVENT_HEADINGS
from index_builder.core.text import money as format_money
from index_builder.core.text import readable_title

log = logging.getLogger(__name__)

N_CARDS = 10  # a known customer's list: up to 5 due reorders, then 5 new products
STREAM_EVERY_S = 0.05  # a reply's text is sent to the page at most this often (each send carries the whole chat)
PICKER_START = 100  # best sellers listed before the shopper types
PICKER_MATCHES = 50  # matches listed for what they typed
LIVE_EVERY_S = 3.0  # the Insights tab's live panel is read again this often (it follows hot reloads)
CSS = """
.cw-cards {display:flex; flex-wrap:wrap; gap:10px;}
.cw-card {border:1px solid var(--border-color-primary); border-radius:10px; padding:10px 12px; width:190px;
          background:var(--block-background-fill);}
.cw-card .cw-title {font-weight:600; font-size:0.92em; min-height:2.6em;}
.cw-card .cw-price {font-size:1.1em; margin-top:4px;}
.cw-card .cw-id {color:var(--body-text-color-subdued); font-size:0.8em;}
.cw-card.cw-reorder {border-color:#2e7d32;}
.cw-card .cw-due {color:#2e7d32; font-size:0.8em; margin-top:2px;}
.cw-group {width:100%; font-weight:600; margin:6px 0 0;}
"""


def cards_html(products: list[dict[str, Any]], currency: str | None) -> str:
    """Product cards from the structured candidates (never from the model's text)."""
    if not products:
        return ""
    cards = []
    grouped = any(p.get("kind") == "reorder" for p in products) and any(p.get("kind") != "reorder" for p in products)
    for i, p in enumerate(products):
        reorder = p.get("kind") == "reorder"
        if grouped and (i == 0 or reorder != (products[i - 1].get("kind") == "reorder")):
            cards.append(f'<div class="cw-group">{"Buy again" if reorder else "New for you"}</div>')
        due = _due_line(p["reasons"][0]) if reorder and p.get("reasons") else ""
        cards.append(
            f'<div class="cw-card{" cw-reorder" if reorder else ""}" data-testid="product-card" '
            f'data-kind="{"reorder" if reorder else "new"}" data-product-id="{html.escape(p["product_id"])}">'
            f'<div class="cw-title" title="{html.escape(p["title"])}">{p["number"]}. '
            f'{html.escape(readable_title(p["title"]))}</div>'
            f'<div class="cw-price">{html.escape(format_money(p["price"], currency))}</div>'
            + (f'<div class="cw-due">{html.escape(due)}</div>' if due else "")
            + f'<div class="cw-id">id {html.escape(p["product_id"])}</div></div>'
        )
    return '<div class="cw-cards">' + "".join(cards) + "</div>"


def _due_line(reason: dict[str, Any]) -> str:
    """A reorder card's line: "ordered 6x, about every 30 days; last 41 days ago"."""
    if "orders" not in reason:
        return "bought before"
    every = f", about every {reason['every_days']} days" if reason.get("every_days") else ""
    return f"ordered {reason['orders']}x{every}; last {reason['last_days']} days ago"


def writer_markdown(ctx: ReplyContext) -> str:
    """The line under the chat: who wrote the last reply, and why the template did when the LLM did not."""
    meta = ctx.meta
    who = meta.get("writer", "template")
    line = f"Reply written by **{html.escape(who)}**" if who != "template" else "Reply written by the **template**"
    extra = []
    if meta.get("fallback"):
        extra.append("the LLM could not answer, so the template did")
    if meta.get("notice"):
        extra.append(html.escape(meta["notice"]))
    return f"<small>{line}{' · ' + ' · '.join(extra) if extra else ''}</small>"


def shown_message(message: str, allowed_urls=()) -> str:
    """The shopper's message as the chat shows it: capped, and screened so it is shown, never run or linked."""
    message = message or ""
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[:MAX_MESSAGE_CHARS] + f" … ({len(message) - MAX_MESSAGE_CHARS:,} more characters not read)"
    return screen(message, allowed_urls)


def client_of(request: Any) -> str | None:
    """Who is calling, for the limits: the logged-in user, else the client's address (None outside a request)."""
    if request is None:
        return None
    client = getattr(request, "client", None)
    return client_key(getattr(request, "username", None), getattr(client, "host", None) if client is not None else None)


def button_updates(products: list, update) -> list:
    """The "I viewed #n" buttons for a list just shown; ``None`` (no new list: a "why?", a greeting) leaves
    them as they are, with the cards they belong to."""
    if not products:
        return [update()] * N_CARDS
    return [update(visible=i < len(products),
                   value=f"I viewed #{i + 1}: {readable_title(products[i].title)[:30]}" if i < len(products) else "")
            for i in range(N_CARDS)]


def profile_markdown(assistant: Assistant, user_id: str | None) -> str:
    if not user_id:
        return "_Shopping anonymously: pick products you viewed below, or just ask._"
    items = assistant.profile(user_id)
    cur = assistant.bundle.currency
    who = html.escape(user_id)
    lines = [f"**Customer {who}** — recent purchases:"] + [
        f"- {html.escape(p['display_title'])} ({format_money(p['price'], cur)})" for p in items
    ]
    return "\n".join(lines) if items else f"**Customer {who}** — no purchases on record."


def _choice(b: Bundle, row: int) -> tuple[str, str]:
    """One picker entry: (title · price · id, id)."""
    return (f"{readable_title(b.titles[row])} · {format_money(b.product(row)['price'], b.currency)} · "
            f"{b.product_ids[row]}", b.product_ids[row])


class _Picker:
    """The "Recently viewed products" picker.

    The picker starts with the best sellers; typing asks the server (ProductSearch), so a catalog of any size
    never travels to the browser. Both follow the bundle served now (a live bundle root is hot-reloaded).
    """

    def __init__(self, assistant: Assistant) -> None:
        self._assistant = assistant
        self._views: dict[str, SimpleNamespace] = {}

    def view(self) -> SimpleNamespace:
        """The bundle served now and its best sellers (a new bundle's search index warms in the background)."""
        cur = self._assistant.bundle
        found = self._views.get(cur.version)
        if found is None:
            threading.Thread(target=cur.search.warm, name="product-search-index", daemon=True).start()
            found = SimpleNamespace(b=cur, best=[int(r) for r in cur.popularity_order[:PICKER_START]])
            self._views.clear()
            self._views[cur.version] = found
        return found

    def dropdown(self, selected: list[str] | None, rows: list[int] | None = None, **update: Any):
        """The picker's choices: what is selected (it must stay listed), then ``rows`` (default: best sellers)."""
        import gradio as gr

        v = self.view()
        keep = [v.b.row_of[p] for p in (selected or []) if p in v.b.row_of]
        return gr.Dropdown(choices=[_choice(v.b, r) for r in dict.fromkeys(keep + (v.best if rows is None else rows))],
                           **update)


@dataclass
class _Shared:
    """What the handlers share. ``bundle`` is the one served when the app was built (the chat's currency, the
    map's catalog); the picker and the ``products`` endpoint follow the bundle served now."""

    assistant: Assistant
    bundle: Bundle
    insights: Insights | None  # None: the bundle has no insights report
    picker: _Picker


def _session(state: SessionState | None, request: Any = None) -> SessionState:
    """The shopper's session: the one in gr.State, else a new one for this client."""
    if isinstance(state, SessionState):
        return state
    return SessionState(client=client_of(request))


def build_demo(assistant: Assistant):
    """The Blocks app (named ``demo`` by app.py): sidebar, chat, product cards, API endpoints."""
    import gradio as gr

    b = assistant.bundle
    picker = _Picker(assistant)
    product_choices = [_choice(b, r) for r in picker.view().best]
    shared = _Shared(assistant=assistant, bundle=b, insights=Insights.load(b), picker=picker)

    with gr.Blocks(title="cartwise — what should I buy next?") as demo:
        # The components, laid out in this order (keyword arguments are evaluated left to right).
        c = SimpleNamespace(state=gr.State(None), **vars(_sidebar(shared, product_choices)), **vars(_chat_tab(b)),
                            **vars(_insights_tab(shared)))
        # The order of the events is the order of the app's functions (and their names): keep it.
        _wire_sidebar(shared, c)
        _wire_insights(shared, c)
        _wire_chat(shared, c)
        _wire_api(shared)
    return demo


# -- layout -------------------------------------------------------------------------------------


def _sidebar(shared: _Shared, product_choices: list[tuple[str, str]]) -> SimpleNamespace:
    """Who is shopping: the customer, their purchases, the products they viewed, and the bundle served."""
    import gradio as gr

    b = shared.bundle
    active = sorted(b.had, key=lambda u: (-len(b.had[u]), u))
    customers = [("Anonymous", "")] + [(f"{u} · {len(b.had[u])} products", u) for u in active]
    with gr.Sidebar(open=True):
        gr.Markdown("### Who is shopping?")
        user_dd = gr.Dropdown(choices=customers, value="", label="Customer", filterable=True,
                              elem_id="customer")
        profile_md = gr.Markdown(profile_markdown(shared.assistant, None))
        viewed_dd = gr.Dropdown(choices=product_choices, value=[], multiselect=True, filterable=True,
                                label="Recently viewed products", elem_id="viewed")
        gr.Markdown(f"<small>Bundle {html.escape(b.version)} · {len(b.titles):,} products · "
                    f"{len(b.user_rows):,} customers</small>")
    return SimpleNamespace(user_dd=user_dd, profile_md=profile_md, viewed_dd=viewed_dd)


def _chat_tab(b: Bundle) -> SimpleNamespace:
    """The chat, the writer line, the message box, the product cards and their "I viewed #n" buttons."""
    import gradio as gr

    with gr.Tab("Chat", id="chat") as chat_tab:
        gr.Markdown("## What should I buy next?")
        chatbot = gr.Chatbot(label="cartwise", height=430, elem_id="chatbot", sanitize_html=True)
        writer_md = gr.Markdown("", elem_id="writer")
        with gr.Row():
            msg = gr.Textbox(placeholder=f'Ask "what should I buy next?", "only candles", '
                                         f'"under {format_money(5, b.currency)}"...',
                             show_label=False, scale=8, elem_id="message")
            send = gr.Button("Send", variant="primary", scale=1, elem_id="send")
        cards = gr.HTML(elem_id="cards")
        with gr.Row():
            card_buttons = [gr.Button(visible=False, size="sm", elem_id=f"card-{i + 1}") for i in range(N_CARDS)]
        gr.Examples(["what should I buy next?", "something cheaper", "only candles", "more like the second one",
                     "why the first one?", "a gift for a tea lover"], inputs=msg)
    return SimpleNamespace(chatbot=chatbot, writer_md=writer_md, msg=msg, send=send, cards=cards,
                           card_buttons=card_buttons, chat_tab=chat_tab)


def live_markdown(assistant: Assistant) -> str:
    """The live panel of the version served now (a :class:`~assistant.live.LiveAssistant` follows hot reloads).
    The page's timer reads it every few seconds: a failure is logged and said in the panel, never raised (a raise
    would pop an error on the page at every tick)."""
    try:
        b = assistant.bundle
        return freshness_markdown(b.manifest, getattr(assistant, "version", None) or b.version,
                                  since=getattr(assistant, "since", None), swaps=getattr(assistant, "swaps", 0),
                                  following=hasattr(assistant, "swaps"))
    except Exception:  # noqa: BLE001
        log.exception("insights: the live panel could not be drawn")
        return "### Live: what this app serves now\n\nThe live status cannot be read now (the app's log says why)."


def _insights_tab(shared: _Shared) -> SimpleNamespace:
    """The live panel, then the bundle's report: summary, product map, the picked customer's neighbourhood in the
    recommendation network, clusters, metrics, graph plots; ``map_plot`` and ``network_plot`` None without one."""
    import gradio as gr

    insights = shared.insights
    map_plot = marked_md = network_plot = None
    with gr.Tab("Insights", id="insights", elem_id="insights-tab") as insights_tab:
        live_md = gr.Markdown(live_markdown(shared.assistant), elem_id="insights-live")
        live_timer = gr.Timer(LIVE_EVERY_S, active=False)  # ticks only while the tab is open (see _wire_insights)
        if insights is None:
            gr.Markdown("This bundle has no insights report: rebuild it with `python -m index_builder build` "
                        "to get the cluster map, the metrics and the recommendation graph here.")
        else:
            gr.Markdown(insights.summary(), elem_id="insights-summary")
            map_plot = gr.Plot(insights.map_figure(), label="Product map", elem_id="insights-map")
            marked_md = gr.Markdown("", elem_id="insights-marked")
            network = insights.network_figure()
            if network is not None:
                network_plot = gr.Plot(network, label="Recommendation network", elem_id="insights-network")
            km = insights.kmeans_figure()
            if km is not None:
                gr.Plot(km, label="Clusters: how k was chosen", elem_id="insights-kmeans")
            table = insights.metrics_table()
            if not table.empty:
                gr.Markdown("### How good the recommendations are: new products (held-out weeks; hybrid is what the chat serves)")
                gr.Dataframe(table, interactive=False, elem_id="insights-metrics")
            all_items = insights.metrics_table("all")
            if not all_items.empty:
                gr.Markdown("### Restocks and new products: everything bought next (hybrid is the chat's list: due "
                            "reorders, then new products)")
                gr.Dataframe(all_items, interactive=False, elem_id="insights-all-items")
            for fig, elem in ((insights.top_figure(), "insights-top"), (insights.degree_figure(), "insights-degree")):
                if fig is not None:
                    gr.Plot(fig, label=fig.layout.title.text.split(":")[0], elem_id=elem)
            event_figures = insights.event_figures()
            for key, note in insights.event_notes().items():  # what the events say, as on the report page
                gr.Markdown(f"### {EVENT_HEADINGS[key]}\n\n{html.escape(note, quote=False)}", elem_id=f"insights-{key}-note")
                if key in event_figures:
                    gr.Plot(event_figures[key], label=EVENT_HEADINGS[key], elem_id=f"insights-{key}")
            if insights.html_path is not None:
                gr.DownloadButton("Download the full report (report.html, works offline)",
                                  value=str(insights.html_path), elem_id="insights-download")
    return SimpleNamespace(map_plot=map_plot, marked_md=marked_md, network_plot=network_plot, live_md=live_md,
                           live_timer=live_timer, insights_tab=insights_tab)


# -- events -------------------------------------------------------------------------------------


def _wire_sidebar(shared: _Shared, c: SimpleNamespace) -> None:
    """A change of customer, the products viewed, and the picker's search as the shopper types."""
    import gradio as gr

    assistant, picker = shared.assistant, shared.picker

    def on_user(user_id: str, state: SessionState | None, request: gr.Request):
        """Another customer: a fresh conversation (the chat, the cards, the views and the state are cleared,
        and the next reply says so); the same one: nothing changes."""
        state = _session(state, request)
        try:
            state, switched = assistant.switch_customer(state, user_id)
        except AssistantError as exc:
            gr.Warning(html.escape(str(exc), quote=False))
            state, switched = assistant.switch_customer(state, None)
        keep = gr.update()
        if not switched:
            return state, profile_markdown(assistant, state.user_id), keep, keep, keep, *[keep] * N_CARDS
        return (state, profile_markdown(assistant, state.user_id), [], picker.dropdown([], value=[]), "",
                *[gr.update(visible=False)] * N_CARDS)

    def on_viewed(product_ids: list[str] | None, state: SessionState | None, request: gr.Request):
        state = _session(state, request)
        assistant.set_viewed(state, product_ids)
        return state

    def on_type(selected: list[str] | None, key: gr.KeyUpData):
        typed = (key.input_value or "").strip()
        return picker.dropdown(selected, picker.view().b.search.search(typed, PICKER_MATCHES) if typed else None)

    c.user_dd.change(on_user, [c.user_dd, c.state],
                     [c.state, c.profile_md, c.chatbot, c.viewed_dd, c.cards, *c.card_buttons],
                     api_visibility="private")
    c.viewed_dd.change(on_viewed, [c.viewed_dd, c.state], [c.state], api_visibility="private")
    # Every keystroke's search runs, one at a time and in order: with trigger_mode="always_last" Gradio
    # sometimes dropped the last keystroke when typing outran the server (gradio issue 7752), leaving the
    # list of an earlier prefix. A search takes about a millisecond, so the queue drains at once.
    c.viewed_dd.key_up(on_type, [c.viewed_dd], [c.viewed_dd], api_visibility="private", show_progress="hidden",
                       trigger_mode="multiple", concurrency_limit=1, concurrency_id="product-picker")


def _wire_insights(shared: _Shared, c: SimpleNamespace) -> None:
    """The map follows the customer and the products they viewed, the network the customer (when the bundle has
    a report); the live panel follows the version served."""
    import gradio as gr

    insights, b = shared.insights, shared.bundle

    def on_map(user_id: str, product_ids: list[str] | None):
        """The map with this shopper's products marked, and a line saying what is marked."""
        marks = insights.marks(user_id or None, [p for p in (product_ids or []) if p in b.row_of])
        said = " · ".join(f"**{len(pts)}** {html.escape(name)}" for name, pts in marks.items())
        note = f"Marked on the map: {said}" if said else ("_Nothing of this customer's is on the map._" if user_id else "")
        return insights.map_figure(user_id or None, product_ids or []), note

    def on_network(user_id: str):
        """The picked customer's neighbourhood (the overview when none is picked)."""
        return insights.network_figure(user_id or None)

    if c.map_plot is not None:
        for trigger in (c.user_dd, c.viewed_dd):
            trigger.change(on_map, [c.user_dd, c.viewed_dd], [c.map_plot, c.marked_md], api_visibility="private")
    if c.network_plot is not None:
        c.user_dd.change(on_network, [c.user_dd], [c.network_plot], api_visibility="private")
    # the live panel follows hot reloads: it is read again every few seconds (a dictionary lookup and a format),
    # only while the Insights tab is open: a page left on the chat sends no ticks
    c.live_timer.tick(lambda: live_markdown(shared.assistant), None, [c.live_md], api_visibility="private",
                      show_progress="hidden")
    c.insights_tab.select(lambda: (gr.Timer(active=True), live_markdown(shared.assistant)), None,
                          [c.live_timer, c.live_md], api_visibility="private", show_progress="hidden")
    c.chat_tab.select(lambda: gr.Timer(active=False), None, [c.live_timer], api_visibility="private",
                      show_progress="hidden")


def _wire_chat(shared: _Shared, c: SimpleNamespace) -> None:
    """A message (Enter or Send) streams a reply; an "I viewed #n" button marks that product as viewed."""
    import gradio as gr

    assistant, b, picker = shared.assistant, shared.bundle, shared.picker

    def respond(message: str, history: list | None, state: SessionState | None, request: gr.Request):
        """Stream one reply: yields (chat history, state, cards, card buttons..., cleared textbox, writer line)."""
        state = _session(state, request)
        history = list(history or [])
        history.append({"role": "user", "content": shown_message(message, assistant.allowed_urls)})
        history.append({"role": "assistant", "content": ""})
        try:
            assistant.admit(state.session_id, state.client)  # the same turn limits as the API
        except TooManyTurns as exc:
            history[-1] = {"role": "assistant", "content": html.escape(f"{str(exc)[0].upper()}{str(exc)[1:]}.")}
            yield (history, state, *[gr.update()] * (1 + N_CARDS), gr.update(), gr.update())
            return
        with state.lock:
            turn = assistant.turn(message, state)
            buttons = button_updates(turn.products, gr.update)
            cards = cards_html(turn.context.products, b.currency) if turn.products else gr.update()
            first, sent = True, 0.0
            keep = [gr.update()] * (1 + N_CARDS)
            for text in assistant.shown(turn):
                if state.retired:  # another customer was picked while this streamed: not a word more of it
                    return
                history[-1] = {"role": "assistant", "content": text}
                if not first and time.monotonic() - sent < STREAM_EVERY_S:
                    continue  # the page is sent the text so far at most every STREAM_EVERY_S, not every word
                # The cards and buttons go once, with the first text; the textbox is cleared once, so the shopper
                # can type the next message while the reply streams.
                yield (history, state, *([cards, *buttons] if first else keep), "" if first else gr.update(), gr.update())
                first, sent = False, time.monotonic()
            if state.retired:
                return
            yield (history, state, *([cards, *buttons] if first else keep), "" if first else gr.update(),
                   writer_markdown(turn.context))

    def on_card(i: int, state: SessionState | None, request: Any = None):
        state = _session(state, request)
        with state.lock:
            shown = list(state.last_shown)
        if i >= len(shown):
            return state, gr.update()
        assistant.mark_viewed(state, shown[i])
        cur = assistant.bundle
        gr.Info(f"Marked {html.escape(readable_title(cur.titles[cur.row_of[shown[i]]]))} as viewed")
        with state.lock:
            viewed = list(state.viewed)
        return state, picker.dropdown(viewed, value=viewed)

    outputs = [c.chatbot, c.state, c.cards, *c.card_buttons, c.msg, c.writer_md]
    c.msg.submit(respond, [c.msg, c.chatbot, c.state], outputs, api_visibility="private", trigger_mode="multiple")
    c.send.click(respond, [c.msg, c.chatbot, c.state], outputs, api_visibility="private", trigger_mode="multiple")
    for i, button in enumerate(c.card_buttons):
        button.click(lambda s, i=i: on_card(i, s), [c.state], [c.state, c.viewed_dd], api_visibility="private")


def _wire_api(shared: _Shared) -> None:
    """The API endpoints (gradio_client): /recommend, /chat and /products."""
    import gradio as gr

    assistant, picker = shared.assistant, shared.picker

    def recommend(user_id: str, recently_viewed: list[str], message: str, session_id: str = "",
                  request: gr.Request = None) -> dict:
        """Products (id, title, display_title, price, score, reasons), the reply, the writer and the session id.

        Pass the returned session_id back to continue the conversation (filters, shown lists, "why #2");
        leave it empty to start a new one. Another customer's id starts a new session (the reply says so).
        Sessions expire after a while without calls.
        """
        try:
            return assistant.recommend_api(user_id, recently_viewed or [], message, session_id or None,
                                           client=client_of(request))
        except AssistantError as exc:
            raise gr.Error(html.escape(str(exc), quote=False)) from None

    def chat(user_id: str, recently_viewed: list[str], message: str, session_id: str = "",
             request: gr.Request = None) -> Iterator[tuple[str, str]]:
        """The conversational reply, streamed: each item is (the text so far, the session id)."""
        try:
            updates = assistant.api_stream(user_id, recently_viewed, message, session_id or None,
                                           client=client_of(request))
        except AssistantError as exc:
            raise gr.Error(html.escape(str(exc), quote=False)) from None
        sent = None
        for update in updates:  # the text so far (at most every STREAM_EVERY_S), then the whole reply
            if update["text"] != sent:
                sent = update["text"]
                yield sent, update["session_id"]

    def products(query: str, limit: int = 20) -> list[dict]:
        """Products whose titles contain every word of the query (the last word as a prefix), best sellers first."""
        v = picker.view()
        return [v.b.product(r) for r in v.b.search.search(query, max(1, min(int(limit), 200)))]

    gr.api(recommend, api_name="recommend", concurrency_limit=4)
    gr.api(chat, api_name="chat", concurrency_limit=4)
    gr.api(products, api_name="products", concurrency_limit=8)
