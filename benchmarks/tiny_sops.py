"""Seconds of `mora run --preset tiny` for every shipped SOP at its default duration, as a person would type it.

Each SOP runs in a fresh process (start-up included: the wall time a person waits), on the CPU, with a fixed seed;
the line of each also gives the lines the run wrote to stderr. The goal: every SOP under 8 s on 2 idle cores.

    python benchmarks/tiny_sops.py                       # every shipped SOP
    python benchmarks/tiny_sops.py text_to_video_wan     # some of them
    python benchmarks/tiny_sops.py --json                # also one JSON object per SOP (stdout)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from mora_agents.media import write_video
from mora_agents.sop.loader import BUILTIN_DIR, load_sop

GOAL_S = 8.0
PROMPTS = {"text": "a red fox running through snow"}


def attachments(sop_inputs: dict, folder: Path) -> list[str]:
    """`--image`/`--video` options for an SOP's required media inputs (a small image, two small clips)."""
    ramp = (np.linspace(0, 255, 64)[None, :, None] + np.zeros((48, 1, 3))).astype(np.uint8)
    args: list[str] = []
    for n, (name, spec) in enumerate(sop_inputs.items()):
        if not spec.required or spec.type == "text":
            continue
        if spec.type == "image":
            path = folder / f"{name}.png"
            Image.fromarray(ramp).save(path)
            args += ["--image", str(path)]
        else:
            path = folder / f"{name}.mp4"
            write_video(np.stack([np.roll(ramp, 5 * i + 20 * n, axis=1) for i in range(14)]), 7.0, path)
            args += ["--video", str(path)]
    return args


def run_sop(task: str, folder: Path) -> dict:
    sop = load_sop(BUILTIN_DIR / f"{task}.yaml")
    command = [sys.executable, "-m", "mora_agents", "run", PROMPTS["text"], "--task", task, "--preset", "tiny",
               "--device", "cpu", "--seed", "1", "--out", str(folder / "runs"), *attachments(sop.inputs, folder)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "COLUMNS": "100"})
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    if done.returncode:
        raise SystemExit(f"{task}: exit {done.returncode}\n{done.stderr}")
    run_dir = Path(done.stdout.strip()).parent
    info = json.loads((run_dir / "run.json").read_text())
    return {"sop": task, "seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2), "stderr_lines": len(done.stderr.splitlines()),
            "duration": sop.inputs["duration"].default if "duration" in sop.inputs else None,
            "status": info.get("status")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sops", nargs="*", help="SOP names (default: every shipped SOP)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per SOP to stdout")
    args = parser.parse_args()
    names = args.sops or sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))
    print(f"{'sop':<26} {'duration':>8} {'seconds':>8} {'cpu s':>7} {'stderr':>7}", file=sys.stderr)
    slow = []
    for task in names:
        with tempfile.TemporaryDirectory() as tmp:
            row = run_sop(task, Path(tmp))
        duration = "-" if row["duration"] is None else f"{row['duration']:g} s"
        print(f"{task:<26} {duration:>8} {row['seconds']:>8.2f} {row['cpu_seconds']:>7.2f} {row['stderr_lines']:>7}", file=sys.stderr)
        if args.json:
            print(json.dumps(row), flush=True)
        if row["seconds"] >= GOAL_S:
            slow.append(task)
    print(f"over {GOAL_S:g} s: {', '.join(slow) or 'none'} (cores: {os.cpu_count()}, load: "
          f"{os.getloadavg()[0]:.1f})", file=sys.stderr)


if __name__ == "__main__":
    main()
