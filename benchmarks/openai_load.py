"""Load on the OpenAI Videos API of `mora serve`: many clients polling queued videos, on loopback only.

Starts `mora serve --preset tiny` on 127.0.0.1 (a free port, runs in a temporary folder), creates the videos
with the official `openai` client (short tiny clips: 8 frames), then runs the polling clients concurrently, each
asking `GET /v1/videos/{id}` for every video in turn (with a pause between rounds, as a poller does) until all
are completed or failed, or the time limit passes. It checks that nothing was lost or duplicated (every created id
answers and is listed exactly once, one run directory each, the server's run list matches) and that every video
completed, and prints the latency percentiles of the polls as the clients see them (`latency_ms`) and the server's own time
in the route (`handling_ms`, from its `server-timing` header), with the machine's load average: on a shared
machine the clients' latency is mostly waiting for a CPU.

    python benchmarks/openai_load.py                     # 50 clients, 20 videos
    python benchmarks/openai_load.py --clients 10 --videos 5 --json load.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import httpx
import openai

warnings.filterwarnings("ignore", category=DeprecationWarning)  # the client marks the Videos API deprecated
SHORT = {"set": {"image_to_video": {"frames": 8, "fps": 7}}, "seed": 1}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(root: Path, port: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "mora_agents", "serve", "--preset", "tiny", "--device", "cpu", "--host",
               "127.0.0.1", "--port", str(port), "--out", str(root / "runs"), "--sops", str(root / "sops")]
    log = open(root / "server.log", "wb")  # noqa: SIM115 - the server's, open while it runs
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"the server exited:\n{(root / 'server.log').read_text()[-2000:]}")
        try:
            httpx.get(f"http://127.0.0.1:{port}/api/info", timeout=2).raise_for_status()
            return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    sys.exit("the server did not answer in time")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def poll(url: str, ids: list[str], pause: float, deadline: float, latencies: list[float],
               handling: list[float], errors: list[str]) -> None:
    """One client: every video in turn, round after round, until none is queued or in progress."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        pending = list(ids)
        while pending and time.monotonic() < deadline:
            for video_id in list(pending):
                started = time.perf_counter()
                response = await client.get(f"/v1/videos/{video_id}")
                latencies.append(time.perf_counter() - started)
                timing = response.headers.get("server-timing", "")
                if timing.startswith("app;dur="):
                    handling.append(float(timing.removeprefix("app;dur=")) / 1000)
                if response.status_code != 200:
                    errors.append(f"{video_id}: HTTP {response.status_code} {response.text[:200]}")
                    pending.remove(video_id)
                elif response.json()["status"] in ("completed", "failed"):
                    pending.remove(video_id)
            await asyncio.sleep(pause)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--videos", type=int, default=20)
    parser.add_argument("--pause", type=float, default=0.2, help="seconds between a client's rounds")
    parser.add_argument("--limit", type=float, default=1200, help="seconds before the pollers give up")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="mora-load-") as folder:
        root, port = Path(folder), free_port()
        url = f"http://127.0.0.1:{port}"
        server = start_server(root, port)
        try:
            client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
            created = [client.videos.create(prompt=f"a lighthouse number {n} in a storm", seconds="1",
                                            extra_body=SHORT).id for n in range(args.videos)]
            queued_at_start = sum(client.videos.retrieve(i).status == "queued" for i in created)
            latencies: list[float] = []
            handling: list[float] = []
            errors: list[str] = []
            started = time.monotonic()

            async def clients() -> None:
                deadline = time.monotonic() + args.limit
                await asyncio.gather(*(poll(url, created, args.pause, deadline, latencies, handling, errors)
                                       for _ in range(args.clients)))

            asyncio.run(clients())
            elapsed = time.monotonic() - started
            final = {i: client.videos.retrieve(i) for i in created}
            listed = [v.id for v in client.videos.list(order="asc", limit=100)]
            runs = [r["id"] for r in httpx.get(f"{url}/api/runs", timeout=30).json()]
            folders = sorted(p.name for p in (root / "runs").iterdir() if (p / "run.json").is_file())
        finally:
            server.terminate()
            server.wait(timeout=60)

    completed = sum(v.status == "completed" for v in final.values())
    checks = {
        "ids_unique": len(set(created)) == len(created),
        "listed_once_each": sorted(listed) == sorted(created) and len(listed) == len(set(listed)),
        "one_run_directory_each": folders == sorted(created) and sorted(runs) == folders,
        "all_completed": completed == len(created),
        "no_poll_errors": not errors,
    }
    def summary(values: list[float]) -> dict[str, float]:
        return {name: round(1000 * value, 2) for name, value in (
            ("p50", statistics.median(values)), ("p95", percentile(values, 0.95)), ("p99", percentile(values, 0.99)),
            ("max", max(values)))}

    numbers: dict[str, Any] = {
        "clients": args.clients, "videos": args.videos, "queued_at_start": queued_at_start,
        "completed": completed, "polls": len(latencies), "seconds": round(elapsed, 1),
        "polls_per_second": round(len(latencies) / elapsed, 1),
        "latency_ms": summary(latencies),
        "handling_ms": summary(handling) if handling else None,
        "load_average": os.getloadavg()[0], "cpus": os.cpu_count(),
        "checks": checks, "errors": errors[:10],
    }
    numbers["p95_under_50ms"] = numbers["latency_ms"]["p95"] < 50
    print(json.dumps(numbers, indent=2))
    if args.json:
        args.json.write_text(json.dumps(numbers, indent=2) + "\n", encoding="utf-8")
    sys.exit(0 if all(checks.values()) and numbers["p95_under_50ms"] else 1)


if __name__ == "__main__":
    main()
