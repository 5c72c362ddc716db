"""A small real HTTP server speaking the OpenAI chat-completions stream, for faults a real model server
will not produce on demand. The mode is the first path segment: ``http://HOST:PORT/<mode>/v1``.

Modes: ok (streams ``REPLY``), 401, 429 (Retry-After: 30), 500, malformed (a broken SSE event),
cutoff (two chunks, then the connection closes), hang (no bytes for 30 s), invented (names only
products that are not candidates), script (streams ``reply`` with ``{t1}``/``{p1}``/``{price1}``,
``{t2}``... filled from the CANDIDATES of the prompt it got, and ``{other}`` with the first of ``others``
that is not a candidate: what a model misbehaving on the real prompt would write).
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REPLY = "Here are my picks:\n1. **{title}** [{pid}] {price}: a lovely choice.\n"
INVENTED = "Buy the **Golden Unicorn Lamp** [X-999] today!\nAlso the **Space Laser Pen**.\n"


class FaultServer:
    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.reply = REPLY
        self.others: list[str] = []  # catalog titles a "script" reply may name that are not candidates
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
                server.requests.append({"path": self.path, "body": body, "auth": self.headers.get("authorization"),
                                        "at": time.time()})
                mode = self.path.strip("/").split("/")[0]
                if self.path.endswith("/embeddings"):
                    self._embeddings(mode, body)
                    return
                if mode in ("401", "429", "500"):
                    payload = json.dumps({"error": {"message": f"fault {mode}", "type": "test"}}).encode()
                    self.send_response(int(mode))
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(payload)))
                    if mode == "429":
                        self.send_header("retry-after", "30")
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                if mode == "hang":
                    time.sleep(30)
                    return
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("connection", "close")
                self.end_headers()
                text = INVENTED if mode == "invented" else server.reply
                if mode == "script":
                    text = server.fill(text, body)
                pieces = [text[i:i + 7] for i in range(0, len(text), 7)]
                if mode == "cutoff":
                    pieces = pieces[:2]
                for i, piece in enumerate(pieces):
                    if mode == "malformed" and i == 2:
                        self.wfile.write(b"data: {not json at all\n\n")
                        self.wfile.flush()
                        break
                    self._event({"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
                if mode in ("cutoff", "malformed"):
                    self.close_connection = True
                    return
                self._event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
                self._event({"choices": [], "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}})
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()

            def _embeddings(self, mode: str, body: dict) -> None:
                """flaky: 429 (Retry-After 0.2), then 500, then vectors; ok: vectors at once."""
                n = sum(1 for r in server.requests if r["path"].endswith("/embeddings"))
                status = {1: 429, 2: 500}.get(n, 200) if mode == "flaky" else 200
                if status == 200:
                    inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
                    data = [{"object": "embedding", "index": i, "embedding": [float(len(t)), 1.0, float(i)]}
                            for i, t in enumerate(inputs)]
                    payload = json.dumps({"object": "list", "data": data, "model": body.get("model"),
                                          "usage": {"prompt_tokens": 1, "total_tokens": 1}}).encode()
                else:
                    payload = json.dumps({"error": {"message": f"fault {status}"}}).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                if status == 429:
                    self.send_header("retry-after", "0.2")
                self.end_headers()
                self.wfile.write(payload)

            def _event(self, obj: dict) -> None:
                base = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "fault"}
                self.wfile.write(b"data: " + json.dumps({**base, **obj}).encode() + b"\n\n")
                self.wfile.flush()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def fill(self, text: str, body: dict) -> str:
        prompt = body["messages"][-1]["content"]
        found = re.findall(r"^\d+\. \*\*(.+?)\*\* \[(.+?)\] (.+)$", prompt, re.MULTILINE)
        values: dict[str, str] = {}
        for i, (title, pid, price) in enumerate(found, start=1):
            values.update({f"t{i}": title, f"p{i}": pid, f"price{i}": price})
        titles = {t.lower() for t, _, _ in found}
        values["other"] = next((o for o in self.others if o.lower() not in titles), "Golden Unicorn Lamp")
        return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), m.group(0)), text)

    def url(self, mode: str) -> str:
        return f"http://127.0.0.1:{self.port}/{mode}/v1"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
