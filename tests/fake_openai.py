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


def http_error(status: int, message: str = "scripted failure") -> dict[str, Any]:
    """A reply that is an HTTP error with OpenAI's error body."""
    return {"_status": status, "_message": message}


def raw_reply(body: str, content_type: str = "text/html") -> dict[str, Any]:
    """A reply that is HTTP 200 with this body as it is (an HTML page, a JSON that is no chat completion, ...)."""
    return {"_raw": body, "_content_type": content_type}


def image_urls(body: dict[str, Any]) -> list[str]:
    """The image URLs of a request's messages (multimodal content parts), in order."""
    return [part["image_url"]["url"] for message in body["messages"] if isinstance(message["content"], list)
            for part in message["content"] if part.get("type") == "image_url"]


def texts(body: dict[str, Any]) -> str:
    """All the text of a request's messages (plain and multimodal), joined."""
    return "\n".join(part if isinstance(part, str) else part.get("text", "") for message in body["messages"]
                     for part in (message["content"] if isinstance(message["content"], list) else [message["content"] or ""]))


class FakeOpenAI:
    """Serves `replies` in order (one per request) and keeps every request's path, body and headers in `requests`.

    A reply is a chat message dict, `http_error(...)`, `raw_reply(...)`, or a function of the request body that
    returns one (it may
    sleep past the client's timeout: the late answer is dropped).
    """

    def __init__(self, replies: list[dict[str, Any]]) -> None:
        self.replies, self.requests = list(replies), []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append({"path": self.path, "body": body, "headers": dict(self.headers)})
                if not fake.replies:
                    self.send_error(500, "no scripted reply left")
                    return
                message = fake.replies.pop(0)
                if callable(message):
                    message = message(body)
                if "_status" in message:
                    self._send(message["_status"], {"error": {"message": message["_message"], "type": "server_error"}})
                    return
                if "_raw" in message:
                    self._send(200, message["_raw"].encode(), message["_content_type"])
                    return
                self._send(200, {
                    "id": f"chatcmpl-{len(fake.requests)}", "object": "chat.completion", "created": 0,
                    "model": body.get("model", "fake"),
                    "choices": [{"index": 0, "message": message,
                                 "finish_reason": "tool_calls" if message.get("tool_calls") else "stop"}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                })

            def _send(self, status: int, payload: dict[str, Any] | bytes,
                      content_type: str = "application/json") -> None:
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout)
                    pass

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
