"""The /dashboard/ resource: path resolution, deep links, content types, caching, 304."""

from __future__ import annotations

import os
from typing import Any

import pytest
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from streamlab.web.dashboard import DASHBOARD_DIR, DashboardResource, resolve


class _SyncPool:
    """A thread pool fake that runs the work at once (the collaborator, not the subject)."""

    def callInThreadWithCallback(self, on_result: Any, fn: Any, *a: Any, **kw: Any) -> None:  # noqa: N802
        try:
            on_result(True, fn(*a, **kw))
        except Exception as exc:  # noqa: BLE001 - handed to the Deferred like the real pool
            from twisted.python.failure import Failure

            on_result(False, Failure(exc))


class _Reactor:
    def getThreadPool(self) -> _SyncPool:  # noqa: N802
        return _SyncPool()

    def callFromThread(self, fn: Any, *a: Any, **kw: Any) -> None:  # noqa: N802
        fn(*a, **kw)


@pytest.fixture
def site_dir(tmp_path: Any) -> str:
    (tmp_path / "js").mkdir()
    (tmp_path / "vendor").mkdir()
    (tmp_path / "index.html").write_text("<!doctype html><title>x</title>")
    (tmp_path / "js" / "app.js").write_text("export const x = 1;\n")
    (tmp_path / "vendor" / "lib.js").write_text("var lib;\n")
    (tmp_path / ".secret").write_text("no")
    return str(tmp_path)


def get(resource: DashboardResource, path: str, method: bytes = b"GET",
        headers: dict[bytes, bytes] | None = None) -> tuple[DummyRequest, bytes]:
    req = DummyRequest([s.encode() for s in path.split("/")])
    req.method = method
    req.prepath = [b"dashboard"]
    req.path = b"/dashboard/" + path.encode()
    for k, v in (headers or {}).items():
        req.requestHeaders.setRawHeaders(k, [v])
    out = resource.render(req)
    if out is NOT_DONE_YET:
        return req, b"".join(req.written)
    return req, out


def header(req: DummyRequest, name: bytes) -> str:
    values = req.responseHeaders.getRawHeaders(name) or [b""]
    return values[0].decode()


def test_resolve_refuses_escapes_and_hidden_names(site_dir: str) -> None:
    assert resolve(site_dir, [""]) == os.path.join(os.path.realpath(site_dir), "index.html")
    assert resolve(site_dir, ["js", "app.js"]) == os.path.join(os.path.realpath(site_dir), "js", "app.js")
    assert resolve(site_dir, ["..", "etc", "passwd"]) is None
    assert resolve(site_dir, [".secret"]) is None
    assert resolve(site_dir, ["js", "..", "..", "x"]) is None
    assert resolve(site_dir, ["a\\b"]) is None


def test_files_deep_links_and_errors(site_dir: str) -> None:
    res = DashboardResource(site_dir, reactor=_Reactor())
    req, body = get(res, "js/app.js")
    assert body == b"export const x = 1;\n"
    assert header(req, b"content-type").startswith("text/javascript")
    assert "no-cache" in header(req, b"cache-control")
    assert header(req, b"content-length") == str(len(body))
    req, _ = get(res, "vendor/lib.js")
    assert "max-age" in header(req, b"cache-control")
    # a deep link without an extension is the app's index
    req, body = get(res, "session/7")
    assert body.startswith(b"<!doctype html>") and header(req, b"content-type").startswith("text/html")
    # a missing file with an extension, a hidden file, an escape: JSON 404
    for path in ("js/missing.js", ".secret", "../tap.py"):
        req, body = get(res, path)
        assert req.responseCode == 404, path
        assert b'"error"' in body
    req, _ = get(res, "", method=b"POST")
    assert req.responseCode == 405


def test_etag_revalidation_answers_304(site_dir: str) -> None:
    res = DashboardResource(site_dir, reactor=_Reactor())
    req, _ = get(res, "js/app.js")
    etag = header(req, b"etag").encode()
    req, body = get(res, "js/app.js", headers={b"if-none-match": etag})
    assert req.responseCode == 304 and body == b""


def test_package_data_has_every_page() -> None:
    pages = sorted(os.listdir(os.path.join(DASHBOARD_DIR, "pages")))
    assert pages == ["content.js", "home.js", "jobs.js", "monitor.js", "mosaic.js", "playback.js",
                     "scenarios.js", "server.js", "session.js", "sessions.js", "sources.js"]
    with open(os.path.join(DASHBOARD_DIR, "js", "app.js"), encoding="utf-8") as fh:
        app = fh.read()
    for page in pages:
        assert f"../pages/{page}" in app


def test_dashboard_urls_for_the_startup_log():
    from streamlab.web.dashboard import dashboard_urls

    assert dashboard_urls(30000, "0.0.0.0", "", False, "labbox") == [
        "http://labbox:30000/dashboard/", "http://127.0.0.1:30000/dashboard/"]
    assert dashboard_urls(30443, "", "lab.example", True, "labbox") == [
        "https://lab.example:30443/dashboard/", "https://labbox:30443/dashboard/",
        "https://127.0.0.1:30443/dashboard/"]
    assert dashboard_urls(30000, "192.0.2.7", "", False, "labbox") == ["http://192.0.2.7:30000/dashboard/"]
    assert dashboard_urls(30000, "::1", "", False, "labbox") == ["http://[::1]:30000/dashboard/"]
