"""Webhooks: a `video.completed` or `video.failed` event POSTed to `--webhook URL` when a run leaves the worker.

Signed as Standard Webhooks sign (and as the openai client's `webhooks.unwrap` / `verify_signature` check): headers
`webhook-id` (the event id, the same on every attempt), `webhook-timestamp` (Unix seconds) and `webhook-signature`
(`v1,` and the base64 HMAC-SHA256 of `{id}.{timestamp}.{body}`, keyed by the secret: a `whsec_` secret's base64
bytes, any other secret's UTF-8 bytes). A delivery that fails (no answer, or not 2xx) is tried again after 1, 2, 4,
8 and 16 s; every attempt is recorded in the run directory's `webhooks.jsonl`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from mora_agents.errors import InputError
from mora_agents.serve.hub import Snapshot

log = logging.getLogger("mora.serve")
RECORD = "webhooks.jsonl"
BACKOFF = (1.0, 2.0, 4.0, 8.0, 16.0)
"""Seconds before each attempt after the first."""


@dataclass(frozen=True)
class Webhook:
    url: str
    secret: str

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InputError(f"--webhook {self.url}: not an http(s) URL")
        if not self.secret:
            raise InputError("--webhook needs a signing secret: --webhook-secret (or MORA_WEBHOOK_SECRET), e.g. "
                             f"{new_secret()}")
        key_bytes(self.secret)

    def headers(self, event_id: str, body: bytes, now: int | None = None) -> dict[str, str]:
        """The signature headers of one attempt."""
        stamp = str(int(time.time()) if now is None else now)
        mac = hmac.new(key_bytes(self.secret), f"{event_id}.{stamp}.".encode() + body, hashlib.sha256)
        return {"webhook-id": event_id, "webhook-timestamp": stamp,
                "webhook-signature": f"v1,{base64.b64encode(mac.digest()).decode()}",
                "content-type": "application/json"}


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def key_bytes(secret: str) -> bytes:
    if not secret.startswith("whsec_"):
        return secret.encode()
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except binascii.Error:
        raise InputError("--webhook-secret: a whsec_ secret is base64 after the prefix") from None
    if not key:
        raise InputError("--webhook-secret: empty after the whsec_ prefix")
    return key


def event(state: Snapshot) -> dict[str, Any]:
    """The event of a run that left the worker, shaped as OpenAI's video events."""
    return {"id": f"evt_{secrets.token_hex(12)}", "object": "event", "created_at": int(time.time()),
            "type": "video.completed" if state.phase == "completed" else "video.failed", "data": {"id": state.id}}


class Sender:
    """Delivers events in the background, in the event loop it was made in (`send` may be called from any thread);
    `close()` cancels the deliveries under way (their attempts so far are recorded)."""

    def __init__(self, webhook: Webhook) -> None:
        self.webhook = webhook
        self.loop = asyncio.get_running_loop()
        self.tasks: set[asyncio.Task[bool]] = set()
        self.client = httpx.AsyncClient(timeout=10, follow_redirects=False)

    def send(self, state: Snapshot) -> None:
        payload = event(state)
        self.loop.call_soon_threadsafe(self._start, state.run_dir, payload)

    def _start(self, run_dir: Path, payload: dict[str, Any]) -> None:
        if not self.client.is_closed:
            task = self.loop.create_task(self.deliver(run_dir, payload))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def deliver(self, run_dir: Path, payload: dict[str, Any]) -> bool:
        """POST the event until a 2xx answer or the attempts run out; True once delivered."""
        body = json.dumps(payload).encode()
        for attempt, delay in enumerate((0.0, *BACKOFF), 1):
            await asyncio.sleep(delay)
            try:
                response = await self.client.post(self.webhook.url, content=body,
                                                   headers=self.webhook.headers(payload["id"], body))
                outcome: dict[str, Any] = {"status_code": response.status_code}
                delivered = response.is_success
            except httpx.HTTPError as e:
                outcome, delivered = {"error": f"{type(e).__name__}: {e}".rstrip(": ")}, False
            last = attempt == len(BACKOFF) + 1
            record(run_dir, {"event": payload["id"], "type": payload["type"], "url": self.webhook.url,
                             "attempt": attempt, **outcome, "delivered": delivered,
                             **({} if delivered or last else {"retry_in": BACKOFF[attempt - 1]})})
            if delivered:
                return True
        log.warning("webhook %s of %s: not delivered after %d attempts", payload["type"], run_dir.name, attempt)
        return False

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.client.aclose()


def record(run_dir: Path, entry: dict[str, Any]) -> None:
    """Append one delivery attempt to the run's webhooks.jsonl (a run deleted meanwhile keeps no record)."""
    try:
        with open(run_dir / RECORD, "a", encoding="utf-8") as f:
            f.write(json.dumps({"at": datetime.now().isoformat(), **entry}) + "\n")
    except FileNotFoundError:
        pass
