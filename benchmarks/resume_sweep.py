"""Kill a tiny 12 s text-to-video run at every moment, resume it, and check that nothing was done twice.

Moments: after each transcript record (`record`), right after each write of `state.json` (`state`: before the
records it covers reach the transcript), inside each tool call right after the tool has written its output
(`tool`), and at each denoising step (`denoise`, from the tools' progress hook). For each moment a
forked child runs the request and SIGKILLs itself there; a second forked child runs `mora resume RUN`.
A moment passes when that resume exits 0, the run is finished, the transcript's seqs are unique and
increasing, every step has exactly one result, the tools ran exactly as often as in an uninterrupted run
(successful tool executions in the transcript), and the result's frames equal the uninterrupted run's.

The run is `--preset tiny` with 4-frame segments at 1 fps (so still 3 segments for 12 s, the same records as
the default tiny run, several times faster). Children are forked after the imports, so a moment costs one
run's work and no start-up.

    python benchmarks/resume_sweep.py                    # every moment
    python benchmarks/resume_sweep.py --sample           # one moment of each kind (the test suite's)
    python benchmarks/resume_sweep.py --json sweep.json  # also every moment's facts
    python benchmarks/resume_sweep.py --sops             # each shipped SOP, killed once (see `sop_resume`)
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import hashlib
import json
import os
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from mora_agents.cli import main as mora_main
from mora_agents.media import read_video, write_video
from mora_agents.runs import runner
from mora_agents.runs.catalog import read_info
from mora_agents.runs.runner import RunOptions, run_request
from mora_agents.runs.state import SavedState, write_state
from mora_agents.runs.transcript import Record, read_transcript
from mora_agents.settings import configure
from mora_agents.sop.loader import BUILTIN_DIR
from mora_agents.tools.registry import REGISTRY

REQUEST = "a red fox running through snow"
OVERRIDES = {"image_to_video": {"frames": 4, "fps": 1, "steps": 1}}
SEED = 11


@dataclasses.dataclass
class Moment:
    kind: str
    """record, state, tool or denoise."""
    index: int
    """record: its seq; state, tool, denoise: the n-th state write, tool call or denoising step of the run."""
    what: str
    """The record's type, the checkpoint a state write covers, the tool's name, or the denoising loop's label."""

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.index:03d}"


