"""Entry point: make sure an index bundle exists (building it on first run), then serve the chat.

    python app.py                       # build artifacts/ from online-retail if needed, then serve
    python app.py --bundle artifacts/   # use an existing bundle
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# The limits are kept per client address: trust no X-Forwarded-For unless the operator names the proxy
# (uvicorn trusts the header from 127.0.0.1 by default, so any local sidecar or tunnel could mint addresses).
os.environ.setdefault("FORWARDED_ALLOW_IPS", "")

from assistant.gate import CLIENT_ENV, CLIENT_PER_MINUTE, SESSION_ENV, SESSION_PER_MINUTE  # noqa: E402 - after the offline switches
from assistant.session import PER_CLIENT_ENV, SESSIONS_PER_CLIENT  # noqa: E402
from index_builder.core.settings import DEFAULT_ENV_FILE, number, read_env  # noqa: E402

log = logging.getLogger("app")
UI_SESSIONS = 2_000  # Gradio sessions kept in memory ($CARTWISE_UI_SESSIONS)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="cartwise: conversational product recommender")
    p.add_argument("--bundle", help="an existing bundle (root or version folder); nothing is built")
    p.add_argument("--out", default="artifacts", help="bundle root to use or build into (default artifacts/)")
    p.add_argument("--dataset", default="online-retail", help="dataset to build from on first run")
    p.add_argument("--data-dir", help="where datasets are looked for before the download cache")
    p.add_argument("--sample-users", type=int, help="build from a sample of N users (faster first run)")
    p.add_argument("--rebuild", action="store_true", help="build a new bundle version even if one exists")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--share", action="store_true", help="ask Gradio for a public link (use --auth with it)")
    p.add_argument("--auth", help="USER:PASS login in front of the page and the API (default: $CARTWISE_AUTH)")
    p.add_argument("--reload-interval", type=float, default=2.0,
                   help="seconds between checks of the bundle root's `current` for a new version, swapped in "
                        "without a restart (0: never; a version folder given to --bundle is never reloaded)")
    p.add_argument("--db", metavar="URL",
                   help="keep the shoppers' views and clicks in this database (SQLAlchemy URL, e.g. "
                        "mysql+pymysql://root@127.0.0.1:3306/test; default: $CARTWISE_DB, else BUNDLE_ROOT/events.sqlite)")
    p.add_argument("--env-file", default=DEFAULT_ENV_FILE,
                   help="file with settings the environment lacks: OPENAI_API_KEY / OPENAI_BASE_URL / OPENAI_MODEL and "
                        "the CARTWISE_* variables (README; the environment wins)")
    args = p.parse_args(argv)
    env = read_env(env_file=args.env_file)
    # a flag wins even when empty: --auth '' turns a login set in the environment or .env off
    args.auth = args.auth if args.auth is not None else env.get("CARTWISE_AUTH")
    args.db = args.db if args.db is not None else env.get("CARTWISE_DB")
    args.ui_sessions = number(env, "CARTWISE_UI_SESSIONS", UI_SESSIONS)
    args.sessions_per_client = number(env, PER_CLIENT_ENV, SESSIONS_PER_CLIENT)
    args.turns_per_session = number(env, SESSION_ENV, SESSION_PER_MINUTE)
    args.turns_per_client = number(env, CLIENT_ENV, CLIENT_PER_MINUTE)
    return args


def parse_auth(value: str | None) -> tuple[str, str] | None:
    """``USER:PASS`` -> (user, password); the password may contain ':'."""
    if not value:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise SystemExit("error: --auth (or CARTWISE_AUTH) must look like USER:PASS")
    return user, password


def ensure_bundle(args: argparse.Namespace):
    """Return (folder, manifest) of a verified bundle, building one first when needed."""
    from index_builder.core.bundle import resolve, verify
    from index_builder.core.errors import BundleError

    if args.bundle:
        return verify(args.bundle)
    if not args.rebuild:
        try:
            resolve(args.out)
        except BundleError:  # nothing there yet: the first run builds one
            log.info("no bundle in %s yet: building one from %s (first run takes a few minutes)", args.out, args.dataset)
        else:  # a bundle that fails its checks is the user's to fix: never replaced behind their back
            try:
                return verify(args.out)
            except BundleError as exc:
                raise BundleError(f"{exc}. To build a new bundle there from --dataset {args.dataset}: python app.py "
                                  f"--out {args.out} --rebuild (or python -m index_builder build ... --out {args.out})"
                                  ) from None
    from index_builder.pipeline import BuildConfig, build

    build(BuildConfig(out=args.out, dataset=args.dataset, data_dir=args.data_dir, sample_users=args.sample_users))
    return verify(args.out)


def build_assistant(folder, env_file: str | None = ".env", *, store=None, sessions=None, db: str | None = None,
                    limits=None, turn_limits=None):
    """The assistant over a verified bundle, with the SQLite event store next to the bundle and the LLM
    writer when OPENAI_API_KEY or OPENAI_BASE_URL is set (environment or ``env_file``). ``store``,
    ``sessions``, ``limits`` and ``turn_limits`` are the app's own: a hot reload passes the first assistant's
    on, so the shoppers' sessions, the day's LLM usage and the last minute's turns outlive every bundle version."""
    from assistant.chat import Assistant
    from assistant.events import open_store
    from assistant.llm import Limits, LLMSettings, make_writer
    from assistant.recommender import Request
    from index_builder.core.bundle_reader import load_bundle
    from index_builder.core.embedders.query import query_encoder

    store = store or open_store(db, folder.parent / "events.sqlite")
    bundle = load_bundle(folder)
    settings = LLMSettings.from_env(env_file=env_file)
    writer = make_writer(bundle, settings, limits=limits or Limits(settings))
    print(f"replies: {'LLM ' + settings.model + ' at ' + settings.host if settings.enabled else 'template writer (no OPENAI_API_KEY or OPENAI_BASE_URL)'}")
    assistant = Assistant(bundle, encode=query_encoder(bundle, env_file), store=store, writer=writer, sessions=sessions,
                          turn_limits=turn_limits)
    assistant.recommender.encode(["warm-up"])  # load the query model now, not on the first message
    bundle.search.warm()  # the title index of the picker and the keyword filters (2-3 s at a million products)
    assistant.recommender.recommend(Request(n=3))  # a bundle that cannot answer is refused before it serves
    return assistant


