"""Load on the OpenAI Videos API of `mora serve`: many clients polling queued videos, on loopback only.

Starts `mora serve --preset tiny` on 127.0.0.1 (a free port, runs in a temporary folder), creates the videos
with the official `openai` client (short tiny clips: 8 frames) after a warm-up video that loads the models (unless
`--cold`), then runs the polling clients concurrently until
every video is completed or failed, or the time limit passes. Two ways to poll:

- `--mode sdk` (default): each client follows one video (client i the video i mod N) as the official client's
  `videos.poll` does, asking `GET /v1/videos/{id}` again after the `openai-poll-after-ms` the server answers (500);
- `--mode sweep`: each client asks for every video in turn, as fast as it gets answers, pausing `--pause` between
  rounds: a stress test whose latency is mostly the queue in front of two CPUs (its `polls_per_second` is the
  server's capacity on this machine).

It checks that nothing was lost or duplicated (every created id answers and is listed exactly once, one run
directory each, the server's run list matches) and that every video completed, and prints the latency percentiles
of the polls as the clients see them (`latency_ms`) and the server's own time in the route (`handling_ms`, from its
`server-timing` header), with the machine's load average.

    python benchmarks/openai_load.py                     # 50 clients, 20 videos, polled as the SDK polls
    python benchmarks/openai_load.py --mode sweep        # the stress test
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


async def poll(client: httpx.AsyncClient, ids: list[str], pause: float | None, deadline: float,
               latencies: list[float], handling: list[float], errors: list[str]) -> None:
    """One client: its videos in turn until none is queued or in progress; between rounds `pause` seconds, or (None)
    what the server's `openai-poll-after-ms` says, as the official client's `videos.poll` waits."""
    async with client:
        pending = list(ids)
        while pending and time.monotonic() < deadline:
            wait = pause or 0.0
            for video_id in list(pending):
                started = time.perf_counter()
                response = await client.get(f"/v1/videos/{video_id}")
                latencies.append(time.perf_counter() - started)
                timing = response.headers.get("server-timing", "")
                if timing.startswith("app;dur="):
                    handling.append(float(timing.removeprefix("app;dur=")) / 1000)
                if pause is None:
                    wait = int(response.headers.get("openai-poll-after-ms", "1000")) / 1000
                if response.status_code != 200:
                    errors.append(f"{video_id}: HTTP {response.status_code} {response.text[:200]}")
                    pending.remove(video_id)
                elif response.json()["status"] in ("completed", "failed"):
                    pending.remove(video_id)
            await asyncio.sleep(wait)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--videos", type=int, default=20)
    parser.add_argument("--mode", choices=("sdk", "sweep"), default="sdk",
                        help="sdk: a video per client, at the server's poll interval; sweep: every video, fast")
    parser.add_argument("--pause", type=float, default=0.2, help="sweep: seconds between a client's rounds")
    parser.add_argument("--cold", action="store_true",
                        help="no warm-up video first: the first polls meet the models being built and loaded")
    parser.add_argument("--limit", type=float, default=1200, help="seconds before the pollers give up")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="mora-load-") as folder:
        root, port = Path(folder), free_port()
        url = f"http://127.0.0.1:{port}"
        server = start_server(root, port)
        try:
            client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
            warm = [] if args.cold else [client.videos.create_and_poll(
                prompt="a warm-up", seconds="1", extra_body=SHORT, poll_interval_ms=200).id]
            created = [client.videos.create(prompt=f"a lighthouse number {n} in a storm", seconds="1",
                                            extra_body=SHORT).id for n in range(args.videos)]
            queued_at_start = sum(client.videos.retrieve(i).status == "queued" for i in created)
            latencies: list[float] = []
            handling: list[float] = []
            errors: list[str] = []
            started = time.monotonic()

            async def clients() -> None:
                deadline = time.monotonic() + args.limit
                if args.mode == "sweep":
                    work = [(created, args.pause) for _ in range(args.clients)]
                else:
                    work = [([created[i % len(created)]], None) for i in range(args.clients)]
                # made before any is timed: making one takes milliseconds of this process's loop (its SSL context)
                pollers = [httpx.AsyncClient(base_url=url, timeout=30) for _ in work]
                await asyncio.gather(*(poll(client, ids, pause, deadline, latencies, handling, errors)
                                       for client, (ids, pause) in zip(pollers, work)))

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
        "listed_once_each": sorted(listed) == sorted(created + warm) and len(listed) == len(set(listed)),
        "one_run_directory_each": folders == sorted(created + warm) and sorted(runs) == folders,
        "all_completed": completed == len(created),
        "no_poll_errors": not errors,
    }
    def summary(values: list[float]) -> dict[str, float]:
        return {name: round(1000 * value, 2) for name, value in (
            ("p50", statistics.median(values)), ("p95", percentile(values, 0.95)), ("p99", percentile(values, 0.99)),
            ("max", max(values)))}

    numbers: dict[str, Any] = {
        "mode": args.mode, "warm": not args.cold, "clients": args.clients, "videos": args.videos, "queued_at_start": queued_at_start,
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
