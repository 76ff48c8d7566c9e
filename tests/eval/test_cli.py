import json
import subprocess
import sys

import pytest

from mora_agents.eval import _deps
from mora_agents.eval.api import Evaluator
from mora_agents.eval.chart import paper_rows
from mora_agents.eval.metrics import METRICS
from mora_agents.eval.metrics.summary import QUALITY_DIMENSIONS
from mora_agents.eval.targets import Target

from .helpers import cut, invoke, make_run, static, write_mp4

FAST = "subject_consistency,background_consistency,dynamic_degree,video_length,tcon,tmean"


def test_video_file_to_json(tmp_path):
    video = write_mp4(tmp_path / "static.mp4", static())
    out = tmp_path / "out.json"
    result = invoke(video, "--metrics", FAST, "--json-out", out, "--weights", tmp_path / "none")
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())["videos"][0]["metrics"]
    assert metrics["subject_consistency"]["value"] == pytest.approx(1.0)
    assert metrics["subject_consistency"]["backend"] == "fallback:ssim"
    assert metrics["dynamic_degree"]["value"] == 0.0 and metrics["dynamic_degree"]["fps"] == 16.0
    assert metrics["dynamic_degree"]["frames_used"] == list(range(0, 16, 2))
    assert metrics["video_length"]["value"] == pytest.approx(1.0)
    assert metrics["tcon"]["value"] is None and "input video" in metrics["tcon"]["reason"]
    assert "subject_consistency" in result.output


def test_run_directories_read_prompt_task_and_inputs(tmp_path):
    run = make_run(tmp_path, "connect", "connect_videos", {"video_a": static(), "video_b": cut(), "prompt": "a cat"})
    out = tmp_path / "out.json"
    assert invoke(run, "--metrics", FAST, "--json-out", out).exit_code == 0
    video = json.loads(out.read_text())["videos"][0]
    assert (video["prompt"], video["task"]) == ("a cat", "connect_videos")
    assert video["metrics"]["tcon"]["backend"] == "fallback:color-histogram"
    tmean = video["metrics"]["tmean"]
    assert tmean["value"] == pytest.approx((tmean["details"]["tcon_front"] + tmean["details"]["tcon_behind"]) / 2)
    assert video["metrics"]["tcon"]["value"] == pytest.approx(tmean["details"]["tcon_front"])


@pytest.mark.parametrize("kind", ["missing", "not-video", "run-without-result", "bad-plan"])
def test_bad_input_exits_2_with_one_line(tmp_path, kind):
    path = tmp_path / "input.mp4"
    if kind == "not-video":
        path.write_text("hello")
    elif kind == "run-without-result":
        path = tmp_path / "run"
        path.mkdir()
        (path / "plan.json").write_text("{}")
    elif kind == "bad-plan":
        path = tmp_path / "run"
        path.mkdir()
        (path / "plan.json").write_text("{not json")
    result = invoke(path, "--metrics", "video_length")
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("mora eval: error: ") and str(path) in lines[0]


def test_unknown_metric_and_conflicting_prompts_exit_2(tmp_path):
    video = write_mp4(tmp_path / "v.mp4", static(n=4))
    assert "unknown metric" in invoke(video, "--metrics", "nope").stderr
    prompts = tmp_path / "p.txt"
    prompts.write_text("a\n")
    assert invoke(video, "--prompt", "x", "--prompts", prompts).exit_code == 2


def test_suite_report_groups_by_type(tmp_path):
    texts = ["one dog", "two cats", "three birds"]
    runs = [make_run(tmp_path, f"run{i}", "text_to_video", {"prompt": p}) for i, p in enumerate(texts)]
    prompts = tmp_path / "t2v.jsonl"
    prompts.write_text(
        "\n".join(
            json.dumps({"prompt": p, "type": t})
            for p, t in [("one dog", "I"), ("two cats", "II"), ("three birds", "Type III")]
        )
    )
    report = tmp_path / "report.md"
    result = invoke(
        *runs, "--suite", "t2v", "--prompts", prompts, "--metrics", "dynamic_degree,video_length", "--report", report
    )
    assert result.exit_code == 0, result.output
    text = report.read_text()
    for group in ("Type I ", "Type II ", "Type III ", "overall"):
        assert f"| {group.strip()} |" in text
    assert "| overall | 1.000 [fallback:opencv-dis] (3) | 1.000 [reference] (3) |" in text


def test_chart_includes_paper_rows_for_the_task(tmp_path):
    run = make_run(tmp_path, "t2v", "t2v", {"prompt": "a cat"})
    chart = tmp_path / "chart.png"
    result = invoke(run, "--metrics", "video_quality", "--chart", chart, "--weights", tmp_path / "none")
    assert result.exit_code == 0, result.output
    assert chart.read_bytes().startswith(b"\x89PNG") and "Mora (paper)" in result.output


@pytest.mark.parametrize("task", ["t2v", "i2v", "extend_video", "edit_video", "connect_videos", "digital_world"])
def test_paper_rows_cover_every_task_with_metric_names(task):
    rows = paper_rows(task)
    assert set(rows) == {"Mora (paper)", "Sora (paper)"}
    assert all(set(row) <= set(METRICS) and all(0 <= v <= 1 for v in row.values()) for row in rows.values())


def test_paper_video_quality_is_the_mean_of_its_six_dimensions():
    # A transcription check of Table 1: every row's Video Quality is the mean of its six dimensions, rounded.
    for row in paper_rows("text_to_video").values():
        assert row["video_quality"] == pytest.approx(sum(row[d] for d in QUALITY_DIMENSIONS) / 6, abs=5e-4)


def test_import_loads_no_model_library():
    code = (
        "import sys, mora_agents.eval, mora_agents.eval.cli; "
        "print(sorted(m for m in ('torch', 'transformers', 'cv2', 'skimage', 'matplotlib') if m in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


def test_missing_dependency_names_the_extra(tmp_path, monkeypatch):
    real = _deps.importlib.import_module

    def without_cv2(name):
        if name.startswith("cv2"):
            raise ImportError(name)
        return real(name)

    monkeypatch.setattr(_deps.importlib, "import_module", without_cv2)
    video = write_mp4(tmp_path / "v.mp4", static())
    evaluation = Evaluator(["background_consistency", "dynamic_degree"], tmp_path / "none").evaluate(Target("v", video))
    assert evaluation.results["background_consistency"].backend == "fallback:color-histogram"  # needs no cv2
    assert evaluation.results["dynamic_degree"].value is None
    assert "'opencv-python-headless' is required" in evaluation.results["dynamic_degree"].reason
    assert "pip install mora-agents[eval]" in evaluation.results["dynamic_degree"].reason
