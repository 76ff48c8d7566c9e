"""The page of `mora serve` in a real browser: Debian's Chromium driven by Playwright, headless; one test per view.

Every view is checked at desktop and at phone width: a screenshot of each (into $MORA_SCREENSHOTS, default the
test's temporary folder), no console error, and axe-core's accessibility rules (its script comes from the
axe-playwright-python package) with no serious or critical violation.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import axe_playwright_python
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from serve_server import Server
from studio_folders import make_data_folder, make_loop_folder

from mora_agents.runs.catalog import read_info
from mora_agents.runs.transcript import read_transcript
from mora_agents.sop.loader import BUILTIN_DIR

AXE = (Path(axe_playwright_python.__file__).parent / "axe.min.js").read_text(encoding="utf-8")
SIZES = {"desktop": {"width": 1280, "height": 860}, "phone": {"width": 390, "height": 844}}


def chromium() -> str:
    path = os.environ.get("MORA_CHROMIUM") or next(
        (p for p in ("/usr/bin/chromium", shutil.which("chromium")) if p and Path(p).is_file()), None)
    if path is None:
        pytest.fail("Chromium not found: install Debian's chromium package (CI does) or set MORA_CHROMIUM")
    return path


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A tiny server with a data folder (one set undecided) and a loop folder (one trained iteration)."""
    root = tmp_path_factory.mktemp("studio")
    data = make_data_folder(root / "data")
    loop = make_loop_folder(root / "loop", data)
    server = Server(root, "--data", str(data), "--data", str(loop)).start()
    server.data, server.loop = data, loop
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(os.environ.get("MORA_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class Tab:
    """A page with its console errors collected (the page's content security policy refusing anything would be
    one)."""

    def __init__(self, browser: Browser, width: int = 1280, height: int = 860) -> None:
        self.context = browser.new_context(viewport={"width": width, "height": height})
        self.errors: list[str] = []
        self.page = self.new_page()

    def new_page(self) -> Page:
        page = self.context.new_page()
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        return page

    def close(self) -> None:
        self.context.close()
        assert self.errors == []


@pytest.fixture
def tab(browser: Browser) -> Iterator[Tab]:
    tab = Tab(browser)
    yield tab
    tab.close()


def accessible(page: Page, name: str, shots: Path) -> None:
    """axe-core on the page as it is: no serious or critical violation (all of them saved beside the screenshots)."""
    page.evaluate(AXE)  # through the DevTools protocol: the page's policy does not apply, nothing is left in it
    found = page.evaluate("async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
                          ".map((v) => ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map((n) => n.target)}))")
    (shots / f"{name}.axe.json").write_text(json.dumps(found, indent=1), encoding="utf-8")
    assert [v for v in found if v["impact"] in ("serious", "critical")] == []


def check_view(page: Page, name: str, shots: Path, ready: str) -> None:
    """Screenshots at desktop and phone width (each after `ready` shows, from the top of the page) and axe-core's
    check at both."""
    for size, viewport in SIZES.items():
        page.set_viewport_size(viewport)
        expect(page.locator(ready).first).to_be_visible()
        page.evaluate("window.scrollTo({top: 0, behavior: 'instant'})")
        page.wait_for_timeout(400)  # layout and images settle
        page.screenshot(path=shots / f"{name}-{size}.png")
        accessible(page, f"{name}-{size}", shots)
    page.set_viewport_size(SIZES["desktop"])


def review_next(page: Page, step: str) -> None:
    review = page.locator(".review:not([hidden])")
    expect(review).to_contain_text(f"Review · step {step}", timeout=90_000)
    expect(review).to_be_in_viewport()  # sticky: in view wherever the conversation is scrolled
    review.locator("button.next").click()
    decided = f"decision on {step.partition('#')[0]}: next (by web)"  # a record names the step, not its iteration
    expect(page.locator(f".rec[data-type=ReviewDecision]:has-text('{decided}')").first).to_be_attached()


def test_create_a_run_follow_it_review_it_and_keep_the_chat(studio: Server, tab: Tab, shots: Path) -> None:
    page = tab.page
    page.goto(studio.url)
    expect(page.locator("#banner")).to_contain_text("tiny preset")
    check_view(page, "create-empty", shots, "#empty")
    page.fill("#text", "a red fox running through snow, 1 second")
    expect(page.locator("#review")).to_be_checked()
    page.click("#send")
    run = page.locator("article.run")
    expect(run.locator(".rec[data-type=Plan]")).to_contain_text("plan: task text_to_video")
    run_id = run.get_attribute("data-run")
    review_next(page, "enhance")
    expect(page.locator(".review:not([hidden])")).to_contain_text("Review · step image", timeout=90_000)
    check_view(page, "create-review", shots, ".review:not([hidden])")
    page.evaluate("window.scrollTo({top: 0, behavior: 'instant'})")  # the person scrolls up: the page stays there
    review_next(page, "image")  # the review panel is sticky: in view from the top too
    expect(page.locator(".latest")).to_be_visible()  # new records came below
    assert page.evaluate("window.scrollY") < 50
    page.click(".latest")  # back down: the page follows the records again

    expect(run).to_have_attribute("data-status", "finished", timeout=180_000)
    # the result: large, at the top, with its poster, and only there
    result = run.locator(".result video")
    expect(result).to_be_visible()
    assert result.get_attribute("poster") == f"/api/runs/{run_id}/poster/result.mp4"
    assert result.evaluate("(v) => v.getBoundingClientRect().width") > 600
    played = result.evaluate("async (v) => { await v.play(); const t = v.currentTime;"
                             " await new Promise((r) => setTimeout(r, 800)); return [t, v.currentTime]; }")
    assert played[1] > played[0], played
    expect(run.locator(".rec[data-type=RunFinished] video")).to_have_count(0)
    # tool calls: one folded line each (agent, tool and key arguments, time), the JSON a click away
    call = run.locator(".rec.call:has-text('text_to_image(prompt:')").first
    expect(call.locator("summary")).to_contain_text("took")
    expect(call.locator("pre.json").first).to_be_hidden()
    call.locator("summary").click()
    expect(call.locator("pre.json").first).to_contain_text('"prompt"')
    assert "Event" not in run.inner_text()  # no internal type names (ToolCallExecutionEvent, ...)
    # the strip: a thumbnail per step and segment, clicking one goes to its record
    thumbs = run.locator(".strip .thumb")
    expect(thumbs).to_have_count(4)  # enhance, image, segments, join
    thumbs.nth(1).click()
    expect(run.locator(".rec.flash[data-type=StepResult]")).to_contain_text("result of image")
    assert page.evaluate("document.querySelector('.strip img[src*=poster]').naturalWidth") > 0
    check_view(page, "create-result", shots, ".result video")

    page.reload()  # the conversation is the server's: a reload and a second tab show it
    expect(page.locator(f"article.run[data-run='{run_id}']")).to_have_attribute("data-status", "finished")
    other = tab.new_page()
    other.goto(studio.url)
    expect(other.locator(f"article.run[data-run='{run_id}'] .result video")).to_be_visible()
    session = page.evaluate("localStorage.getItem('mora.session')")
    assert json.loads((studio.out / ".sessions" / f"{session}.json").read_text())["runs"] == [run_id]
    page.click("#new-chat")
    expect(page.locator("article.run")).to_have_count(0)
    expect(other.locator("article.run")).to_have_count(0)  # the other tab follows the new chat


def test_training_shows_the_loop_and_its_adapters_start_a_run(studio: Server, tab: Tab, shots: Path) -> None:
    page = tab.page
    page.goto(f"{studio.url}/#training")
    expect(page.locator("#training-pick")).to_have_value("loop")
    charts = page.locator("#training-view .chart")
    expect(charts).to_have_count(3)  # validation loss and held-out metrics per iteration; the training's loss
    expect(charts.nth(0).locator("polyline")).to_have_count(2)  # image_to_video and total
    expect(charts.nth(1)).to_contain_text("subject_consistency")
    expect(page.locator("#training-view tbody tr")).to_have_count(2)
    expect(page.locator("#training-view tbody tr").nth(1)).to_contain_text("0.8600")
    adapters = str(studio.loop / "iter-1" / "adapters")
    card = page.locator(f"[data-adapters='{adapters}']")
    expect(card).to_contain_text("2 steps")
    expect(card.locator("polyline").first).to_be_attached()
    expect(card.locator(".command")).to_contain_text(f"mora run --adapters {adapters}")
    check_view(page, "training", shots, "#training-view .chart")

    card.locator("button.use").click()  # a run with these adapters
    expect(page.locator("#adapters")).to_have_value(adapters)
    page.fill("#text", "a lighthouse in a storm")
    page.uncheck("#review")
    page.click("#send")
    run = page.locator("article.run").last
    expect(run).to_contain_text("fine-tuned: iter-1/adapters")
    run_id = run.get_attribute("data-run")
    assert str(read_info(studio.out / run_id)["adapters"]) == adapters
    run.locator("button.cancel").click()
    expect(run).to_have_attribute("data-status", "stopped", timeout=60_000)


def test_runs_gallery_filters_opens_and_deletes(studio: Server, tab: Tab, shots: Path) -> None:
    page = tab.page
    page.goto(f"{studio.url}/#runs")
    cards = page.locator(".run-card")
    expect(cards).to_have_count(2)
    finished = page.locator(".run-card[data-status=finished]")
    expect(finished.locator(".cover img")).to_be_visible()
    assert finished.locator(".cover img").evaluate("(img) => img.complete && img.naturalWidth > 0")
    expect(finished).to_contain_text("text_to_video")
    check_view(page, "runs", shots, ".run-card img")

    page.select_option("#run-status", "stopped")
    expect(cards).to_have_count(1)
    stopped = page.locator(".run-card[data-status=stopped]")
    expect(stopped.locator("button.resume")).to_be_visible()
    page.fill("#run-search", "no such request")
    expect(cards).to_have_count(0)
    expect(page.locator("#run-none")).to_be_visible()
    page.fill("#run-search", "")
    page.select_option("#run-status", "")

    run_id = stopped.get_attribute("data-run")
    page.once("dialog", lambda dialog: dialog.accept())
    stopped.locator("button.delete").click()
    expect(cards).to_have_count(1)
    assert not (studio.out / run_id).exists()

    finished.locator("button.open").click()
    expect(page).to_have_url(f"{studio.url}/#run/{finished.get_attribute('data-run')}")
    expect(page.locator("#run-one .result video")).to_be_visible()
    check_view(page, "run", shots, "#run-one .strip img")


def test_data_review_decides_a_set_with_the_keyboard(studio: Server, tab: Tab, shots: Path) -> None:
    page = tab.page
    page.goto(f"{studio.url}/#data")
    expect(page.locator("#data-folder")).to_have_value("data")
    view = page.locator("#set-view")
    expect(view.locator(".panel-title")).to_have_text("Set p001")  # the undecided set first
    expect(view.locator(".candidate video")).to_have_count(3)
    expect(view.locator(".vote").first).to_contain_text("ranks 3 › 1 › 2")
    expect(view.locator(".vote").first).to_contain_text("candidate 1 keeps the boat in frame".capitalize())
    expect(view.locator(".vote").first).to_contain_text("1→3, 2→1, 3→2")  # the labels it was shown
    expect(view.locator(".vote").nth(1)).to_contain_text("ranks 1 › 3 › 2")
    check_view(page, "data-review", shots, ".candidate video")

    page.keyboard.press("3")
    expect(page.locator(".set-item[data-set=p001] .pill")).to_have_text("accepted")
    selection = json.loads((studio.data / "selection.json").read_text())["sets"]["p001"]
    assert selection["status"] == "accepted" and selection["decision"]["candidate"] == 3
    assert selection["decision"]["by"] == "person:web" and selection["sample"]
    samples = [json.loads(line) for line in (studio.data / "dataset" / "metadata.jsonl").read_text().splitlines()]
    assert {(s["set"], s["candidate"]) for s in samples} == {("p001", 3), ("p002", 2)}
    page.click(".set-item[data-set=p001]")
    expect(view.locator(".candidate.chosen")).to_have_attribute("data-candidate", "3")
    expect(view.locator("button.pick")).to_have_count(0)


def test_sop_editor_highlights_draws_validates_and_saves(studio: Server, tab: Tab, shots: Path) -> None:
    page = tab.page
    page.goto(f"{studio.url}/#sops")
    page.click("#sop-list button[data-name=text_to_video][data-origin=shipped]")
    expect(page.locator("#sop-check")).to_have_text("valid: text_to_video")
    expect(page.locator("#sop-highlight .y-key").first).to_have_text("name")
    expect(page.locator("#sop-highlight .y-template").first).to_be_attached()
    nodes = page.locator("#sop-diagram .node")
    expect(nodes).to_have_count(4)
    expect(nodes.nth(2)).to_contain_text("uses image, enhance")
    check_view(page, "sops", shots, "#sop-diagram .node")

    text = (BUILTIN_DIR / "text_to_video.yaml").read_text()
    page.fill("#sop-yaml", text.replace("tool: text_to_image", "tool: text_to_imagex"))
    expect(page.locator("#sop-check.error")).to_contain_text("step 'image', field 'tool': unknown tool 'text_to_imagex'")
    expect(page.locator("#sop-save")).to_be_disabled()
    expect(page.locator("#sop-diagram")).to_have_class("diagram stale")
    renamed = text.replace("name: text_to_video", "name: fox_video").replace("  - id: join", "  - id: tail\n"
                           "    agent: media_agent\n    tool: last_frame\n    args: {video: \"{{ steps.segments.output }}\"}\n"
                           "  - id: join")
    page.fill("#sop-yaml", renamed)
    expect(page.locator("#sop-check.ok")).to_have_text("valid: fox_video")
    expect(nodes).to_have_count(5)  # the diagram follows the text
    page.click("#sop-save")
    expect(page.locator("#sop-title")).to_contain_text("fox_video")  # the title follows the save
    expect(page.locator("#sop-title")).to_contain_text("yours")
    assert (studio.sops / "fox_video.yaml").read_text() == renamed
    page.click("#sop-run")
    expect(page.locator("#task")).to_have_value("fox_video")


def test_api_docs_work_offline(studio: Server, tab: Tab) -> None:
    page = tab.page
    outside: list[str] = []
    page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(studio.url) else None)
    page.goto(f"{studio.url}/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("mora serve")
    expect(page.locator(".opblock-summary-path[data-path='/api/runs/{run_id}']").first).to_be_visible()
    assert outside == []


def records_of(run_dir: Path, suffix: str) -> list[dict]:
    """The contents of a run's records whose type ends with `suffix` (`[ReviewDecision]`), in order."""
    return [r.message["content"] for r in read_transcript(run_dir / "transcript.jsonl") if r.type.endswith(suffix)]


def test_a_story_reviewed_on_the_page(studio: Server, tab: Tab, shots: Path) -> None:
    """A story made on the page with best of 2: its storyboard edited in place (a refused edit first), the judges'
    pick overruled, the run stopped between steps and its storyboard revised (a shot added, the first one kept)."""
    page = tab.page
    page.goto(studio.url)
    page.select_option("#task", "story")
    page.select_option("#candidates", "2")
    page.fill("#text", "a story: a fox in the snow, 2 shots")
    page.click("#send")
    run = page.locator("article.run")
    story, review = run.locator(".story"), page.locator(".review:not([hidden])")
    expect(review).to_contain_text("Review · step storyboard", timeout=90_000)
    run_id = run.get_attribute("data-run")
    assert read_info(studio.out / run_id)["candidates"] == 2  # the request's `candidates`

    # the storyboard's review: fields edited in place, a shot removed; a refused edit keeps the person's edits
    expect(story.locator(".shot.editing")).to_have_count(2)
    expect(story.locator(".cast-card.editing")).to_have_count(2)  # the fox and the snowfield
    story.locator(".shot[data-shot='1'] .shot-camera").fill("close-up, slow dolly-in")
    story.locator(".shot[data-shot='2'] .remove-shot").click()
    expect(story.locator(".shot.editing")).to_have_count(1)
    story.locator(".shot-duration").fill("")
    expect(review.locator("button.next")).to_have_text("Approve edits")
    review.locator("button.next").click()
    expect(review.locator(".error")).to_have_text(re.compile(r"^shots\.0\.duration: Input should be a valid number"))
    tab.errors.remove("Failed to load resource: the server responded with a status of 400 (Bad Request)")
    expect(story.locator(".shot-duration")).to_have_attribute("aria-invalid", "true")
    expect(story.locator(".shot-camera")).to_have_value("close-up, slow dolly-in")  # the edits stay
    expect(story.locator(".shot.editing")).to_have_count(1)
    story.locator(".shot-duration").fill("2.5")
    check_view(page, "story-edit", shots, ".story .shot.editing")
    review.locator("button.next").click()
    expect(story.locator(".shot:not(.editing) .camera")).to_have_text("close-up, slow dolly-in")
    expect(story.locator(".shot")).to_have_count(1)
    review_next(page, "sheets")
    review_next(page, "sheets#1")
    expect(story.locator(".cast-card .slot-thumb img")).to_have_count(2)  # the reference sheets

    # the best-of pick: the candidates side by side, each judge's ranking and reason; Pick N overrules them
    expect(review).to_contain_text("Review · step keyframes", timeout=90_000)
    expect(review.locator(".candidate img")).to_have_count(2)
    expect(review.locator(".vote")).to_have_count(2)  # the metric judges, offline
    expect(review.locator(".vote").first).to_contain_text(re.compile(r"ranks [12] › [12]"))
    expect(review.locator(".vote").first).to_contain_text(re.compile(r"\(label→candidate\): 1→[12], 2→[12]"))
    check_view(page, "story-pick", shots, ".review .candidate img")
    judged = int(review.locator(".candidate.chosen").get_attribute("data-candidate"))
    other = 3 - judged
    review.locator(f".candidate[data-candidate='{other}'] button.pick").click()
    expect(review).to_contain_text(f"candidate {other} picked by a person", timeout=60_000)
    expect(review.locator(".candidate.chosen")).to_have_attribute("data-candidate", str(other))
    review.locator("button.next").click()

    # stopped between steps, then revised: a shot added after the first, which is kept
    expect(run).to_have_attribute("data-status", "running")
    run.locator("button.cancel").click()
    expect(run).to_have_attribute("data-status", "stopped", timeout=60_000)
    run.locator("button.revise").click()
    expect(review).to_contain_text("Review · step storyboard", timeout=60_000)
    story.locator(".shot[data-shot='1'] .add-after").click()
    story.locator(".shot[data-shot='2'] .shot-description").fill("the fox curls up to sleep under a pine")
    review.locator("button.next").click()
    expect(story.locator(".shot")).to_have_count(2)
    expect(review).to_contain_text("Review · step keyframes#1", timeout=90_000)
    review.locator("button.next").click()
    expect(run).to_have_attribute("data-status", "finished", timeout=180_000)

    # the storyboard follows the run: each shot's keyframe and clip; a click goes to its message
    expect(story.locator(".shot .slot-thumb")).to_have_count(4)
    story.locator(".shot[data-shot='1'] .slot-keyframe button").click()
    expect(run.locator(".rec.flash[data-type=StepResult]")).to_contain_text("result of keyframes: artifacts/keyframes-c"
                                                                           f"{other}.png")
    check_view(page, "story", shots, ".story .slot-clip img")
    page.goto(f"{studio.url}/#run/{run_id}")  # the run's own view, for a picture of its storyboard alone
    expect(page.locator("#run-one .story .slot-thumb")).to_have_count(6)  # the sheets, keyframes and clips
    page.locator("#run-one .story").evaluate("(node) => node.scrollIntoView({block: 'center'})")
    page.wait_for_timeout(400)
    page.locator("#run-one .story").screenshot(path=shots / "story-board.png")

    run_dir = studio.out / run_id
    board = read_info(run_dir)["storyboard"]
    assert [(s["camera"], s["duration"]) for s in board["shots"]] == [("close-up, slow dolly-in", 2.5),
                                                                       ("close-up, slow dolly-in", 2.5)]
    assert board["shots"][1]["description"] == "the fox curls up to sleep under a pine"
    decisions = [(d["step"], d["iteration"], d["decision"], d["by"]) for d in records_of(run_dir, "[ReviewDecision]")]
    assert decisions == [("storyboard", 0, "edit", "web"), ("sheets", 0, "next", "web"), ("sheets", 1, "next", "web"),
                         ("keyframes", 0, "edit", "web"), ("keyframes", 0, "next", "web"),
                         ("storyboard", 0, "edit", "web"), ("keyframes", 1, "next", "web")]
    picks = [r for r in records_of(run_dir, "[StepResult]") if r["step"] == "keyframes"]
    assert [(p["iteration"], p["details"]["chosen"], p["details"]["by"]) for p in picks] == [
        (0, judged, "judges"), (0, other, "person"), (1, picks[2]["details"]["chosen"], "judges")]  # shot 1 kept
    made = [(r["step"], r["iteration"]) for r in records_of(run_dir, "[StepResult]") if ".candidate" in r["step"]]
    assert sorted(made) == sorted((f"{step}.candidate{n}", shot) for step in ("keyframes", "clips") for n in (1, 2)
                                  for shot in (0, 1))  # each candidate made once: the first shot's kept
