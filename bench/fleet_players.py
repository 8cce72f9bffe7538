"""Simulated players for the fleet load generator, and the worker process that runs them.

A worker (``python bench/fleet_players.py`` with a JSON job on stdin, bench/fleet.py
starts K of them) drives its share of the fleet with asyncio and prints one JSON result
on stdout.  Every player bootstraps onto its own session port through the bootstrap
listener (``?player_id=`` -> 302), then behaves like the player it stands for:

* ``ll_hls``: blocking playlist reloads (``_HLS_msn``/``_HLS_part``) for the next part,
  an open-ended request for every preload hint (the origin streams the parts of the
  segment in production as they are published), closed-range part requests for any
  listed part no hint stream delivered, the init segment and one whole segment at join.
* ``hls_6s`` / ``hls_2s``: reload the media playlist at hls.js's cadence (one target
  duration after a change, half of it otherwise) and download each new segment.
* ``dash_6s``: read the MPD (refreshed every ``minimumUpdatePeriod``), request each
  ``$Number$`` segment at its availability time, across Periods.

Measured per item (part, segment, blocking playlist): **lateness** = the instant its
last byte arrived minus its publication on the live clock (PROGRAM-DATE-TIME + listed
durations, or the MPD's availability time), and **service** = arrival minus the later of
publication and the moment the player asked (the request itself, or the playlist
request that first listed it) — the part of the delay the server is responsible for.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import os
import random
import resource
import sys
import time
import traceback
import urllib.parse
from collections import Counter
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fleet_http import HttpError, Pool, Response  # noqa: E402
from fleet_manifests import DashPeriod, MediaPlaylist, parse_master, parse_media, parse_mpd, pick_variant  # noqa: E402

EARLY_TOLERANCE = 0.001  # publication times are exact to the millisecond
BEHIND_LIVE = 3.0  # an LL-HLS player skips listed parts published longer ago than this
KINDS = ("ll_hls", "hls_6s", "hls_2s", "dash_6s")
MASTERS = {
    "ll_hls": "master.m3u8",
    "hls_6s": "master_6s.m3u8",
    "hls_2s": "master_2s.m3u8",
    "dash_6s": "manifest_6s.mpd",
}


class Recorder:
    """Samples, request counts and errors of one worker.  Samples and requests count only
    when they complete inside the measurement window; errors count over the whole run."""

    def __init__(self, window: tuple[float, float]) -> None:
        self.window = window
        self.samples: dict[str, list[tuple[float, float]]] = {}
        self.requests: Counter[str] = Counter()
        self.requests_total = 0
        self.errors: Counter[str] = Counter()
        self.error_examples: dict[str, str] = {}
        self.bytes = 0
        self.early: Counter[str] = Counter()
        self.behind = 0

    def inside(self, t: float) -> bool:
        """Is *t* inside the measurement window?"""
        return self.window[0] <= t <= self.window[1]

    def sample(self, kind: str, arrived: float, published: float, asked: float) -> None:
        """One delivered item: lateness and service (see module docstring).  An item whose
        last byte arrived before its publication is counted in ``early`` instead (the
        origin released bytes ahead of the live clock)."""
        if self.inside(arrived):
            if arrived < published - EARLY_TOLERANCE:
                self.early[kind] += 1
                return
            self.samples.setdefault(kind, []).append(
                (
                    round(arrived - published, 5),
                    round(arrived - max(published, asked), 5),
                    round(published, 3),
                )
            )

    def skipped(self, published: float) -> None:
        """A listed LL-HLS part the player gave up on: it was too far behind live."""
        if self.window[0] <= published <= self.window[1]:
            self.behind += 1

    def request(self, kind: str, resp: Response) -> None:
        """One answered request."""
        self.requests_total += 1
        if self.inside(resp.done_at):
            self.requests[kind] += 1
            self.bytes += resp.length

    def error(self, kind: str, detail: str = "") -> None:
        """One failure, by ``<player kind>.<what>:<why>``."""
        self.errors[kind] += 1
        if detail and kind not in self.error_examples:
            self.error_examples[kind] = detail[:300]


def _err(exc: BaseException) -> str:
    if isinstance(exc, HttpError):
        return exc.kind
    if isinstance(exc, ValueError):
        return "parse"
    return type(exc).__name__


class Player:
    """Common part: bootstrap, the session pool, request helpers, the retry loop."""

    kind = ""

    def __init__(self, job: dict[str, Any], player_id: str, rec: Recorder) -> None:
        self.job = job
        self.player_id = player_id
        self.rec = rec
        self.host = job["host"]
        self.pool: Pool | None = None
        self.base = ""  # directory of the master, e.g. /go-live/testclip/
        self.master_target = ""
        self.stop_at = float("inf")

    async def bootstrap(self) -> None:
        """Optionally create the session with preset controls, then follow the bootstrap
        302 to the session port (one connection, closed)."""
        content = self.job["content"]
        if self.job.get("preset"):
            api = Pool(self.host, self.job["api_port"], limit=1)
            body = json.dumps({"player_id": self.player_id, "set": self.job["preset"]}).encode()
            try:
                resp = await api.request(
                    "POST",
                    "/api/sessions",
                    body=body,
                    timeout=30,
                    headers={"Content-Type": "application/json", "Connection": "close"},
                )
            finally:
                api.close()
            if resp.status not in (200, 201):
                raise HttpError(f"http_{resp.status}", "preset session")
        boot = Pool(self.host, self.job["bootstrap_port"], limit=1)
        target = f"/go-live/{content}/{MASTERS[self.kind]}?player_id={urllib.parse.quote(self.player_id)}"
        try:
            resp = await boot.request("GET", target, headers={"Connection": "close"}, timeout=30)
        finally:
            boot.close()
        if resp.status != 302 or "location" not in resp.headers:
            raise HttpError(f"http_{resp.status}", "bootstrap")
        loc = urllib.parse.urlsplit(resp.headers["location"])
        self.pool = Pool(loc.hostname or self.host, loc.port or 80, limit=self.job.get("connections", 4))
        self.master_target = loc.path + (f"?{loc.query}" if loc.query else "")
        self.base = loc.path.rsplit("/", 1)[0] + "/"

    async def get(
        self,
        what: str,
        target: str,
        *,
        expect: tuple[int, ...] = (200,),
        headers: dict[str, str] | None = None,
        timeout: float = 30.0,
        keep_body: bool = True,
        on_bytes: Any = None,
    ) -> Response:
        """GET on the session port; a status outside *expect* raises ``http_<status>``."""
        assert self.pool is not None
        resp = await self.pool.request(
            "GET", target, headers=headers, timeout=timeout, keep_body=keep_body, on_bytes=on_bytes
        )
        if resp.status not in expect:
            raise HttpError(f"http_{resp.status}", f"{what} {target}")
        self.rec.request(f"{self.kind}.{what}", resp)
        return resp

    def url(self, rel: str, base: str | None = None) -> str:
        """Resolve a manifest URI against *base* (default: the master's directory)."""
        if rel.startswith("/"):
            return rel
        return (base or self.base) + rel

    def alive(self) -> bool:
        """Before the fleet's stop time (loops check it too: a cancellation that
        ``asyncio.wait_for`` swallows must not keep a player running)."""
        return time.time() < self.stop_at

    async def run(self, stop_at: float) -> None:
        """Bootstrap (retrying) and play until *stop_at*; every failure is recorded and
        followed by a re-sync, as a real player would retry."""
        self.stop_at = stop_at
        while self.alive():
            try:
                if self.pool is None:
                    await self.bootstrap()
                await self.play()
            except asyncio.CancelledError:
                raise
            except (HttpError, ValueError, KeyError, OSError) as exc:
                stage = "bootstrap" if self.pool is None else "play"
                self.rec.error(f"{self.kind}.{stage}:{_err(exc)}", f"{self.player_id}: {exc}")
                await asyncio.sleep(1.0 + random.random())
            except Exception as exc:  # noqa: BLE001 - a bug in the player must be visible, not fatal
                self.rec.error(f"{self.kind}.bug:{type(exc).__name__}", traceback.format_exc())
                await asyncio.sleep(2.0)

    async def play(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        """Close idle connections."""
        if self.pool is not None:
            self.pool.close()


class HintStream:
    """One open-ended preload-hint request: when each byte of the segment arrived."""

    def __init__(self, msn: int, start: int) -> None:
        self.msn = msn
        self.start = start
        self.ends: list[int] = []  # absolute byte offset reached after each read
        self.times: list[float] = []
        self.active = True
        self.sent_at = time.time()

    def on_bytes(self, total: int, now: float) -> None:
        """Body progress callback."""
        self.ends.append(self.start + total)
        self.times.append(now)

    def arrival(self, end: int) -> float | None:
        """When the byte just before absolute offset *end* arrived (None: not yet)."""
        i = bisect.bisect_left(self.ends, end)
        return self.times[i] if i < len(self.ends) else None

    def covers(self, offset: int) -> bool:
        """Will (or did) this stream deliver the part starting at *offset*?"""
        if offset < self.start:
            return False
        return self.active or (bool(self.ends) and self.ends[-1] > offset)


class LLHlsPlayer(Player):
    """Low-latency HLS: blocking reloads, preload-hint streams, part requests."""

    kind = "ll_hls"

    async def play(self) -> None:
        master = await self.get("master", self.master_target)
        variant = pick_variant(parse_master(master.body.decode()), self.job.get("rendition", "highest"))
        self.playlist = self.url(variant.uri)
        self.media_base = self.playlist.rsplit("/", 1)[0] + "/"
        resp = await self.get("playlist", self.playlist)
        pl = parse_media(resp.body.decode())
        if pl.map_uri:
            await self.get("init", self.url(pl.map_uri, self.media_base), keep_body=False)
        last = pl.last_complete
        if last is not None:
            await self.get("segment", self.url(last.uri, self.media_base), keep_body=False)
        self.streams: dict[int, HintStream] = {}
        self.done: set[tuple[int, int]] = set()
        self.fetching: set[tuple[int, int]] = set()
        self.listed_at: dict[tuple[int, int], float] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.count_from = time.time()
        # join PART-HOLD-BACK (3 parts) behind the edge, as players do
        tail = [p for seg in pl.segments[-2:] for p in ((seg.msn, q) for q in seg.parts)][-3:]
        for msn, part in tail:
            self._spawn(self._fetch_part(msn, part, count=False))
        try:
            await self._follow(pl)
        finally:
            for task in list(self.tasks):
                task.cancel()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _follow(self, pl: MediaPlaylist) -> None:
        target = pl.target_duration or 6.0
        while self.alive():
            self._hint(pl)
            msn, part = pl.next_part()
            join = "&" if "?" in self.playlist else "?"  # the continuous timeline's URIs carry a query
            resp = await self.get(
                "playlist", f"{self.playlist}{join}_HLS_msn={msn}&_HLS_part={part}", timeout=3 * target + 5
            )
            pl = parse_media(resp.body.decode())
            asked = resp.sent_at
            for seg in pl.segments:  # the wake-up: the part asked for, after its publication
                if (
                    seg.msn == msn
                    and part < len(seg.parts)
                    and seg.parts[part].published_at >= self.count_from
                ):
                    self.rec.sample("ll_hls.playlist", resp.done_at, seg.parts[part].published_at, asked)
            self._resolve(pl, asked)

    def _hint(self, pl: MediaPlaylist) -> None:
        if pl.hint_uri is None or pl.hint_start is None:
            return
        msn = pl.hint_msn
        stream = self.streams.get(msn)
        if stream is not None and stream.covers(pl.hint_start):
            return
        stream = HintStream(msn, pl.hint_start)
        self.streams[msn] = stream
        self._spawn(self._run_hint(stream, self.url(pl.hint_uri, self.media_base)))
        for old in [m for m in self.streams if m < msn - 3]:
            del self.streams[old]

    async def _run_hint(self, stream: HintStream, target: str) -> None:
        try:
            await self.get(
                "hint",
                target,
                expect=(206,),
                headers={"Range": f"bytes={stream.start}-"},
                keep_body=False,
                on_bytes=stream.on_bytes,
                timeout=30,
            )
        except (HttpError, OSError) as exc:
            self.rec.error(f"ll_hls.hint:{_err(exc)}", f"{self.player_id}: {exc}")
        finally:
            stream.active = False

    def _resolve(self, pl: MediaPlaylist, asked: float) -> None:
        """Record the parts a hint stream delivered; fetch the ones none will deliver."""
        for seg in pl.segments[-4:]:
            stream = self.streams.get(seg.msn)
            for p in seg.parts:
                key = (seg.msn, p.index)
                if key in self.done or key in self.fetching or p.published_at < self.count_from:
                    continue
                self.listed_at.setdefault(key, asked)
                if stream is not None and stream.covers(p.offset):
                    arrived = stream.arrival(p.offset + p.size)
                    if arrived is not None:
                        self.done.add(key)
                        self.rec.sample("ll_hls.part", arrived, p.published_at, stream.sent_at)
                    continue  # still streaming: resolved by a later playlist
                if time.time() - p.published_at > BEHIND_LIVE:
                    # a real player this far behind jumps to the live edge instead of
                    # fetching every missed part (which would only push it further behind)
                    self.done.add(key)
                    self.rec.skipped(p.published_at)
                    continue
                self.fetching.add(key)
                self._spawn(self._fetch_part(seg.msn, p, count=True))
        low = pl.segments[-1].msn - 4
        self.done = {k for k in self.done if k[0] >= low}
        self.listed_at = {k: v for k, v in self.listed_at.items() if k[0] >= low}

    async def _fetch_part(self, msn: int, p: Any, count: bool) -> None:
        key = (msn, p.index)
        try:
            resp = await self.get(
                "part",
                self.url(p.uri, self.media_base),
                expect=(206,),
                keep_body=False,
                headers={"Range": f"bytes={p.offset}-{p.offset + p.size - 1}"},
            )
        except (HttpError, OSError) as exc:
            self.rec.error(f"ll_hls.part:{_err(exc)}", f"{self.player_id}: {exc}")
            return
        finally:
            self.fetching.discard(key)
        self.done.add(key)
        if count:
            self.rec.sample(
                "ll_hls.part", resp.done_at, p.published_at, self.listed_at.get(key, resp.sent_at)
            )


class HlsPlayer(Player):
    """2 s / 6 s HLS: playlist polling at hls.js's cadence, whole segments."""

    def __init__(self, job: dict[str, Any], player_id: str, rec: Recorder, kind: str) -> None:
        super().__init__(job, player_id, rec)
        self.kind = kind

    async def play(self) -> None:
        master = await self.get("master", self.master_target)
        variant = pick_variant(parse_master(master.body.decode()), self.job.get("rendition", "highest"))
        playlist = self.url(variant.uri)
        media_base = playlist.rsplit("/", 1)[0] + "/"
        resp = await self.get("playlist", playlist)
        pl = parse_media(resp.body.decode())
        if pl.map_uri:
            await self.get("init", self.url(pl.map_uri, media_base), keep_body=False)
        await self._segment(pl.segments[-1], media_base, resp.sent_at, count=False)
        last = pl.segments[-1].msn
        count_from = time.time()
        changed = True
        target = pl.target_duration or 6.0
        while self.alive():
            await asyncio.sleep(target if changed else target / 2)
            resp = await self.get("playlist", playlist)
            pl = parse_media(resp.body.decode())
            new = [s for s in pl.segments if s.msn > last and s.complete]
            changed = bool(new)
            for seg in new:
                await self._segment(seg, media_base, resp.sent_at, count=seg.published_at >= count_from)
                last = seg.msn

    async def _segment(self, seg: Any, media_base: str, asked: float, count: bool) -> None:
        headers = (
            {"Range": f"bytes={seg.offset}-{seg.offset + seg.size - 1}"} if seg.size is not None else None
        )
        resp = await self.get(
            "segment", self.url(seg.uri, media_base), expect=(200, 206), headers=headers, keep_body=False
        )
        if count:
            self.rec.sample(f"{self.kind}.segment", resp.done_at, seg.published_at, asked)


class DashPlayer(Player):
    """6 s DASH: MPD refresh, segments requested at their availability time."""

    kind = "dash_6s"

    async def play(self) -> None:
        mpd_target = self.master_target
        resp = await self.get("mpd", mpd_target)
        mpd = parse_mpd(resp.body.decode(), self.job.get("rendition", "highest"))
        periods = {p.id: p for p in mpd.periods}
        now = time.time()
        current: tuple[DashPeriod, int] | None = None
        for p in mpd.periods:
            k = int((now + p.ato - p.start) // p.seg_duration) - 1
            n = p.count()
            if n is not None:
                k = min(k, n - 1)
            if k >= 0 and p.available_at(k) <= now:
                current = (p, k)
        if current is None:
            raise ValueError("no segment available in the MPD")
        period, k = current
        init_for = period.id
        await self.get("init", self.url(period.init), keep_body=False)
        await self.get("segment", self.url(period.url(k)), keep_body=False)
        count_from = time.time()
        next_refresh = time.time() + mpd.minimum_update_period
        while self.alive():
            k += 1
            n = period.count()
            if n is not None and k >= n:
                later = sorted((p for p in periods.values() if p.start > period.start), key=lambda p: p.start)
                while not later and self.alive():  # the next Period is not listed yet: refresh
                    await asyncio.sleep(mpd.minimum_update_period)
                    mpd = parse_mpd(
                        (await self.get("mpd", mpd_target)).body.decode(),
                        self.job.get("rendition", "highest"),
                    )
                    periods.update({p.id: p for p in mpd.periods})
                    later = sorted(
                        (p for p in periods.values() if p.start > period.start), key=lambda p: p.start
                    )
                if not later:
                    return
                period, k = later[0], 0
            avail = period.available_at(k)
            while time.time() < avail:
                wait = min(avail, next_refresh) - time.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if time.time() >= next_refresh:
                    mpd = parse_mpd(
                        (await self.get("mpd", mpd_target)).body.decode(),
                        self.job.get("rendition", "highest"),
                    )
                    periods = {p.id: p for p in mpd.periods if p.start >= period.start - 120} | {
                        period.id: period
                    }
                    next_refresh = time.time() + mpd.minimum_update_period
            if period.id != init_for:
                await self.get("init", self.url(period.init), keep_body=False)
                init_for = period.id
            resp = await self.get("segment", self.url(period.url(k)), keep_body=False)
            if avail >= count_from:
                self.rec.sample("dash_6s.segment", resp.done_at, avail, resp.sent_at)


def make_player(kind: str, job: dict[str, Any], player_id: str, rec: Recorder) -> Player:
    """A player of *kind* (one of :data:`KINDS`)."""
    if kind == "ll_hls":
        return LLHlsPlayer(job, player_id, rec)
    if kind in ("hls_6s", "hls_2s"):
        return HlsPlayer(job, player_id, rec, kind)
    if kind == "dash_6s":
        return DashPlayer(job, player_id, rec)
    raise ValueError(f"unknown player kind {kind!r}")


async def run_worker(job: dict[str, Any]) -> dict[str, Any]:
    """Start the job's players spread over the ramp, stop them at ``stop_at``, return
    the worker's figures."""
    rec = Recorder((job["window"][0], job["window"][1]))
    stop_at = job["stop_at"]
    players = [make_player(p["kind"], job, p["id"], rec) for p in job["players"]]
    ramp_start, ramp_end = time.time(), job["ramp_until"]
    rng = random.Random(job.get("seed", 0))

    async def one(player: Player, delay: float) -> None:
        await asyncio.sleep(delay)
        await player.run(stop_at)

    tasks = [asyncio.ensure_future(one(p, rng.uniform(0, max(0.0, ramp_end - ramp_start)))) for p in players]
    lags: list[float] = []
    lag_task = asyncio.ensure_future(_loop_lag(rec, lags))
    await asyncio.sleep(max(0.0, stop_at - time.time()))
    lag_task.cancel()
    for task in tasks:
        task.cancel()
    await asyncio.wait(tasks, timeout=10)
    for p in players:
        p.close()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "samples": rec.samples,
        "requests": dict(rec.requests),
        "requests_total": rec.requests_total,
        "errors": dict(rec.errors),
        "early": dict(rec.early),
        "parts_skipped_behind_live": rec.behind,
        "error_examples": rec.error_examples,
        "bytes": rec.bytes,
        "players": len(players),
        "bootstrapped": sum(1 for p in players if p.pool is not None),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3),
        "loop_lag": lags,
    }


async def _loop_lag(rec: Recorder, lags: list[float], period: float = 0.05) -> None:
    """How late this worker's event loop wakes up (a starved load generator inflates
    every lateness it measures: compare the two)."""
    while True:
        before = time.time()
        await asyncio.sleep(period)
        now = time.time()
        if rec.inside(now):
            lags.append(round(now - before - period, 5))


def main() -> int:
    """Worker entry point: job JSON on stdin, result JSON on stdout."""
    job = json.load(sys.stdin)
    result = asyncio.run(run_worker(job))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
