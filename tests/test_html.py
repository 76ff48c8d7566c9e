"""`mora transcript RUN --html`: one self-contained page with every record, thumbnails and video players."""

from __future__ import annotations

import asyncio
import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mora_agents.cli import app
from mora_agents.runs.runner import RunOptions, run_request
from mora_agents.runs.transcript import read_transcript

pytestmark = pytest.mark.usefixtures("one_torch_thread")
VOID = {"meta", "img", "br", "hr", "input", "link", "source"}


class Page(HTMLParser):
    """Collects ids, links and media, and checks that every non-void tag is closed in order."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.links: list[tuple[str, str]] = []
        self.stack: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if "id" in attributes:
            self.ids.append(attributes["id"] or "")
        for name in ("src", "href"):
            if attributes.get(name):
                self.links.append((tag, attributes[name]))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(f"unexpected </{tag}>")


def test_html_export_shows_every_record_and_links_only_existing_run_files(tmp_path: Path) -> None:
    options = RunOptions(preset="tiny", device="cpu", out=tmp_path / "runs", seed=7)
    run_dir = asyncio.run(run_request("a red fox running through snow", duration=3, options=options)).run_dir
    result = CliRunner().invoke(app, ["transcript", str(run_dir), "--html"])
    assert result.exit_code == 0, result.output
    page_path = run_dir / "transcript.html"
    assert result.output.strip() == str(page_path)
    html = page_path.read_text(encoding="utf-8")
    page = Page()
    page.feed(html)
    page.close()
    assert page.errors == [] and page.stack == []
    records = read_transcript(run_dir / "transcript.jsonl")
    assert page.ids == [f"r{r.seq}" for r in records]
    assert "http://" not in html and "https://" not in html  # self-contained: nothing fetched from elsewhere
    for _, link in page.links:
        assert not Path(link).is_absolute() and (run_dir / link).is_file(), link
    media = {(tag, link) for tag, link in page.links}
    assert ("img", "artifacts/image.png") in media
    assert ("video", "artifacts/segments.mp4") in media and ("video", "result.mp4") in media
    assert html.count("<details") == len(records)  # tool calls and results fold


def test_html_export_of_a_missing_run(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["transcript", str(tmp_path), "--html"])
    assert result.exit_code == 2 and "no transcript.jsonl" in result.output


def test_html_links_only_files_inside_the_run_directory_even_when_hand_edited(tmp_path: Path) -> None:
    options = RunOptions(preset="tiny", device="cpu", out=tmp_path / "runs", seed=7,
                         overrides={"image_to_video": {"frames": 4, "fps": 1}})
    run_dir = asyncio.run(run_request("a red fox running through snow", duration=3, options=options)).run_dir
    secret = tmp_path / "secret.png"
    secret.write_bytes((run_dir / "artifacts" / "image.png").read_bytes())
    (run_dir / "artifacts" / "escape.png").symlink_to(secret)
    (run_dir / "artifacts" / "inside.png").symlink_to(run_dir / "artifacts" / "image.png")
    path = run_dir / "transcript.jsonl"
    records = read_transcript(path)
    (result,) = [r for r in records if r.type.endswith("[StepResult]") and r.message["content"]["step"] == "image"]
    edited = []
    for n, target in enumerate([str(secret), "../../secret.png", "artifacts/escape.png", "artifacts/inside.png",
                                "artifacts/../artifacts/image.png", "javascript:alert(1)"]):
        message = json.loads(json.dumps(result.message))
        message["content"]["output"]["path"] = target
        edited.append(result.model_copy(update={"seq": 100 + n, "message": message}).model_dump_json())
    path.write_text(path.read_text() + "\n".join(edited) + "\n")

    assert CliRunner().invoke(app, ["transcript", str(run_dir), "--html"]).exit_code == 0
    html = (run_dir / "transcript.html").read_text(encoding="utf-8")
    page = Page()
    page.feed(html)
    for _, link in page.links:
        target = (run_dir / link).resolve()
        assert not Path(link).is_absolute() and ".." not in Path(link).parts, link
        assert target.is_relative_to(run_dir.resolve()) and target.is_file(), link
    assert "secret" not in " ".join(link for _, link in page.links)
    assert html.count("not linked (outside the run directory)") == 3
    assert ("img", "artifacts/image.png") in page.links  # inside.png and the `..` detour resolve to the image
