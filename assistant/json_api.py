"""The plain JSON API, mounted on the Gradio server (app.py passes :func:`json_routes` to Gradio's FastAPI app):
``POST /api/v1/recommend``, ``POST /api/v1/chat`` (the reply streamed as NDJSON) and ``GET
/api/v1/openapi.json``.

Thin, like the page: every turn is :meth:`assistant.chat.Assistant.api_stream`, the function behind Gradio's
``/recommend`` and ``/chat``, so both APIs share one set of rules (bounds, sessions and their owner, the turn
and LLM limits, the output boundary). This module only maps them onto HTTP: the login (HTTP Basic, the app's
``--auth``), the caller's key for the limits (:func:`~assistant.gate.client_key`), the request and response
models (bounded by :mod:`assistant.gate`'s constants, 422 past them), and refusals as status codes (401, 422,
429 with Retry-After).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field

from assistant.gate import MAX_ID, MAX_MESSAGE, MAX_VIEWED, BadInput, TooManyTurns, client_key
from index_builder.core.errors import AssistantError, UnknownProduct, UnknownUser

log = logging.getLogger(__name__)

PREFIX = "/api/v1"
NDJSON = "application/x-ndjson"
MAX_BODY = 64 * 1024  # bytes of one request: the bounds of assistant.gate fit in a tenth of it (413 past it)
Auth = Callable[[str, str], bool] | tuple[str, str] | Sequence[tuple[str, str]] | None


# -- the models (what /api/v1/openapi.json describes) ---------------------------------------------------------
class TurnIn(BaseModel):
    """One message of a conversation, with who is shopping and what they viewed (as Gradio's ``/recommend``)."""

    model_config = ConfigDict(extra="forbid")

    message: str = Field(max_length=MAX_MESSAGE, description="what the shopper said; the chat reads the first "
                                                             "500 characters and says so when it cuts")
    user_id: str = Field("", max_length=MAX_ID, description='the customer ("": anonymous, or keep the '
                                                              "session's customer)")
    recently_viewed: list[Annotated[str, Field(max_length=MAX_ID)]] = Field(
        default_factory=list, max_length=MAX_VIEWED, description="product ids viewed, the most recent last")
    session_id: str = Field("", max_length=MAX_ID, description='"" starts a conversation; the id returned '
                                                                 "continues it")


class Product(BaseModel):
    product_id: str
    title: str = Field(description="as in the catalog")
    display_title: str = Field(description="in a readable case")
    price: float | None
    score: float
    kind: Literal["new", "reorder"] = Field(description="reorder: a past product due again; new: never had")
    reasons: list[dict[str, Any]] = Field(description="why, the strongest first (kind: similar, als, item, "
                                                      "popular, reorder, ...)")


class TurnOut(BaseModel):
    session_id: str = Field(description="pass it back to continue this conversation")
    reply: str = Field(description="Markdown, screened at the output boundary (no HTML, no links but the catalog's)")
    products: list[Product] = Field(description="the products shown, in order (empty for a greeting or a why?)")
    writer: str = Field(description='"template", or the LLM that wrote the reply')


class TextLine(BaseModel):
    """One line of the /chat stream: the reply so far (screened whole, so use the latest, not a difference)."""

    type: Literal["text"] = "text"
    session_id: str
    text: str


class DoneLine(TurnOut):
    """The last line of the /chat stream: the whole reply and the products."""

    type: Literal["done"] = "done"


class ErrorLine(BaseModel):
    """A line of the /chat stream when the turn failed after it began."""

    type: Literal["error"] = "error"
    message: str


class Refusal(BaseModel):
    error: Literal["unauthorized", "rate_limited", "bad_request"]
    message: str
    retry_after_s: int | None = None


class RefusalOut(BaseModel):
    detail: Refusal


# -- login and the caller -------------------------------------------------------------------------------------
def login_ok(auth: Auth, user: str, password: str) -> bool:
    """The app's login (the ``auth`` Gradio's ``launch`` gets: a (user, password) pair, a list of them, or a
    function), checked in constant time."""
    if auth is None:
        return True
    if callable(auth):
        return bool(auth(user, password))
    pairs = [auth] if isinstance(auth, tuple) else list(auth)
    ok = False
    for u, p in pairs:
        ok |= secrets.compare_digest(user.encode(), str(u).encode()) & secrets.compare_digest(password.encode(),
                                                                                          str(p).encode())
    return ok


def _refuse(status: int, error: str, message: str, headers: dict[str, str] | None = None,
            retry_after_s: int | None = None) -> HTTPException:
    body = {"error": error, "message": message}
    if retry_after_s is not None:
        body["retry_after_s"] = retry_after_s
    return HTTPException(status, detail=body, headers=headers)


def caller(request: Request, auth: Auth) -> str | None:
    """The caller's key for the limits (the logged-in user, else the address), or 401 without a good login."""
    user = None
    if auth is not None:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        try:
            user, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            sep = ""
        if scheme.lower() != "basic" or not sep or not login_ok(auth, user, password):
            raise _refuse(401, "unauthorized", "log in with HTTP Basic: the app's --auth USER:PASS",
                          {"WWW-Authenticate": 'Basic realm="cartwise"'})
    return client_key(user, request.client.host if request.client else None)


def _refused(exc: AssistantError) -> HTTPException:
    """A refusal of the shared rules as an HTTP status."""
    if isinstance(exc, TooManyTurns):
        wait = int(exc.retry_after_s)
        return _refuse(429, "rate_limited", str(exc), {"Retry-After": str(wait)}, wait)
    field = (exc.field if isinstance(exc, BadInput) else "user_id" if isinstance(exc, UnknownUser)
             else "recently_viewed" if isinstance(exc, UnknownProduct) else None)
    if field:  # shaped as FastAPI's own 422 (the models bound the same fields)
        return HTTPException(422, detail=[{"loc": ["body", field], "msg": str(exc), "type": "value_error"}])
    return _refuse(400, "bad_request", str(exc))


class BoundedRoute(APIRoute):
    """A route whose 422 names the fields and what is wrong with them, but never echoes the input: a caller's
    text is not sent back (and a lone surrogate in it could not be encoded: it was a 500)."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def bounded(request: Request):
            try:
                return await handler(request)
            except RequestValidationError as exc:
                errors = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in exc.errors()]
                return JSONResponse({"detail": errors}, status_code=422)

        return bounded


# -- the routes -----------------------------------------------------------------------------------------------
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": RefusalOut, "description": "no login, or a wrong one (the app runs with --auth)"},
    429: {"model": RefusalOut, "description": "over a turn limit (per session or per client); see Retry-After"},
}


def json_routes(assistant: Any, auth: Auth = None) -> list:
    """The JSON API's routes over ``assistant`` (an Assistant, or a LiveAssistant that follows a bundle root),
    guarded by ``auth``, for ``launch(app_kwargs={"routes": ...})``."""
    def login(request: Request) -> str | None:  # a dependency: runs before the body is validated
        request.state.client = caller(request, auth)
        return request.state.client

    router = APIRouter(prefix=PREFIX, tags=["cartwise"], dependencies=[Depends(login)], route_class=BoundedRoute,
                       max_body_size=MAX_BODY)

    def start(body: TurnIn, request: Request) -> Iterator[dict[str, Any]]:
        client = request.state.client
        try:
            return assistant.api_stream(body.user_id, body.recently_viewed, body.message, body.session_id or None,
                                        client=client)
        except AssistantError as exc:
            raise _refused(exc) from None

    @router.post("/recommend", response_model=TurnOut, responses=ERRORS,
                 summary="One turn: the reply and the products")
    def recommend(body: TurnIn, request: Request) -> dict[str, Any]:
        """One message in, the whole reply and the products out (Gradio's ``/recommend``). Pass ``session_id``
        back to continue the conversation; another customer's ``user_id`` with it starts a new session."""
        *_, done = start(body, request)
        return _turn_out(done)

    @router.post("/chat", responses={**ERRORS, 200: {"content": {NDJSON: {"schema": {"oneOf": [
        {"$ref": "#/components/schemas/TextLine"}, {"$ref": "#/components/schemas/DoneLine"},
        {"$ref": "#/components/schemas/ErrorLine"}]}}}, "description": "one JSON object a line: text lines "
                 "(the reply so far), then a done line with the products"}},
                 summary="One turn, the reply streamed as NDJSON", response_class=StreamingResponse)
    def chat(body: TurnIn, request: Request) -> StreamingResponse:
        """The same turn as ``/recommend``, streamed: ``{"type": "text", "text": <the reply so far>}`` lines, then
        ``{"type": "done", ...}`` with what ``/recommend`` returns. Refusals come before the stream, as statuses."""
        return StreamingResponse(_lines(start(body, request)), media_type=NDJSON)

    routes = list(router.routes)
    schema: dict[str, Any] = {}

    def openapi() -> JSONResponse:
        if not schema:
            extra = {m.__name__: m.model_json_schema(ref_template="#/components/schemas/{model}")
                     for m in (TextLine, DoneLine, ErrorLine)}
            schema.update(get_openapi(title="cartwise JSON API", version="1", routes=routes,
                                      description=(__doc__ or "").split("\n\n")[0]))
            for name, model in extra.items():
                schema["components"]["schemas"].update(model.pop("$defs", {}))
                schema["components"]["schemas"][name] = model
            if auth is not None:
                schema["components"]["securitySchemes"] = {"basic": {"type": "http", "scheme": "basic"}}
                schema["security"] = [{"basic": []}]
        return JSONResponse(schema)

    router.add_api_route("/openapi.json", openapi, methods=["GET"], include_in_schema=False)
    return list(router.routes)


def _plain(value: Any) -> Any:
    """``value`` with numpy scalars as Python numbers (a reason's figures may be numpy's; JSON knows neither)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value.item() if type(value).__module__ == "numpy" else value


def _turn_out(done: dict[str, Any]) -> dict[str, Any]:
    """The fields of a turn's last update that /recommend returns and /chat's done line carries."""
    return {k: _plain(done[k]) for k in TurnOut.model_fields}


def _line(model: BaseModel) -> bytes:
    return (model.model_dump_json() + "\n").encode()


async def _lines(updates: Iterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    """The turn's updates as NDJSON (text lines, each the whole reply so far, then the done line), each read in a
    worker thread. A client that goes away closes the turn."""
    it = iter(updates)
    try:
        while True:
            try:
                update = await run_in_threadpool(next, it, None)
            except Exception as exc:  # the turn failed after it began: say so on the stream, keep the server
                log.exception("JSON API /chat: the turn failed")
                yield _line(ErrorLine(message=f"the reply failed ({type(exc).__name__}); try again"))
                return
            if update is None:
                return
            if update.get("done"):
                yield _line(DoneLine(**_turn_out(update)))
            else:
                yield _line(TextLine(session_id=update["session_id"], text=update["text"]))
    finally:
        with contextlib.suppress(ValueError):  # still running in a worker thread: it closes when collected
            it.close()

