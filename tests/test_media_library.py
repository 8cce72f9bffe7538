"""ContentLibrary on a real media_dir holding copies of the test item."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import pytest_twisted
from twisted.internet import defer, task
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher

from streamlab.errors import NotFound
from streamlab.media.library import ContentLibrary
from streamlab.testing.fixtures import install_test_item


def _corrupt(item: str) -> None:
    with open(os.path.join(item, "content.json"), "w", encoding="utf-8") as fh:
        fh.write("{not json")


@pytest.fixture
def media(tmp_path, test_item) -> str:
    media_dir = str(tmp_path / "media")
    install_test_item(media_dir, source=test_item)
    return media_dir


def _library(media_dir: str, clock=None) -> ContentLibrary:
    from twisted.internet import reactor

    return ContentLibrary(media_dir, reactor, clock=clock or Clock())


@pytest_twisted.inlineCallbacks
def test_scan_lists_usable_items_and_explains_the_rest(media) -> None:
    content = os.path.join(media, "dynamic_content")
    install_test_item(media, "broken")
    _corrupt(os.path.join(content, "broken"))
    os.makedirs(os.path.join(content, "empty"))
    os.makedirs(os.path.join(content, ".staging.partial-1234"))
    os.makedirs(os.path.join(content, "bad name"))
    open(os.path.join(content, "stray.txt"), "w").close()  # noqa: SIM115
    lib = _library(media)
    yield lib.refresh()
    assert [i.name for i in lib.items()] == ["testclip"]
    assert lib.get("testclip").segment_count == 4
    assert lib.get("broken") is None
    reasons = lib.unusable()
    assert set(reasons) == {"broken", "empty"}
    assert "unreadable" in reasons["broken"]
    assert "missing" in reasons["empty"]


@pytest_twisted.inlineCallbacks
def test_refresh_notices_a_missing_segment_and_its_return(media) -> None:
    lib = _library(media)
    yield lib.refresh()
    seg = os.path.join(media, "dynamic_content", "testclip", "audio", "audio", "seg_00003.m4s")
    os.rename(seg, seg + ".away")
    yield lib.check()  # content.json did not change: the cheap check keeps the item
    assert lib.get("testclip") is not None
    yield lib.refresh()
    assert lib.get("testclip") is None
    assert "audio/audio/seg_00003.m4s is missing" in lib.unusable()["testclip"]
    os.rename(seg + ".away", seg)
    yield lib.refresh()
    assert lib.get("testclip") is not None and lib.unusable() == {}


@pytest_twisted.inlineCallbacks
def test_check_picks_up_new_changed_and_removed_items(media) -> None:
    lib = _library(media)
    yield lib.refresh()
    install_test_item(media, "second")
    yield lib.check()
    assert [i.name for i in lib.items()] == ["second", "testclip"]
    assert lib.get("second").name == "second"
    _corrupt(os.path.join(media, "dynamic_content", "second"))
    yield lib.check()
    assert lib.get("second") is None and "second" in lib.unusable()
    shutil.rmtree(os.path.join(media, "dynamic_content", "second"))
    yield lib.check()
    assert lib.unusable() == {} and [i.name for i in lib.items()] == ["testclip"]


@pytest_twisted.inlineCallbacks
def test_directory_name_is_the_content_name(media) -> None:
    content = os.path.join(media, "dynamic_content")
    os.rename(os.path.join(content, "testclip"), os.path.join(content, "renamed"))
    lib = _library(media)
    yield lib.refresh()
    assert lib.get("renamed").name == "renamed"


@pytest_twisted.inlineCallbacks
def test_concurrent_refreshes_all_fire_after_a_full_scan(media) -> None:
    lib = _library(media)
    first = lib.refresh()
    install_test_item(media, "late")  # appears while the first scan may be running
    second, third = lib.refresh(), lib.check()
    yield defer.gatherResults([first, second, third])
    assert lib.get("late") is not None


def test_item_dir_stays_inside_dynamic_content(tmp_path) -> None:
    lib = _library(str(tmp_path))
    assert lib.item_dir("clip_1-a") == os.path.join(str(tmp_path), "dynamic_content", "clip_1-a")
    for bad in ("..", "../etc", "a/b", "", ".hidden", "a b", "/abs", "x%2f"):
        with pytest.raises(NotFound):
            lib.item_dir(bad)


@pytest_twisted.inlineCallbacks
def test_service_scans_at_start_and_polls_on_its_clock(media) -> None:
    from twisted.internet import reactor

    clock = Clock()
    lib = ContentLibrary(media, reactor, clock=clock, poll_interval=2.0)
    failures: list[BaseException] = []

    def observe(event: dict) -> None:
        if "log_failure" in event:
            failures.append(event["log_failure"].value)

    globalLogPublisher.addObserver(observe)
    lib.startService()
    try:
        yield _until(lambda: lib.get("testclip") is not None)
        install_test_item(media, "polled")
        clock.advance(2.0)
        yield _until(lambda: lib.get("polled") is not None)
        # A failing check is logged and the loop keeps going.
        lib._signatures_now = lambda: 1 / 0  # type: ignore[method-assign]
        clock.advance(2.0)
        yield task.deferLater(reactor, 0.1, lambda: None)
        del lib._signatures_now
        _corrupt(os.path.join(media, "dynamic_content", "polled"))
        clock.advance(2.0)
        yield _until(lambda: "polled" in lib.unusable())
    finally:
        globalLogPublisher.removeObserver(observe)
        yield lib.stopService()
    assert not clock.getDelayedCalls()
    assert [f for f in failures if isinstance(f, ZeroDivisionError)]


@defer.inlineCallbacks
def _until(predicate, timeout: float = 10.0):
    from twisted.internet import reactor

    deadline = reactor.seconds() + timeout
    while not predicate():
        assert reactor.seconds() < deadline, "condition not met in time"
        yield task.deferLater(reactor, 0.02, lambda: None)


def test_content_json_written_by_install_names_the_copy(tmp_path, test_item) -> None:
    dest = install_test_item(str(tmp_path), "other", source=test_item)
    with open(os.path.join(dest, "content.json"), encoding="utf-8") as fh:
        assert json.load(fh)["name"] == "other"


class _NotYetRunning:
    """The reactor as twistd's start-up sees it: services start before reactor.run()."""

    running = False

    def __init__(self, reactor) -> None:
        self._reactor = reactor

    def __getattr__(self, name):
        return getattr(self._reactor, name)


@pytest_twisted.inlineCallbacks
def test_start_before_the_reactor_runs_loads_everything_at_once(media) -> None:
    from twisted.internet import reactor

    lib = ContentLibrary(media, _NotYetRunning(reactor), clock=Clock())
    lib.startService()
    try:
        assert [i.name for i in lib.items()] == ["testclip"]  # no waiting: nothing served yet
    finally:
        yield lib.stopService()