def in_child(work: Callable[[], int | None], log: Path) -> int:
    """Run `work` in a forked child writing to `log`: its exit code, or minus the signal that ended it."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            code = work() or 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


class Counting:
    """The tools' progress hook and wrappers of every tool and of the runner's state write: counts them, and
    SIGKILLs this process at `moment` (None: only count, into `seen`)."""

    def __init__(self, moment: Moment | None) -> None:
        self.moment, self.seen = moment, {"state": [], "tool": [], "denoise": []}
        self.label = ""

    def _reached(self, kind: str, what: str) -> None:
        self.seen[kind].append(what)
        if self.moment and self.moment.kind == kind and self.moment.index == len(self.seen[kind]) - 1:
            os.kill(os.getpid(), signal.SIGKILL)

    def start(self, label: str, total: int) -> None:
        self.label = label

    def advance(self) -> None:
        self._reached("denoise", self.label)

    def stop(self) -> None: ...

    def wrap(self, name: str, func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def tool(*args: Any, **kwargs: Any) -> Any:
            result = func(*args, **kwargs)
            self._reached("tool", name)
            return result

        return tool

    def write_state(self, run_dir: Path, state: SavedState) -> None:
        write_state(run_dir, state)
        self._reached("state", f"state.json: {state.checkpoint.type.removeprefix('StructuredMessage[').rstrip(']')}")

    def install(self) -> None:
        configure(progress=self)
        runner.write_state = self.write_state
        for name, spec in list(REGISTRY.items()):
            wrapped = dataclasses.replace(spec, func=self.wrap(name, spec.func))
            wrapped.__dict__.update(function_tool=spec.function_tool, parameters=spec.parameters)  # the real schema
            REGISTRY[name] = wrapped


def run(out: Path, moment: Moment | None, seen_file: Path | None = None) -> int:
    """The request in this process, killed at `moment`; exit code 3 if the moment never came."""
    counting = Counting(moment)
    counting.install()

    def on_record(record: Record, run_dir: Path) -> None:
        if moment and moment.kind == "record" and record.seq == moment.index:
            os.kill(os.getpid(), signal.SIGKILL)

    options = RunOptions(preset="tiny", device="cpu", out=out, seed=SEED, overrides=OVERRIDES)
    asyncio.run(run_request(REQUEST, duration=12, options=options, on_record=on_record))
    if seen_file:
        seen_file.write_text(json.dumps(counting.seen))
    return 3 if moment else 0


def facts(run_dir: Path) -> dict[str, Any]:
    """What a finished (or not) run directory says: status, seqs, results per step, tool runs."""
    records = read_transcript(run_dir / "transcript.jsonl")
    seqs = [r.seq for r in records]
    results = Counter(f"{r.message['content']['step']}#{r.message['content']['iteration']}"
                      for r in records if r.type.endswith("[StepResult]"))
    tool_runs = Counter(c["name"] for r in records if r.type == "ToolCallExecutionEvent"
                        for c in r.message["content"] if not c["is_error"])
    return {"status": read_info(run_dir)["status"], "seqs_ok": seqs == sorted(set(seqs)),
            "results": dict(results), "tool_runs": dict(tool_runs),
            "notes": [r.type for r in records if r.kind == "note"]}


def try_moment(moment: Moment, base: Path, reference: dict[str, Any], frames: np.ndarray) -> dict[str, Any]:
    start = time.perf_counter()
    out, log = base / moment.name, base / f"{moment.name}.log"
    killed = in_child(lambda: run(out, moment), log)
    row: dict[str, Any] = {"moment": moment.name, "kind": moment.kind, "what": moment.what, "killed": killed}
    run_dirs = list(out.iterdir()) if out.is_dir() else []
    if killed == -signal.SIGKILL and len(run_dirs) == 1:
        run_dir = run_dirs[0]
        row["resume_exit"] = in_child(lambda: mora_main_with(["resume", str(run_dir)]), log)
        row.update(facts(run_dir))
        result = run_dir / "result.mp4"
        row["frames_equal"] = result.is_file() and np.array_equal(read_video(result)[0], frames)
    row["passed"] = (killed == -signal.SIGKILL and row.get("resume_exit") == 0 and row.get("status") == "finished"
                     and row.get("seqs_ok") and set(row["results"].values()) == {1}
                     and row["results"].keys() == reference["results"].keys()
                     and row["tool_runs"] == reference["tool_runs"] and row["frames_equal"])
    if not row["passed"]:
        row["log_tail"] = log.read_text(errors="replace")[-3000:] if log.is_file() else ""
    row["seconds"] = round(time.perf_counter() - start, 2)
    return row


SVD_2S = {"image_to_video": {"frames": 4, "fps": 2, "steps": 1}}
"""2 s segments of the default image-to-video backend (its tiny default is 7 frames at 2 fps: 3.5 s)."""
SOP_REQUESTS: dict[str, dict[str, Any]] = {
    "text_to_video": {"duration": 4, "overrides": SVD_2S},
    "text_to_video_wan": {"duration": 18},  # two of the tiny Wan clips (9 frames at 1 fps)
    "text_to_video_keyframes": {"duration": 18},
    "digital_world": {"duration": 4, "overrides": SVD_2S},
    "image_to_video": {"images": ["still.png"], "duration": 4, "overrides": SVD_2S},
    "extend_video": {"videos": ["a.mp4"], "duration": 4, "overrides": SVD_2S},
    "edit_video": {"videos": ["a.mp4"], "overrides": SVD_2S},
    "connect_videos": {"videos": ["a.mp4", "b.mp4"]},
    "connect_videos_flf2v": {"videos": ["a.mp4", "b.mp4"]},
    "story": {"overrides": SVD_2S},
    "long_video": {"duration": 30},
}
"""Per shipped SOP: a tiny request that runs it in seconds, its repeated (or for_each) step (if any) twice."""


def sop_inputs(base: Path) -> None:
    """The files the SOP requests attach: a still and two 4 s clips, into `base`."""
    ramp = np.linspace(0, 255, 64, dtype=np.uint8)
    Image.fromarray(np.stack([ramp[None, :].repeat(48, 0)] * 3, -1)).save(base / "still.png")
    for name, shift in (("a.mp4", 0), ("b.mp4", 90)):
        write_video(np.stack([np.roll(np.asarray(Image.open(base / "still.png")), 3 * i + shift, 1)
                              for i in range(28)]), 7.0, base / name)


def run_sop(task: str, base: Path, out: Path, kill_after: tuple[str, int] | None) -> int:
    """The SOP's request in this process, SIGKILLed right after the step result `kill_after` (step, iteration)."""
    request = SOP_REQUESTS[task]

    def on_record(record: Record, run_dir: Path) -> None:
        content = record.message.get("content") if isinstance(record.message, dict) else None
        if (kill_after and record.type.endswith("[StepResult]") and isinstance(content, dict)
                and (content.get("step"), content.get("iteration")) == kill_after):
            os.kill(os.getpid(), signal.SIGKILL)

    options = RunOptions(preset="tiny", device="cpu", out=out, seed=SEED, overrides=request.get("overrides", {}))
    asyncio.run(run_request(REQUEST, task=task, duration=request.get("duration"), options=options,
                            images=[base / f for f in request.get("images", [])],
                            videos=[base / f for f in request.get("videos", [])], on_record=on_record))
    return 3 if kill_after else 0


def kill_point(run_dir: Path) -> tuple[str, int]:
    """Where the SOP check kills a run: right after the first iteration of its repeated (or for_each) step, so that
    the resumed process runs the next iteration with nothing run before it, unlike the uninterrupted one; else right
    after its first tool step."""
    results = [r.message["content"] for r in read_transcript(run_dir / "transcript.jsonl")
               if r.type.endswith("[StepResult]")]
    done = {(r["step"], r["iteration"]) for r in results}
    repeated = [(r["step"], 0) for r in results if r["iteration"] == 0 and (r["step"], 1) in done]
    return (repeated or [(r["step"], r["iteration"]) for r in results if r["tool"]])[0]


