"""Seconds until `mora` commands that load no model are done: each in a fresh process, best of N.

The goal: under 1 s each (`python -X importtime -m mora_agents sops list` shows where an import's time goes).
`resume` is refused on a finished run (one tiny run is made first). The script imports nothing of the package, so
it measures whichever `mora_agents` PYTHONPATH names (e.g. another checkout, to compare).

    python benchmarks/startup.py               # best of 5
    python benchmarks/startup.py --repeats 9
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL_S = 1.0


def mora(*args: str) -> list[str]:
    return [sys.executable, "-m", "mora_agents", *args]


def timed(command: list[str], expect: int) -> tuple[float, float]:
    """Wall and CPU seconds (user + system) of one run of `command`, which must exit with `expect`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != expect:
        raise SystemExit(f"{' '.join(command[2:])}: exit {done.returncode}, expected {expect}\n{done.stderr}")
    return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs of each command; the best is reported")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "runs"
        made = subprocess.run(mora("run", "a fox", "--preset", "tiny", "--device", "cpu", "--duration", "1",
                                   "--out", str(out)), capture_output=True, text=True)
        if made.returncode:
            raise SystemExit(f"the tiny run failed:\n{made.stderr}")
        finished = Path(made.stdout.strip()).parent
        commands = {
            "--help": (mora("--help"), 0),
            "sops list": (mora("sops", "list"), 0),
            "sops show text_to_video": (mora("sops", "show", "text_to_video"), 0),
            "sops validate": (mora("sops", "validate"), 0),
            "runs": (mora("runs", "--out", str(out)), 0),
            "resume (a finished run)": (mora("resume", str(finished)), 2),
        }
        print(f"{'command':<26} {'seconds':>8} {'cpu s':>7}", file=sys.stderr)
        slow = []
        for name, (command, expect) in commands.items():
            wall, cpu = min(timed(command, expect) for _ in range(args.repeats))
            print(f"{name:<26} {wall:>8.2f} {cpu:>7.2f}", file=sys.stderr)
            if wall >= GOAL_S:
                slow.append(name)
    print(f"over {GOAL_S:g} s: {', '.join(slow) or 'none'} (best of {args.repeats}; cores: {os.cpu_count()}, "
          f"load: {os.getloadavg()[0]:.1f})", file=sys.stderr)


if __name__ == "__main__":
    main()
