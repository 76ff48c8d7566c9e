"""A fake OpenAI-compatible server on 127.0.0.1 serving scripted chat.completions replies."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def tool_call_reply(name: str, arguments: str, call_id: str = "call_1") -> dict[str, Any]:
    return {"role": "assistant", "content": None,
            "tool_calls": [{"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}]}


def follow_step(body: dict[str, Any]) -> dict[str, Any]:
    """A model that calls the tool with the arguments of the step's JSON block, as asked."""
    prompt = next(m["content"] for m in body["messages"] if m["role"] == "user")
    step = json.loads(prompt.split("```json\n")[1].split("\n```")[0])
    return tool_call_reply(step["tool"], json.dumps(step["arguments"]), call_id=f"call_{len(prompt)}")


def text_reply(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": text}


class FakeOpenAI:
    """Serves `replies` in order (one per request) and keeps every request body in `requests`.

    A reply is a chat message dict, or a function of the request body that returns one.
    """

    def __init__(self, replies: list[dict[str, Any]]) -> None:
        self.replies, self.requests = list(replies), []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append({"path": self.path, "body": body})
                if not fake.replies:
                    self.send_error(500, "no scripted reply left")
                    return
                message = fake.replies.pop(0)
                if callable(message):
                    message = message(body)
                data = json.dumps({
                    "id": f"chatcmpl-{len(fake.requests)}", "object": "chat.completion", "created": 0,
                    "model": body.get("model", "fake"),
                    "choices": [{"index": 0, "message": message,
                                 "finish_reason": "tool_calls" if message.get("tool_calls") else "stop"}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                }).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeOpenAI:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
