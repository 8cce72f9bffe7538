"""The Jobs and Monitor pages update from their SSE streams in a real browser (Debian's
Chromium via Playwright), without reloads or timers: a job created and cancelled through
the API shows up and changes status in the open Jobs page; a worker started by a player
request appears in the open Monitor page and goes when stopped."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from streamlab.testing.daemon import Daemon
from streamlab.testing.fixtures import install_test_item
from tests.integration.dashboard_helpers import (
    CHROMIUM,
    CHROMIUM_ARGS,
    ConsoleErrors,
    browser_marks,
    ffmpeg_path,
)

pytestmark = browser_marks()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, test_item: str) -> Iterator[Daemon]:
    d = Daemon(str(tmp_path_factory.mktemp("dashlive")), config={"live": {"worker_idle_timeout": "600"}})
    install_test_item(d.media_dir, source=test_item)
    d.start()
    yield d
    d.stop()


@pytest.fixture(scope="module")
def page(daemon: Daemon) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        pg = browser.new_page()
        pg.set_default_timeout(15000)
        pg.errors = ConsoleErrors(pg)
        yield pg
        browser.close()


def test_monitor_shows_workers_live(daemon: Daemon, page: Any) -> None:
    page.goto(f"http://127.0.0.1:{daemon.port}/dashboard/#/monitor")
    page.wait_for_selector("p.empty")  # no worker yet
    assert daemon.get("/go-live/testclip/master.m3u8").status == 200  # a player starts one
    page.wait_for_selector("h2:has-text('testclip')")
    assert daemon.request("DELETE", "/go-live/api/stop/testclip").status == 200
    page.wait_for_selector("p.empty")
    assert page.errors.items == []


def test_jobs_list_follows_create_and_cancel(daemon: Daemon, page: Any, tmp_path: Any) -> None:
    ffmpeg = ffmpeg_path()
    if ffmpeg is None:
        pytest.skip("ffmpeg not installed")
    page.goto(f"http://127.0.0.1:{daemon.port}/dashboard/#/jobs")
    page.wait_for_selector("table.jobs")
    originals = os.path.join(daemon.media_dir, "originals")
    os.makedirs(originals, exist_ok=True)
    clip = str(tmp_path / "livelist.mp4")
    subprocess.run([ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
                    "-i", "testsrc2=size=640x360:rate=30:duration=10", "-c:v", "libx264",
                    "-preset", "ultrafast", "-pix_fmt", "yuv420p", clip], check=True, timeout=60)
    shutil.copy(clip, originals)
    assert daemon.request("POST", "/api/sources/scan-originals").status == 200
    source = next(s for s in daemon.get("/api/sources").json() if s["file_path"] == "originals/livelist.mp4")
    r = daemon.request("POST", f"/api/sources/{source['source_id']}/reencode",
                       {"codec_selection": "h264", "output_name": "livelist", "max_resolution": "360p"})
    assert r.status == 200, r.text
    (job_id,) = r.json()["job_ids"]
    row = f"tr[data-job='{job_id}']"
    page.wait_for_selector(row)
    status = daemon.request("POST", f"/api/jobs/{job_id}/cancel")
    if status.status == 200:
        page.wait_for_selector(f"{row} :text('cancelled')")
    assert daemon.request("DELETE", f"/api/jobs/{job_id}").status == 200
    page.wait_for_selector(row, state="detached")
    assert page.errors.items == []
