"""Many GPUs for one request (`--gpus N`): diffusers' context parallelism splits the denoiser's sequence across N
processes, one GPU each (Ulysses by default, ring with `--speed-option parallel=ring`).

The process that runs the request is rank 0. The first time it loads a pipeline whose transformer has a
context-parallel plan in diffusers (Wan 2.x, FLUX.1, LTX-Video), it starts N - 1 worker processes on the other GPUs
(`torch.distributed`: NCCL on CUDA, gloo on the CPU) and joins them. Each pipeline call of such a model is then sent to
the workers first (its arguments; progress callbacks stay here), and every rank runs it together: each computes its
part of every attention and the transformer's output is gathered, so all ranks end with the same frames. The other
models (the paper's UNets, SEINE, SkyReels-V2, FramePack: no plan in diffusers) run on rank 0 alone. The workers keep
their pipelines loaded for the next calls and stop with this process.

Why diffusers and not xDiT: it is the library the pipelines already are, its plan covers the newer backends'
transformers, and it adds no launcher: `mora run`, `mora serve` and each Ray worker of `mora batch` start their own
group. On a Ray cluster, `mora batch --gpus N` gives each worker N GPUs (`--gpus-per-worker`), so the two compose.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import Any, NoReturn
from unittest import mock

import torch
import torch.distributed as dist

from mora_agents.errors import InputError, MoraError
from mora_agents.settings import Speed, settings, use_settings

JOIN_S = 600
"""How long rank 0 waits for the workers to start (they import torch and diffusers) before giving up."""
IDLE = timedelta(days=7)
"""How long a worker waits for the next call (a server's workers wait between requests)."""


def check_gpus(gpus: int, device: torch.device) -> None:
    """`--gpus N` on this device: N CUDA GPUs present (or the CPU, where N processes share it: a test of the code
    path, not a speed-up). Raises InputError."""
    if gpus < 1:
        raise InputError(f"--gpus {gpus}: must be at least 1")
    if gpus == 1:
        return
    if device.type == "cuda":
        if device.index not in (None, 0):
            raise InputError(f"--gpus {gpus}: runs on cuda:0 to cuda:{gpus - 1}; leave --device at auto or cuda")
        if torch.cuda.device_count() < gpus:
            raise InputError(f"--gpus {gpus}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    elif device.type != "cpu":
        raise InputError(f"--gpus {gpus}: needs CUDA GPUs (or the CPU), not {device.type}")


def parallel_config(gpus: int, speed: Speed) -> Any:
    from diffusers import ContextParallelConfig

    if speed.parallel == "ring":
        return ContextParallelConfig(ring_degree=gpus)
    return ContextParallelConfig(ulysses_degree=gpus, ulysses_anything=True)


def parallel_attention(speed: Speed, device: torch.device) -> str | None:
    """The attention backend context parallelism needs beyond the speed's: ring attention needs one that returns
    its log-sum-exp (cuDNN's, flash), which PyTorch's plain SDPA does not. Raises InputError on the CPU."""
    if speed.parallel != "ring" or speed.attention not in ("default", "native"):
        return None
    if device.type != "cuda":
        raise InputError("--speed-option parallel=ring: needs CUDA (cuDNN or flash attention); on the CPU use "
                         "ulysses")
    return "_native_cudnn"


@contextmanager
def _cpu_accelerator() -> Any:
    """diffusers picks each rank's device as `rank % torch.accelerator.device_count()`, which divides by zero on a
    machine without an accelerator; there every rank's device is the CPU."""
    if torch.accelerator.device_count():
        yield
        return
    with mock.patch.object(torch.accelerator, "device_count", return_value=1):
        yield


def has_plan(model: torch.nn.Module | None) -> bool:
    """Whether diffusers can split this denoiser across GPUs (it has a context-parallel plan)."""
    return model is not None and getattr(model, "_cp_plan", None) is not None


def make_parallel(model: torch.nn.Module, gpus: int, speed: Speed, device: torch.device) -> None:
    """Split a denoiser across the ranks of the process group (every rank calls this on its own copy)."""
    if (attention := parallel_attention(speed, device)) is not None:
        model.set_attention_backend(attention)
    with _cpu_accelerator():
        model.enable_parallelism(config=parallel_config(gpus, speed))


def send_call(key: str, args: tuple, kwargs: dict[str, Any]) -> None:
    """On rank 0 of a group: have the workers make this call of pipeline `key` too (progress callbacks stay here)."""
    shared = {k: v for k, v in kwargs.items() if k != "callback_on_step_end"}
    _group.send(("call", key, _snapshot(), args, shared))


def is_rank0() -> bool:
    return _RANK == 0


def _snapshot() -> dict[str, Any]:
    """The settings a worker loads its pipelines with (its own device aside)."""
    s = settings()
    return {"preset": s.preset, "models": s.models, "memory_profile": s.memory_profile, "adapters": s.adapters,
            "speed": asdict(s.speed) | {"notes": ()}, "gpus": s.gpus}


class Group:
    """Rank 0's side of the process group: the worker processes and the calls sent to them."""

    def __init__(self, gpus: int, device: torch.device) -> None:
        self.gpus, self.logs = gpus, Path(tempfile.mkdtemp(prefix="mora-parallel-"))
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(gpus)}
        self.workers = []
        for rank in range(1, gpus):
            with open(self.logs / f"rank{rank}.log", "wb") as log:  # the worker writes to its own copy
                self.workers.append(subprocess.Popen(
                    [sys.executable, "-m", "mora_agents.pipelines.parallel", "--device", device.type],
                    env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)}, stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT))
        store = dist.TCPStore("127.0.0.1", port, gpus, is_master=True, timeout=timedelta(seconds=JOIN_S),
                              wait_for_workers=False)
        waited = 0
        while not _ready(store, gpus):  # a worker that fails to start is named at once, not after JOIN_S
            if any(worker.poll() is not None for worker in self.workers) or (waited := waited + 1) > JOIN_S:
                self.close()
                raise MoraError(f"--gpus {gpus}: a worker process did not start; its log is in {self.logs}")
        _join(device.type, 0, gpus, store)
        atexit.register(self.close)

    def send(self, message: tuple) -> None:
        if any(worker.poll() is not None for worker in self.workers):
            raise MoraError(f"a --gpus worker process ended; its log is in {self.logs}")
        dist.broadcast_object_list([message], src=0)

    def close(self) -> None:
        if dist.is_initialized():
            try:
                self.send(("stop",))
                dist.barrier()  # every rank leaves together (gloo aborts a rank whose peer is already gone)
            except MoraError:
                pass
            dist.destroy_process_group()
        for worker in self.workers:
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        if all(worker.returncode == 0 for worker in self.workers):  # else the logs say why
            shutil.rmtree(self.logs, ignore_errors=True)


