"""One process of a training on several processes (`launch.run_training` starts it under `accelerate launch`).

    python -m mora_agents.train.worker '{"out": OUT, "dataset": DATA or null, "config": {...}}'

The main process prints each step as a JSON line on stdout; an error ends the process with one line on stderr
(`mora-train-error: CODE MESSAGE`) and exit code 2 (bad input) or 1 (a failure during work).
"""

from __future__ import annotations

import json
import sys

from accelerate import PartialState

from mora_agents.errors import InputError, MoraError
from mora_agents.train.launch import ERROR
from mora_agents.train.trainer import TrainConfig, resume, train


def _report(step: int, total: int, losses: dict[str, float]) -> None:
    print(json.dumps({"step": step, "total": total, "losses": losses}), flush=True)


def main(argv: list[str]) -> int:
    job = json.loads(argv[1])
    try:
        if job["dataset"] is not None:
            result = train(job["dataset"], job["out"], TrainConfig.model_validate(job["config"]), _report)
        else:
            result = resume(job["out"], _report)
    except InputError as e:
        print(f"{ERROR} 2 {e}", file=sys.stderr, flush=True)
        return 2
    except MoraError as e:
        print(f"{ERROR} 1 {e}", file=sys.stderr, flush=True)
        return 1
    if result.notes and PartialState().is_main_process:
        print(json.dumps({"notes": result.notes}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
