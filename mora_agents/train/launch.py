"""Training on one process or several, from one call: `mora train --num-processes P` and the loop's training stage.

Several processes run `accelerate launch` of `mora_agents.train.worker` (DDP: GPUs with NCCL, or CPU processes with
gloo); the main process reports each step back as a JSON line, so the caller's progress bar shows the loss and the
time left as with one process. The global batch stays `config.batch_size`: each process takes an equal share.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from mora_agents.errors import InputError, MoraError
from mora_agents.pipelines.adapters import AdapterCard, card_sha256
from mora_agents.train.dataset import read_dataset
from mora_agents.train.trainer import (
    StepCallback,
    TrainConfig,
    TrainResult,
    check_inputs,
    check_out_dir,
    per_process_batch,
    read_record,
    resume,
    train,
)

MAX_PROCESSES = 64
ERROR = "mora-train-error:"
"""How a worker's last line on stderr starts when it stopped on an error: `ERROR CODE MESSAGE`."""


def run_training(out_dir: Path, dataset_dir: Path | None = None, config: TrainConfig | None = None,
                 processes: int = 1, on_step: StepCallback | None = None) -> TrainResult:
    """`train(dataset_dir, out_dir, config)` or, without a dataset, `resume(out_dir)`, on `processes` processes.
    Bad input raises InputError before any process starts."""
    if not 1 <= processes <= MAX_PROCESSES:
        raise InputError(f"--num-processes {processes}: from 1 to {MAX_PROCESSES}")
    if processes == 1:
        return train(dataset_dir, out_dir, config, on_step) if dataset_dir is not None else resume(out_dir, on_step)
    out_dir = Path(out_dir).resolve()
    if dataset_dir is not None:
        config = config or TrainConfig()
        check_out_dir(out_dir)
        check_inputs(config, read_dataset(dataset_dir), Path(dataset_dir))
    else:
        config = read_record(out_dir)[1]
    per_process_batch(config.batch_size, processes)
    gpus = config.device != "cpu" and torch.cuda.is_available()
    if gpus and torch.cuda.device_count() < processes:
        raise InputError(f"--num-processes {processes}: {torch.cuda.device_count()} GPU(s) here (one per process)")
    job = {"out": str(out_dir), "dataset": str(Path(dataset_dir).resolve()) if dataset_dir is not None else None,
           "config": config.model_dump(mode="json")}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
               "--num_machines", "1", "--mixed_precision", "bf16" if gpus else "no", "--dynamo_backend", "no",
               "--main_process_port", str(_free_port()), "-m", "mora_agents.train.worker", json.dumps(job)]
    notes: list[str] = []
    with tempfile.TemporaryFile("w+", encoding="utf-8") as errors:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, text=True,
                                   env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
        try:
            for line in process.stdout:
                message = json.loads(line) if line.startswith("{") else {}
                if "step" in message and on_step:
                    on_step(message["step"], message["total"], message["losses"])
                notes += message.get("notes", [])
            code = process.wait()
        except BaseException:
            process.terminate()
            process.wait()
            raise
        if code:
            errors.seek(0)
            _raise_worker_error(errors.read(), code)
    card = AdapterCard.model_validate_json((out_dir / "card.json").read_bytes())
    extra = card.model_extra or {}
    return TrainResult(out_dir, extra.get("steps", 0), extra.get("losses", []), card_sha256(out_dir), card, notes)


def _raise_worker_error(stderr: str, code: int) -> None:
    reported = [line for line in stderr.splitlines() if line.startswith(ERROR)]
    if reported:
        status, _, message = reported[-1].removeprefix(ERROR).strip().partition(" ")
        raise (InputError if status == "2" else MoraError)(message)
    cause = next((line for line in reversed(stderr.splitlines()) if re.match(r"(\[rank\d+\]: )?\w*(Error|Exception)\b", line)),
                 "no message (see the processes' output above)")
    raise MoraError(f"the training processes failed (exit code {code}): {cause.strip()}")


def _free_port() -> int:
    """A free TCP port on this machine for the processes' rendezvous."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
