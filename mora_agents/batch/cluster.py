"""A batch on a Ray cluster: one actor per GPU (or per CPU on a CPU-only cluster) takes runs from the queue.

Each actor is one process that keeps the runner's pipelines loaded between the runs it takes. The driver
prepares the run directories under `--out`, which must be the same path on every node (shared storage); a
worker only continues a prepared run (`drive_run`), so the person's files need not be on the workers.
A worker that dies (killed, out of memory, its node lost) is replaced by a fresh actor, and its run goes back
to the front of the queue, for the next free worker, which resumes it from its last checkpoint.
"""

from __future__ import annotations

import itertools
import uuid
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import OutOfMemoryError, RayActorError, RayError

from mora_agents.batch.jobs import BatchResult, Notify, drive_run, refresh
from mora_agents.errors import InputError


class Worker:
    """A Ray actor: runs the prepared runs it is given, one at a time, with its models loaded between them."""

    async def run(self, run_dir: Path) -> str | None:
        return await drive_run(run_dir)


@contextmanager
def ray_session(address: str) -> Iterator[None]:
    """Join Ray for the batch (unless this process already has), and leave it at the end."""
    if ray.is_initialized():
        yield
        return
    try:
        # `local` starts a Ray instance on this machine; worker output goes to Ray's logs, not over the display
        ray.init(address=None if address == "local" else address, log_to_driver=False,
                 **({"include_dashboard": False} if address == "local" else {}))
    except (ConnectionError, ValueError, RuntimeError) as e:
        raise InputError(f"--ray {address}: {e} (start a cluster with `ray start --head`, or use --ray local)") from None
    try:
        yield
    finally:
        ray.shutdown()


def _worker_options(gpus_per_worker: float, workers: int | None, jobs: int) -> tuple[dict[str, Any], int]:
    """Ray resources of one worker and how many workers fit the nodes: one per `gpus_per_worker` GPUs, or,
    on a cluster without GPUs, one per CPU."""
    nodes = [node["Resources"] for node in ray.nodes() if node["Alive"]]
    if any(node.get("GPU") for node in nodes):
        options, fit = {"num_gpus": gpus_per_worker}, sum(int(node.get("GPU", 0) // gpus_per_worker) for node in nodes)
        if fit < 1:
            raise InputError(f"--gpus-per-worker {gpus_per_worker:g}: no node has that many GPUs")
    else:
        options, fit = {"num_cpus": 1}, max(1, sum(int(node.get("CPU", 0)) for node in nodes))
    return options, min(fit, workers or fit, jobs)


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _fail(result: BatchResult, error: str) -> None:
    refresh(result)
    result.status, result.error = "failed", error


def run_on_ray(jobs: list[BatchResult], notify: Notify, *, gpus_per_worker: float = 1.0, workers: int | None = None,
               retries: int = 2) -> None:
    """Run the prepared `jobs` on workers of the Ray cluster this process joined, updating each result.

    `gpus_per_worker`: GPUs of each worker (on a cluster with GPUs; else each worker takes one CPU).
    `workers`: at most this many (default: as many as the cluster's resources fit). `retries`: how many
    times a run whose worker died is given to another worker; then its result says failed, with the error.
    """
    options, count = _worker_options(gpus_per_worker, workers, len(jobs))
    names = (f"mora-batch-{uuid.uuid4().hex[:8]}-{n}" for n in itertools.count(1))
    remote = ray.remote(Worker)

    def start_worker() -> tuple[str, Any]:
        name = next(names)
        return name, remote.options(name=name, **options).remote()

    idle = [start_worker() for _ in range(count)]
    queue, running = deque(jobs), {}
    try:
        while queue or running:
            while idle and queue:
                (name, actor), result = idle.pop(), queue.popleft()
                result.status, result.attempts, result.worker = "running", result.attempts + 1, name
                running[actor.run.remote(result.run_dir)] = (name, actor), result
                notify(result)
            done, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
            for ref in done:
                worker, result = running.pop(ref)
                try:
                    error = ray.get(ref)
                except (RayActorError, OutOfMemoryError) as e:  # the worker died: a fresh one takes its place
                    ray.kill(worker[1])
                    idle.insert(0, start_worker())  # the warm workers (taken from the end) go first
                    if result.attempts <= retries:
                        result.status = "queued"
                        queue.appendleft(result)
                    else:
                        _fail(result, f"its worker died {result.attempts} times; last: {_first_line(e)}")
                except RayError as e:
                    idle.append(worker)
                    _fail(result, _first_line(e))
                else:
                    idle.append(worker)
                    refresh(result, error)
                notify(result)
    except KeyboardInterrupt:  # the runs record their interruption (async actors: the cancel reaches the run)
        for ref in running:
            ray.cancel(ref)
        if running:
            ray.wait(list(running), num_returns=len(running), timeout=30)
        raise
    finally:
        for _, actor in idle + [worker for worker, _ in running.values()]:
            ray.kill(actor)
