"""The web page in a real browser: Debian's headless Chromium driven by Playwright.

Drop a real clip on the page, watch its job finish in the live job list, open the video page
(player, WebVTT track, timeline, attention picture), search for one of its captions and play the
hit from its start time. Screenshots go to test-output/browser/ for a person to look at.

Chromium comes from Debian (`apt-get install -y chromium`, which .ci/run does); Playwright never
downloads a browser of its own here.
"""

from __future__ import annotations

import base64
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parents[2] / "test-output" / "browser"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]
JOB_TIMEOUT_MS = 300_000  # a hang guard, not a speed assertion

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="Debian's chromium is not installed: run `apt-get install -y chromium`",
    ),
]


@pytest.fixture(scope="module")
def page_server(tmp_path_factory: pytest.TempPathFactory, make_module_server) -> Iterator:  # type: ignore[no-untyped-def]
    shutil.rmtree(SHOTS, ignore_errors=True)  # this run's screenshots only
    SHOTS.mkdir(parents=True)
    with make_module_server(tmp_path_factory.mktemp("browser")) as srv:
        yield srv


@pytest.fixture
def page(page_server) -> Iterator:  # type: ignore[no-untyped-def]
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(page_server.url + "/")
        yield page
        browser.close()
        assert errors == [], f"JavaScript errors on the page: {errors}"


def _drop_file(page, path: Path, mime: str) -> None:  # type: ignore[no-untyped-def]
    """Drop a file on the drop zone the way a browser does: a drop event with a DataTransfer."""
    data = base64.b64encode(path.read_bytes()).decode()
    transfer = page.evaluate_handle(
        """([b64, name, mime]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], name, { type: mime }));
            return dt;
        }""",
        [data, path.name, mime],
    )
    page.dispatch_event("#drop", "dragenter", {"dataTransfer": transfer})
    page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})


def test_upload_watch_search_and_play(page, token: str, mp4_clip: Path) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    # The token goes in once; the page keeps it for uploads.
    page.click("details.token summary")
    page.fill("#token", token)
    page.dispatch_event("#token", "change")

    _drop_file(page, mp4_clip, "video/mp4")
    upload = page.locator("#uploads li").first
    expect(upload.locator("a")).to_have_text("queued: open", timeout=60_000)
    assert upload.locator("progress").get_attribute("value") == "100"

    # The job list updates by itself until the job is done.
    row = page.locator("#jobs tr.job", has_text=mp4_clip.name)
    expect(row).to_be_visible()
    expect(row.locator("td.state")).to_have_text("done", timeout=JOB_TIMEOUT_MS)
    page.screenshot(path=str(SHOTS / "1-jobs.png"), full_page=True)

    # The video page: player with the captions track, clips on the timeline, attention.
    row.locator("a").click()
    expect(page.locator("#video-title")).to_have_text(mp4_clip.name)
    expect(page.locator("#timeline .segment").first).to_be_visible()
    n_clips = page.locator("#clips li").count()
    assert n_clips >= 3
    assert page.locator("#timeline .segment").count() == n_clips
    page.wait_for_function(
        "() => { const t = document.querySelector('#player').textTracks[0];"
        " return t && t.cues && t.cues.length > 0; }"
    )
    cues = page.evaluate("document.querySelector('#player').textTracks[0].cues.length")
    assert cues == 2 * n_clips  # one cue per clip and captioner
    expect(page.locator("#attention-wrap")).to_be_visible()
    page.wait_for_function("() => document.querySelector('#player').readyState >= 1")
    duration = page.evaluate("document.querySelector('#player').duration")
    assert duration == pytest.approx(15.0, abs=0.5)  # the browser decodes the stored file
    page.locator("#timeline .segment").nth(1).click()  # seek to the second clip and play
    page.wait_for_function("() => document.querySelector('#player').currentTime >= 4.0")
    expect(page.locator("#timeline .segment").nth(1)).to_have_class("segment active")
    expect(page.locator("#current-caption")).not_to_be_empty()
    page.screenshot(path=str(SHOTS / "2-video.png"), full_page=True)

    # Search for the second clip's caption; its hit plays from the clip's start.
    caption = page.locator("#clips li").nth(2).locator(".caption").first.inner_text()
    query = caption.split(" ", 1)[1]  # drop the model badge
    page.fill("#search-bar-q", query)
    page.press("#search-bar-q", "Enter")
    first = page.locator("#results li").first
    expect(first).to_be_visible()
    page.wait_for_function(
        "() => [...document.querySelectorAll('#results img')].every((i) => i.complete"
        " && i.naturalWidth > 0)"
    )
    # Its score says what it is (the rank fusion of vectors and captions, with its scale once
    # above the results) and the cosine beside it, as the API and `vmm search` say.
    expect(first.locator(".score")).to_have_text(re.compile(r"^rank fusion 0\.0\d{3}$"))
    expect(first.locator(".cosine")).to_have_text(re.compile(r"^ · cosine -?[01]\.\d{3}$"))
    expect(page.locator("#search-notes .legend").first).to_contain_text(
        "score (rank fusion): reciprocal rank fusion")
    start_text = first.locator(".time").inner_text()  # "0:08.0–0:12.0"
    start = _seconds(start_text.split("–")[0])
    first.locator("button.thumb").click()
    expect(page.locator("#search-player")).to_be_visible()
    page.wait_for_function(
        f"() => {{ const v = document.querySelector('#clip-player');"
        f" return !v.paused && v.currentTime >= {start} - 0.05; }}"
    )
    played_from = page.evaluate("document.querySelector('#clip-player').currentTime")
    assert start - 0.05 <= played_from < start + 4.5
    page.screenshot(path=str(SHOTS / "3-search.png"), full_page=True)


def test_an_avi_plays_through_its_browser_copy(page, token: str, avi_clip: Path) -> None:  # type: ignore[no-untyped-def]
    """Chromium cannot play MSVD's AVI (MPEG-4 Part 2): the page loads the H.264 copy instead,
    and the video really plays."""
    from playwright.sync_api import expect

    page.click("details.token summary")
    page.fill("#token", token)
    page.dispatch_event("#token", "change")
    _drop_file(page, avi_clip, "video/x-msvideo")
    row = page.locator("#jobs tr.job", has_text=avi_clip.name)
    expect(row.locator("td.state")).to_have_text("done", timeout=JOB_TIMEOUT_MS)
    row.locator("a").click()
    expect(page.locator("#video-title")).to_have_text(avi_clip.name)
    page.wait_for_function("() => document.querySelector('#player').readyState >= 2")
    assert page.evaluate("document.querySelector('#player').currentSrc").endswith("/preview.mp4")
    assert page.evaluate("document.querySelector('#player').videoWidth") > 0
    page.evaluate("document.querySelector('#player').play()")
    page.wait_for_function("() => document.querySelector('#player').currentTime >= 1.0")
    page.screenshot(path=str(SHOTS / "4-avi.png"), full_page=True)


def _seconds(clock: str) -> float:
    minutes, seconds = clock.split(":")
    return int(minutes) * 60 + float(seconds)
