"""The page of `mora serve` in a real browser: Debian's Chromium driven by Playwright, headless.

Screenshots of every step go to $MORA_SCREENSHOTS (default: the test's temporary folder).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright
from serve_server import Server

from mora_agents.sop.loader import BUILTIN_DIR


def chromium() -> str:
    path = os.environ.get("MORA_CHROMIUM") or next(
        (p for p in ("/usr/bin/chromium", shutil.which("chromium")) if p and Path(p).is_file()), None)
    if path is None:
        pytest.fail("Chromium not found: install Debian's chromium package (CI does) or set MORA_CHROMIUM")
    return path


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("MORA_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def review_and_accept(page: Page, other: Page, step: str, shot: Path) -> None:
    """Both tabs show the review of `step`; Next in the first one takes it away in both."""
    for tab in (page, other):
        expect(tab.locator(".review:not([hidden])")).to_contain_text(f"Review of step {step}", timeout=60_000)
    page.locator(".review:not([hidden])").scroll_into_view_if_needed()
    page.screenshot(path=shot)
    page.locator(".review:not([hidden]) button.next").click()
    for tab in (page, other):
        expect(tab.locator(f".msg[data-type=ReviewDecision]:has-text('decision on {step}: next (by web)')")
               ).to_be_visible()


def test_chat_review_video_sop_editor_and_transcript_in_chromium(server: Server, shots: Path) -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), headless=True)
        context = browser.new_context(viewport={"width": 1280, "height": 860})
        page, other = context.new_page(), context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        # under the page's own content security policy: anything it refuses would be a console error
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        try:
            page.goto(server.url)
            expect(page.locator("#banner")).to_contain_text("preset tiny")
            page.screenshot(path=shots / "01-page.png")

            page.fill("#text", "a red fox running through snow, 1 second")
            expect(page.locator("#review")).to_be_checked()
            page.click("#send")
            expect(page.locator(".msg[data-type=Plan]")).to_contain_text("plan: task text_to_video")
            run_id = page.locator("article.run").get_attribute("data-run")
            page.screenshot(path=shots / "02-messages.png")
            other.goto(server.url)  # a second tab joins the running chat
            review_and_accept(page, other, "enhance", shots / "03-review.png")
            review_and_accept(page, other, "image", shots / "04-review-image.png")
            expect(page.locator(".progress:not([hidden])")).to_contain_text("image_to_video (segments): step", timeout=30_000)
            page.locator(".progress").scroll_into_view_if_needed()
            page.screenshot(path=shots / "05-progress.png")

            expect(page.locator(f"article[data-run='{run_id}']")).to_have_attribute("data-status", "finished",
                                                                                  timeout=120_000)
            video = page.locator(".msg[data-type=RunFinished] video")
            played = video.evaluate("async (v) => { await v.play(); const t = v.currentTime;"
                                    " await new Promise((r) => setTimeout(r, 1000)); return [t, v.currentTime]; }")
            assert played[1] > played[0], played  # the clip plays: its time advances
            video.scroll_into_view_if_needed()
            page.screenshot(path=shots / "06-result.png")
            expect(other.locator(f"article[data-run='{run_id}']")).to_have_attribute("data-status", "finished")

            page.click(".tab[data-tab=sops]")
            page.click("#sop-list button[data-name=text_to_video][data-origin=shipped]")
            expect(page.locator("#sop-check")).to_have_text("valid: text_to_video")
            text = (BUILTIN_DIR / "text_to_video.yaml").read_text()
            page.fill("#sop-yaml", text.replace("tool: text_to_image", "tool: text_to_imagex"))
            expect(page.locator("#sop-check.error")).to_contain_text(
                "step 'image', field 'tool': unknown tool 'text_to_imagex'")
            expect(page.locator("#sop-save")).to_be_disabled()
            page.screenshot(path=shots / "07-sop-error.png")
            page.fill("#sop-yaml", text.replace("name: text_to_video", "name: fox_video"))
            expect(page.locator("#sop-check.ok")).to_have_text("valid: fox_video")
            page.click("#sop-save")
            expect(page.locator("#sop-saved.ok")).to_contain_text("fox_video.yaml")
            assert (server.sops / "fox_video.yaml").read_text() == text.replace("name: text_to_video", "name: fox_video")
            page.screenshot(path=shots / "08-sop-saved.png")
            page.click("#sop-run")  # run a request with it: the chat, with the task chosen
            expect(page.locator("#task")).to_have_value("fox_video")

            page.click(".tab[data-tab=runs]")
            page.locator(f"tr[data-run='{run_id}'] button.open").click()
            transcript = page.frame_locator("#transcript")
            expect(transcript.locator("body")).to_contain_text("run finished: result.mp4")
            expect(transcript.locator("video").first).to_be_attached()
            page.screenshot(path=shots / "09-transcript.png")
            assert errors == []
        finally:
            browser.close()
