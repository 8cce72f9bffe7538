"""HLS multivariant ("master") playlists and the names of the media playlists they list
(spec/streams.md section 3, "Masters").

A master only depends on the item, the kind, the container and the timeline, so it is
rendered once and kept with the index (:func:`streamlab.live.timeline.index_cache`).
"""

from __future__ import annotations

from streamlab.live.timeline import index_cache
from streamlab.live.urls import CONTINUOUS, DISCONTINUITY, TIMELINES
from streamlab.media.index import ContentIndex, Track

KINDS = ("ll", "2s", "6s")

#: EXT-X-VERSION of LL media playlists (EXT-X-SKIP needs 9) and of non-LL ones.
LL_VERSION = 9
VERSION = 6


def playlist_name(kind: str, track_id: str, container: str = "fmp4", timeline: str = DISCONTINUITY) -> str:
    """Relative URI of the media playlist of *track_id* for *kind* (and container, and
    timeline: the continuous mode is carried in the query so the player stays in it)."""
    if kind == "ll":
        name = f"playlist_{track_id}.m3u8"
    else:
        name = f"playlist_{kind}_{track_id}.m3u8"
    query = []
    if container == "ts":
        query.append("format=ts")
    if timeline == CONTINUOUS:
        query.append("timeline=continuous")
    return name + ("?" + "&".join(query) if query else "")


def ll_tracks(index: ContentIndex) -> tuple[Track, ...]:
    """Every rendition listed in an fMP4 master (video rungs then audio tracks)."""
    return index.video + index.audio


def render_master(index: ContentIndex, kind: str, container: str = "fmp4",
                  timeline: str = DISCONTINUITY) -> str:
    """The multivariant playlist for *kind* (``ll``/``2s``/``6s``).

    ``container="ts"`` renders the MPEG-TS master (6 s only; KeyError when the item has no
    TS renditions or for another kind).  Unknown kind or timeline -> KeyError.  The
    media playlist URIs carry the timeline (``?timeline=continuous``).
    """
    if kind not in KINDS or timeline not in TIMELINES:
        raise KeyError(kind)
    cache = index_cache(index)
    key = ("master", kind, container, timeline)
    got = cache.get(key)
    if got is not None:
        return got
    version = LL_VERSION if kind == "ll" else VERSION
    out = [f"#EXTM3U\n#EXT-X-VERSION:{version}\n#EXT-X-INDEPENDENT-SEGMENTS\n"]
    if container == "ts":
        if kind != "6s" or not index.ts_tracks:
            raise KeyError(f"{kind}/ts")
        videos = sorted((t for t in index.ts_tracks if t.type == "video"), key=lambda t: -t.bandwidth)
        audios = [t for t in index.ts_tracks if t.type == "audio"]
    elif container == "fmp4":
        videos, audios = list(index.video), list(index.audio)
    else:
        raise KeyError(container)
    for i, a in enumerate(audios):
        attrs = [f'TYPE=AUDIO,GROUP-ID="audio",NAME="{a.id}",LANGUAGE="{a.language}"',
                 f'DEFAULT={"YES" if i == 0 else "NO"},AUTOSELECT=YES']
        if a.channels:
            attrs.append(f'CHANNELS="{a.channels}"')
        attrs.append(f'URI="{playlist_name(kind, a.id, container, timeline)}"')
        out.append("#EXT-X-MEDIA:" + ",".join(attrs) + "\n")
    audio = audios[0] if audios else None
    muxed_audio = index.audio[0] if (container == "ts" and not audios and index.audio) else None
    for v in videos:
        bw, avg, codecs = v.bandwidth, v.average_bandwidth, v.codecs
        if audio is not None:
            bw += max(a.bandwidth for a in audios)
            avg += max(a.average_bandwidth for a in audios)
            codecs = f"{codecs},{audio.codecs}"
        elif muxed_audio is not None and "," not in codecs:
            codecs = f"{codecs},{muxed_audio.codecs}"
        attrs = [f"BANDWIDTH={bw}", f"AVERAGE-BANDWIDTH={avg}", f'CODECS="{codecs}"']
        if v.width and v.height:
            attrs.append(f"RESOLUTION={v.resolution}")
        if v.frame_rate:
            attrs.append(f"FRAME-RATE={v.frame_rate:.3f}")
        if audio is not None:
            attrs.append('AUDIO="audio"')
        uri = playlist_name(kind, v.id, container, timeline)
        out.append("#EXT-X-STREAM-INF:" + ",".join(attrs) + "\n" + uri + "\n")
    got = "".join(out)
    cache[key] = got
    return got
