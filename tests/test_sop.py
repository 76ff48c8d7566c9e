from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mora_agents.sop.loader import BUILTIN_DIR, SOPError, find_sops, load_sop
from mora_agents.sop.template import render

SHIPPED = {"text_to_video", "image_to_video", "extend_video", "edit_video", "digital_world", "connect_videos"}
TOP_LEVEL = Path(__file__).resolve().parents[1] / "sops"


def test_shipped_sops_validate_and_are_the_top_level_files() -> None:
    found = find_sops()
    assert SHIPPED <= set(found)
    for name, (sop, path) in found.items():
        assert path.parent == BUILTIN_DIR
        assert (TOP_LEVEL / path.name).read_text() == path.read_text()


def _write(tmp_path: Path, data: dict, name: str = "mine.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def _base() -> dict:
    return yaml.safe_load((TOP_LEVEL / "text_to_video.yaml").read_text())


@pytest.mark.parametrize("change, expected", [
    (lambda d: d["steps"][1].update(colour="red"), "step 'image', field 'colour': Extra inputs are not permitted"),
    (lambda d: d["steps"][1].update(tool="paint"), "step 'image', field 'tool': unknown tool 'paint'"),
    (lambda d: d["steps"][1].update(agent="painter"), "step 'image', field 'agent': unknown agent 'painter'"),
    (lambda d: d["steps"][1]["args"].update(width="wide"), "step 'image', field 'args.width': Input should be a valid integer"),
    (lambda d: d["steps"][1]["args"].update(colour=3), "step 'image', field 'args.colour': tool 'text_to_image' has no parameter 'colour'"),
    (lambda d: d["steps"][0]["args"].update(prompt="{{ steps.image.output }}"), "step 'enhance', field 'args.prompt': 'steps.image' is not an earlier step"),
    (lambda d: d["steps"][0]["args"].update(prompt="{{ inputs.mood }}"), "step 'enhance', field 'args.prompt': unknown input 'mood'"),
    (lambda d: d["steps"][0]["args"].update(prompt="{{ inputs.prompt "), "step 'enhance', field 'args.prompt': template syntax error"),
    (lambda d: d["steps"][2]["repeat"]["chain"].update(into="picture"), "step 'segments', field 'repeat.chain.into'"),
    (lambda d: d["inputs"]["prompt"].update(min=3), "field 'inputs.prompt': Value error, min/max apply to number inputs only"),
    (lambda d: d["outputs"].pop("result"), "outputs must define 'result'"),
    (lambda d: d["steps"].append(dict(d["steps"][0])), "duplicate step ids: enhance"),
])
def test_broken_sops_name_file_step_and_field(tmp_path: Path, change, expected) -> None:
    data = _base()
    change(data)
    path = _write(tmp_path, data)
    if expected is None:
        load_sop(path)
        return
    with pytest.raises(SOPError) as err:
        load_sop(path)
    assert str(err.value).startswith(str(path))
    assert expected in str(err.value)


def test_yaml_errors_and_non_mappings(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(SOPError, match="not valid YAML"):
        load_sop(bad)
    bad.write_text("- a list\n")
    with pytest.raises(SOPError, match="must be a YAML mapping"):
        load_sop(bad)


def test_user_sops_are_found_by_flag_and_env(tmp_path: Path, monkeypatch) -> None:
    data = _base()
    data["name"] = "slow_zoom"
    data["steps"][2]["args"]["motion_bucket_id"] = 60
    folder = tmp_path / "mine"
    folder.mkdir()
    _write(folder, data)
    assert "slow_zoom" in find_sops(folder)
    monkeypatch.setenv("MORA_SOPS", str(folder))
    sop = find_sops()["slow_zoom"][0]
    assert sop.steps[2].args["motion_bucket_id"] == 60


def test_render_keeps_types_for_single_expressions() -> None:
    context = {"inputs": {"duration": 12.0, "prompt": "fox"}, "steps": {}}
    assert render("{{ inputs.duration }}", context) == 12.0
    assert render("{{ inputs.prompt }} In digital world style", context) == "fox In digital world style"
    assert render({"a": ["{{ inputs.duration * 2 }}", 3]}, context) == {"a": [24.0, 3]}
    assert render("{{ [1] + [2] }}", context) == [1, 2]
