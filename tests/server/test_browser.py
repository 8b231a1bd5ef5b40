"""The web page in Debian's Chromium (Playwright), against a real uvicorn server on 127.0.0.1 with
an indexed tiny library: type a query, see results, open an image's detail view, drop an image.

Never skipped: a machine without /usr/bin/chromium fails here, loudly (CI installs it; see .ci/run).
Screenshots go to the test's tmp folder, and also to $TAGLENS_SCREENSHOT_DIR when that is set.
"""

from __future__ import annotations

import io
import os
import shutil
import time
from pathlib import Path

import pytest
from PIL import Image

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync"]


@pytest.fixture
def page(live_server):
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: apt-get install -y chromium (the browser test needs it)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        tab = browser.new_page(viewport={"width": 1280, "height": 900})
        tab.set_default_timeout(30_000)
        tab.outside, tab.problems = [], []
        tab.on("request", lambda r: tab.outside.append(r.url) if not r.url.startswith(
            (live_server.url + "/", "blob:", "data:")) else None)
        tab.on("console", lambda m: tab.problems.append(m.text) if m.type == "error" else None)
        tab.on("pageerror", lambda e: tab.problems.append(str(e)))
        yield tab
        browser.close()


def wait_until(page, expression: str, timeout: float = 30.0) -> None:
    """Poll ``expression`` in the page from here: Playwright's `wait_for_function` re-evaluates a
    string with eval inside the page, which the page's Content-Security-Policy rightly refuses."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"timed out waiting for {expression}"
        page.wait_for_timeout(100)


def shot(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("TAGLENS_SCREENSHOT_DIR"):
        shutil.copy(path, Path(os.environ["TAGLENS_SCREENSHOT_DIR"]) / name)
    return path


# the page's default labels are longer than the tiny test SigLIP's 16 text tokens
@pytest.mark.filterwarnings("ignore::taglens.errors.PromptTruncatedWarning")
def test_search_inspect_and_drop(page, live_server, library, tmp_path):
    page.goto(live_server.url + "/")
    page.wait_for_selector("#status:has-text('Ready')")

    # type a query, see results as a thumbnail grid with scores
    page.fill("#q", "a red car")
    page.press("#q", "Enter")
    page.wait_for_selector("#status:has-text('results')")
    cards = page.locator("#results .card")
    assert cards.count() == 12
    wait_until(page, "[...document.querySelectorAll('#results .card img')].every(i => i.complete && "
                     "i.naturalWidth > 0)")
    assert page.locator("#results .card .score").first.inner_text().startswith("score 0.")
    flagged = page.locator("#results .thumb.blurred")
    assert flagged.count() >= 1, "the library has flagged images; they start blurred"
    shot(page, tmp_path, "1-results.png")

    # NSFW thumbnails are blurred until clicked; the next click opens the detail view
    image_id = page.locator("#results .card", has=page.locator(".thumb.blurred")).first.get_attribute("data-id")
    blurred_card = page.locator(f"#results .card[data-id='{image_id}']")
    blurred_card.click()
    assert blurred_card.locator(".thumb.blurred").count() == 0
    blurred_card.click()
    page.wait_for_selector("#detail:not([hidden])")
    page.wait_for_selector("#detail-similar .card")
    wait_until(page, "document.querySelector('#detail-image').naturalWidth > 0")
    title = page.inner_text("#detail-title")
    assert title.startswith("img") and title.endswith(".jpg")
    assert page.locator("#detail-tags li").count() >= 1
    assert page.locator("#detail-nsfw li").count() == 2  # normal, nsfw
    assert page.locator("#detail-similar .card").count() == 11  # every other image, not itself
    shot(page, tmp_path, "2-detail.png")
    page.keyboard.press("Escape")
    assert page.locator("#detail").is_hidden()

    # drop an image onto the page: it is tagged at once, and can be searched by
    png = io.BytesIO()
    Image.open(library["paths"][3]).save(png, "PNG")
    transfer = page.evaluate_handle(
        "(bytes) => { const t = new DataTransfer(); "
        "t.items.add(new File([new Uint8Array(bytes)], 'dropped.png', {type: 'image/png'})); return t; }",
        list(png.getvalue()))
    page.dispatch_event("body", "dragenter", {"dataTransfer": transfer})
    assert page.locator("#drop-overlay").is_visible()
    page.dispatch_event("body", "drop", {"dataTransfer": transfer})
    page.wait_for_selector("#analysis section")
    assert page.locator("#drop-overlay").is_hidden()
    headings = page.locator("#analysis h3").all_inner_texts()
    assert [h.split(":")[0] for h in headings] == ["TAGS", "LABELS", "NSFW"] or \
        [h.split(":")[0] for h in headings] == ["Tags", "Labels", "NSFW"]
    page.click("#find-similar")
    page.wait_for_selector("#status:has-text('images like dropped.png')")
    first = page.locator("#results .card").first
    assert first.get_attribute("title") == str(library["paths"][3])
    assert first.locator(".score").inner_text() == "score 1.000"
    wait_until(page, "[...document.querySelectorAll('#results .card img')].every(i => i.complete)")
    shot(page, tmp_path, "3-dropped.png")

    assert page.outside == [], f"the page fetched from elsewhere: {page.outside}"
    assert page.problems == [], f"errors in the page: {page.problems}"


def test_an_unknown_tag_filter_is_named_and_its_box_marked(page, live_server, tmp_path):
    page.goto(live_server.url + "/")
    page.wait_for_selector("#status:has-text('Ready')")
    page.fill("#q", "a red car")
    page.click("#filters summary")
    page.fill("#no-tags", "Lnog Hair")
    page.click("#filters summary")  # closed again: the page opens it to show the marked box
    page.press("#q", "Enter")
    page.wait_for_selector("#status.error:has-text('Unknown tag')")
    assert page.locator("#no-tags").is_visible()
    text = page.inner_text("#status")
    assert "“Lnog Hair”" in text and "did you mean 'long_hair'" in text, text
    assert page.get_attribute("#no-tags", "aria-invalid") == "true"
    assert page.get_attribute("#tags", "aria-invalid") is None
    shot(page, tmp_path, "4-unknown-tag.png")
    page.fill("#no-tags", "long hair")  # known, in any spelling: the search runs and the mark goes
    page.press("#q", "Enter")
    page.wait_for_selector("#status:has-text('results')")
    assert page.get_attribute("#no-tags", "aria-invalid") is None
    assert [p for p in page.problems if "422" not in p] == [], page.problems
