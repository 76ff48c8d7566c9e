"""A real `mora serve --preset tiny` in a subprocess on 127.0.0.1, and a Server-Sent Events reader for its API."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Server:
    """`mora serve` on a free port of `host` (a loopback address), runs in `out`, user SOPs in `sops`; `start()`
    returns once it answers."""

    def __init__(self, root: Path, *args: str, host: str = "127.0.0.1", token: str | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.out, self.sops, self.log = root / "runs", root / "sops", root / "server.log"
        self.host, self.token, self.args, self.env = host, token, args, env or {}
        self.port = free_port(host)
        self.url = f"http://{host}:{self.port}"
        self.process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        return [sys.executable, "-m", "mora_agents", "serve", "--preset", "tiny", "--device", "cpu", "--host", self.host,
                "--port", str(self.port), "--out", str(self.out), "--sops", str(self.sops), *self.args]

    def start(self) -> Server:
        env = {**os.environ, "OMP_NUM_THREADS": "1", **({"MORA_TOKEN": self.token} if self.token else {}), **self.env}
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(self.command(), env=env, stdout=log, stderr=subprocess.STDOUT)
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the server exited ({self.process.returncode}):\n{self.log.read_text()[-3000:]}")
            try:
                httpx.get(f"{self.url}/api/info", headers=headers, timeout=2).raise_for_status()
                return self
            except httpx.HTTPError:
                time.sleep(0.2)
        raise AssertionError(f"the server did not answer in time:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60)


def events(client: httpx.Client, run_id: str, start: int | None = None, headers: dict[str, str] | None = None
           ) -> Iterator[tuple[str, Any]]:
    """The run's Server-Sent Events as (event, data) until the server ends the stream."""
    params = {"from": start} if start is not None else {}
    with client.stream("GET", f"/api/runs/{run_id}/events", params=params, headers=headers or {},
                       timeout=httpx.Timeout(10, read=180)) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        event, data = None, None
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: "):
                data = json.loads(line.removeprefix("data: "))
            elif not line and event:
                yield event, data
                event = data = None


def follow(client: httpx.Client, run_id: str, start: int | None = None) -> tuple[list[dict], list[Any], dict]:
    """Read the run's stream to its end: the records, the progress reports and the last status."""
    records, progress, status = [], [], {}
    for event, data in events(client, run_id, start):
        if event == "record":
            records.append(data)
        elif event == "progress":
            progress.append(data)
        else:
            status = data
    return records, progress, status