_group: Group | None = None


def group(gpus: int, device: torch.device) -> Group | None:
    """This process's group of `gpus` ranks (started on first use on rank 0; None in a worker)."""
    global _group
    if _RANK != 0:
        return None
    if _group is not None and _group.gpus != gpus:
        raise MoraError(f"--gpus {gpus}: this process already runs a group of {_group.gpus}; start another process")
    if _group is None:
        _group = Group(gpus, device)
    return _group


def _ready(store: dist.TCPStore, gpus: int) -> bool:
    """Whether every worker has said it started (waits a second at most)."""
    try:
        store.wait([f"ready{rank}" for rank in range(1, gpus)], timedelta(seconds=1))
    except RuntimeError:  # the store's timeout
        return False
    return True


def _join(device_type: str, rank: int, world: int, store: dist.TCPStore) -> None:
    if device_type == "cuda":
        torch.cuda.set_device(rank)
    dist.init_process_group("nccl" if device_type == "cuda" else "gloo", store=store, rank=rank, world_size=world,
                            timeout=IDLE)


_RANK = 0
"""This process's rank: 0 for the process that runs the request."""


def worker_main(device_type: str) -> NoReturn:
    """A worker rank's process: run each pipeline call rank 0 sends, until it says stop, then end."""
    from mora_agents.pipelines.loading import load_pipeline

    global _RANK
    _RANK, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world, is_master=False,
                          timeout=timedelta(seconds=JOIN_S))
    store.set(f"ready{_RANK}", "1")
    _join(device_type, _RANK, world, store)
    device = f"cuda:{_RANK}" if device_type == "cuda" else "cpu"
    while True:
        message = [None]
        dist.broadcast_object_list(message, src=0)
        if message[0][0] == "stop":
            dist.barrier()
            break
        _, key, snapshot, args, kwargs = message[0]
        snapshot["speed"] = Speed(**snapshot["speed"])
        with use_settings(device=device, **snapshot), torch.inference_mode():
            load_pipeline(key)(*args, **kwargs)
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # gloo's client side of the store sometimes aborts in the interpreter's teardown once rank 0 has gone


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="A --gpus worker rank (started by the process that runs a request).")
    parser.add_argument("--device", choices=("cuda", "cpu"), required=True)
    from mora_agents.pipelines import parallel  # the module the pipelines see, not this `__main__` copy of it

    parallel.worker_main(parser.parse_args().device)