def sha256(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def sop_resume(base: Path) -> list[dict[str, Any]]:
    """Each shipped SOP: an uninterrupted run, and one SIGKILLed at `kill_point` and resumed by `mora resume` in a
    new process; the two results' sha256 must be equal."""
    sop_inputs(base)
    rows = []
    for task in sorted(path.stem for path in BUILTIN_DIR.glob("*.yaml")):
        start = time.perf_counter()
        whole, killed, log = base / task / "whole", base / task / "killed", base / f"{task}.log"
        (base / task).mkdir()
        row: dict[str, Any] = {"sop": task, "whole_exit": in_child(lambda: run_sop(task, base, whole, None), log)}
        if row["whole_exit"] == 0:
            (whole_dir,) = whole.iterdir()
            row["kill_after"] = kill_point(whole_dir)
            row["killed"] = in_child(lambda: run_sop(task, base, killed, row["kill_after"]), log)
            (killed_dir,) = killed.iterdir()
            row["resume_exit"] = in_child(lambda: mora_main_with(["resume", str(killed_dir)]), log)
            row["whole"], row["resumed"] = sha256(whole_dir / "result.mp4"), sha256(killed_dir / "result.mp4")
        row["passed"] = (row.get("killed") == -signal.SIGKILL and row.get("resume_exit") == 0
                         and row["whole"] is not None and row["whole"] == row["resumed"])
        if not row["passed"]:
            row["log_tail"] = log.read_text(errors="replace")[-3000:] if log.is_file() else ""
        row["seconds"] = round(time.perf_counter() - start, 2)
        rows.append(row)
        print(f"{task:26} killed after {row.get('kill_after')}: {'ok' if row['passed'] else 'FAILED'} "
              f"{row['seconds']:6.2f}s", flush=True)
    return rows


def mora_main_with(argv: list[str]) -> None:
    sys.argv = ["mora", *argv]
    mora_main()


def moments(run_dir: Path, seen: dict[str, list[str]]) -> list[Moment]:
    records = read_transcript(run_dir / "transcript.jsonl")
    found = [Moment("record", r.seq, r.type.removeprefix("StructuredMessage[").rstrip("]")) for r in records]
    found += [Moment(kind, i, what) for kind in ("state", "tool", "denoise") for i, what in enumerate(seen[kind])]
    return found


def sample(found: list[Moment]) -> list[Moment]:
    """One moment of each kind and type, spread over the run: the n-th type takes its occurrence n (mod count)."""
    by_type: dict[tuple[str, str], list[Moment]] = {}
    for moment in found:
        by_type.setdefault((moment.kind, moment.what.partition(":")[0]), []).append(moment)
    return [group[n % len(group)] for n, group in enumerate(by_type.values())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sample", action="store_true", help="one moment of each kind, not all of them")
    parser.add_argument("--sops", action="store_true", help="each shipped SOP killed once, not every moment")
    parser.add_argument("--json", type=Path, help="write every moment's facts here")
    parser.add_argument("--keep", type=Path, help="keep the run directories here (default: a temporary folder)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        base = args.keep or Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        if args.sops:
            rows = sop_resume(base)
            found, report = rows, {}
        else:
            found, rows, report = sweep(base, args.sample)
    passed = sum(row["passed"] for row in rows)
    seconds = round(time.perf_counter() - start, 1)
    print(f"{'SOPs' if args.sops else 'moments'} tried: {len(rows)} of {len(found)}; passed: {passed}; "
          f"failed: {len(rows) - passed}; time: {seconds} s")
    if args.json:
        args.json.write_text(json.dumps({"moments": len(found), "tried": len(rows), "passed": passed,
                                         "seconds": seconds, **report, "rows": rows}, indent=1))
    sys.exit(0 if passed == len(rows) else 1)


def sweep(base: Path, only_sample: bool) -> tuple[list[Moment], list[dict[str, Any]], dict[str, Any]]:
    """The moments of the uninterrupted run, the rows of those tried (all, or a sample), and the reference facts."""
    seen_file = base / "seen.json"
    if in_child(lambda: run(base / "uninterrupted", None, seen_file), base / "uninterrupted.log") != 0:
        sys.exit("the uninterrupted run failed:\n" + (base / "uninterrupted.log").read_text()[-3000:])
    (reference_dir,) = (base / "uninterrupted").iterdir()
    reference = facts(reference_dir)
    frames = read_video(reference_dir / "result.mp4")[0]
    found = moments(reference_dir, json.loads(seen_file.read_text()))
    rows = []
    for moment in sample(found) if only_sample else found:
        rows.append(try_moment(moment, base, reference, frames))
        row = rows[-1]
        print(f"{moment.name:12} {moment.what:28} {'ok' if row['passed'] else 'FAILED'} {row['seconds']:6.2f}s",
              flush=True)
    return found, rows, {"reference": reference}


if __name__ == "__main__":
    main()
