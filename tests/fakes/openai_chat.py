"""A local OpenAI-compatible chat-completions server (the optional LLM dialog backend's vendor), on 127.0.0.1."""

from __future__ import annotations

import http.server
import json
import threading
import time


class FakeChat:
    """An OpenAI-compatible /v1/chat/completions server on 127.0.0.1 that streams server-sent events."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.mode = "ok"
        self.answer = ["On Saturday ", "we open at eight ", "in the morning."]
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                if fake.mode == "error":
                    self.send_response(500)
                    self.end_headers()
                    return
                if fake.mode == "slow":
                    time.sleep(2.0)
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                for piece in ["NO_", "ANSWER"] if fake.mode == "refuse" else fake.pieces(body):
                    chunk = {"choices": [{"index": 0, "delta": {"content": piece}}]}
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()
                self.wfile.write(b"data: [DONE]\n\n")

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def pieces(self, body: dict) -> list[str]:
        """What to stream: the canned answer, or in "echo" mode the first line of the first passage sent."""
        if self.mode != "echo":
            return self.answer
        prompt = body["messages"][0]["content"]
        passages = prompt.split("Passages:\n", 1)[-1].split("\n")
        return [passages[1] if len(passages) > 1 else "NO_ANSWER"]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
