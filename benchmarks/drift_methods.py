"""Drift over 60 s for each long-video method, on the tiny preset: the plain SVD-XT chain (the paper's), the chain with
`color_match` and `sharpen`, SkyReels-V2 diffusion forcing and FramePack (`long_video`, one call each).

Each method is a real run (offline planner, fixed seed) and its drift is read from its run.json: for a chain, each
segment's start against the first keyframe and the seam into it; for a clip made in one call, every 4 s against its
first frame and the frame before. The tiny models have random weights, so their frames are noise: this measures the
code (every method runs 60 s and its drift is recorded), not the methods' quality. Run it with a GPU and `--preset
full` (the weights downloaded) for numbers that mean something.

    python benchmarks/drift_methods.py [--preset tiny] [--seconds 60] [--markdown OUT.md]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import torch
import yaml

from mora_agents.runs.runner import RunOptions, run_request
from mora_agents.sop.loader import BUILTIN_DIR

METHODS = {
    "SVD-XT chain (paper)": ("text_to_video", {}),
    "SVD-XT chain + color_match + sharpen": ("text_to_video_corrected", {}),
    "SkyReels-V2 DF (long_video)": ("long_video", {}),
    "FramePack (long_video)": ("long_video", {"image_to_video": {"backend": "framepack"}}),
}
"""Method -> (task, --set overrides)."""
PROMPT = "a red fox running through a snowy forest"


def corrected_sop(folder: Path) -> None:
    """text_to_video with the chain's colour and sharpness corrections, as its own SOP."""
    data = yaml.safe_load((BUILTIN_DIR / "text_to_video.yaml").read_text())
    data["name"] = "text_to_video_corrected"
    data["steps"][2]["repeat"]["chain"].update(color_match=True, sharpen=True)
    (folder / "text_to_video_corrected.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def summary(rows: list[dict]) -> dict[str, float | int]:
    """The drift of a chain or clip in a few numbers: the last measured start against the first frame, the worst
    colour shift and sharpness over the video, and the largest jump from the frame before."""
    seams = [r["to_previous"]["color"] for r in rows if r["to_previous"]]
    return {"points": len(rows), "last_start_s": rows[-1]["start"], "last_color": rows[-1]["to_first"]["color"],
            "max_color": max(r["to_first"]["color"] for r in rows),
            "min_sharpness": min(r["to_first"]["sharpness"] for r in rows),
            "max_sharpness": max(r["to_first"]["sharpness"] for r in rows), "max_seam_color": max(seams, default=0.0)}


def measure(preset: str, seconds: float, out: Path) -> list[dict]:
    sops = out / "sops"
    sops.mkdir()
    corrected_sop(sops)
    results = []
    for method, (task, overrides) in METHODS.items():
        options = RunOptions(preset=preset, device="auto", out=out / "runs", sops_dir=sops, seed=0,
                             overrides=overrides)
        started = time.monotonic()
        outcome = asyncio.run(run_request(PROMPT, task=task, duration=seconds, options=options))
        info = json.loads((outcome.run_dir / "run.json").read_text())
        (step, rows), = info["drift"].items()
        results.append({"method": method, "backends": info["backends"], "step": step,
                        "wall_s": round(time.monotonic() - started, 1), **summary(rows)})
        print(json.dumps(results[-1]), flush=True)
    return results


def markdown(results: list[dict], preset: str, seconds: float) -> str:
    lines = [f"Drift over {seconds:g} s, preset `{preset}` ({torch.__version__}, "
             f"{'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU'}).", "",
             "| method | measured at | last start (s) | ΔE there | max ΔE | sharpness min-max | max seam ΔE | wall (s) |",
             "|---|--:|--:|--:|--:|--:|--:|--:|"]
    for r in results:
        kind = "segment starts" if r["step"] == "segments" else "every 4 s"
        lines.append(f"| {r['method']} | {r['points']} {kind} | {r['last_start_s']:g} | {r['last_color']:.1f} | "
                     f"{r['max_color']:.1f} | {r['min_sharpness']:.2f}-{r['max_sharpness']:.2f} | "
                     f"{r['max_seam_color']:.1f} | {r['wall_s']:g} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny", choices=("tiny", "full"))
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    if args.preset == "tiny":
        torch.set_num_threads(1)  # tiny models: one thread is fastest and spares shared CPUs
    with tempfile.TemporaryDirectory() as scratch:
        table = markdown(measure(args.preset, args.seconds, Path(scratch)), args.preset, args.seconds)
    print(table)
    if args.markdown:
        args.markdown.write_text(table, encoding="utf-8")


if __name__ == "__main__":
    main()