def serve_assistant(folder, root, env_file: str | None, reload_interval: float, db: str | None = None,
                    sessions_per_client: int = SESSIONS_PER_CLIENT, turns_per_session: int = SESSION_PER_MINUTE,
                    turns_per_client: int = CLIENT_PER_MINUTE):
    """The assistant for ``folder``; when it is ``root``'s current version and reloading is on, a
    :class:`~assistant.live.LiveAssistant` that swaps in each new version published under ``root``."""
    from pathlib import Path

    from assistant.gate import TurnLimits
    from assistant.session import SessionStore
    from index_builder.core import bundle as fmt

    first = build_assistant(folder, env_file, db=db, sessions=SessionStore(per_client=max(1, sessions_per_client)),
                            turn_limits=TurnLimits(turns_per_session, turns_per_client))
    follows = reload_interval > 0 and not (Path(root) / fmt.MANIFEST).is_file()
    if not follows:
        return first
    from assistant.live import LiveAssistant

    def make(f):
        if f == folder:
            return first
        return build_assistant(f, env_file, store=first.store, sessions=first.sessions,
                               limits=getattr(first.writer, "limits", None), turn_limits=first.turn_limits)

    live = LiveAssistant(root, make, interval_s=reload_interval)
    print(f"following {root}/current: a new version is swapped in within {reload_interval:g}s of being published")
    return live


def launch(demo, *, host: str, port: int, share: bool, auth: tuple[str, str] | None = None,
           capacity: int = UI_SESSIONS, routes: list | None = None) -> None:
    """Serve the app; without internet a share link cannot be made, so say so and keep serving locally.
    ``routes`` (the JSON API's) are served by the same server, before Gradio's own."""
    from assistant.ui import CSS

    app_kwargs = {"routes": list(routes or [])}

    if share and not auth:
        print("warning: --share without --auth lets anyone with the link use the app (and the LLM budget)")
    # Gradio keeps a copy of the page's config for every session it has seen, and every API call is a session
    # of its own: ~0.2 MB each on UCI. The cap bounds that memory (the least recently used go first).
    try:
        demo.queue(default_concurrency_limit=8).launch(server_name=host, server_port=port, share=share,
                                                       prevent_thread_lock=share, css=CSS, auth=auth,
                                                       state_session_capacity=capacity, app_kwargs=app_kwargs)
    except Exception as exc:  # gradio raises when the share tunnel cannot be reached
        if not share:
            raise
        print(f"Could not create a public share link ({exc}); serving locally at http://{host}:{port}")
        demo.launch(server_name=host, server_port=port, share=False, css=CSS, auth=auth, state_session_capacity=capacity,
                    app_kwargs={"routes": list(routes or [])})
        return
    if share:
        if getattr(demo, "share_url", None):
            print(f"Public link: {demo.share_url}")
        else:
            print(f"No public share link could be made (no internet?); serving locally at http://{host}:{port}")
        demo.block_thread()


def main(argv: list[str] | None = None) -> int:
    from index_builder.cli import setup_logging
    from index_builder.core.errors import BuilderError

    args = parse_args(argv)
    auth = parse_auth(args.auth)
    setup_logging()
    try:
        folder, manifest = ensure_bundle(args)
        c = manifest["counts"]
        print(f"bundle {folder}: {c['products']:,} products, {c['users']:,} users, "
              f"k={manifest['kmeans']['k']} clusters, ALS {'skipped' if 'skipped' in manifest['als'] else 'trained'}")
        assistant = serve_assistant(folder, args.bundle or args.out, args.env_file, args.reload_interval, args.db,
                                    args.sessions_per_client, args.turns_per_session, args.turns_per_client)
    except BuilderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from assistant.json_api import json_routes
    from assistant.ui import build_demo

    global demo
    demo = build_demo(assistant)
    print(f"chat at http://{args.host}:{args.port}; JSON API at http://{args.host}:{args.port}/api/v1/ "
          f"(schema: /api/v1/openapi.json)")
    launch(demo, host=args.host, port=args.port, share=args.share, auth=auth, capacity=args.ui_sessions,
           routes=json_routes(assistant, auth))
    return 0


demo = None  # the Gradio Blocks, set by main()

if __name__ == "__main__":
    sys.exit(main())
