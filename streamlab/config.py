"""One frozen, validated configuration object for the whole daemon.

The INI file (``etc/streamlab.conf``) and the command line map onto :class:`Config`.
Every key has a type, a default and a validator in :data:`SCHEMA`; unknown sections,
unknown keys and bad values raise :class:`ConfigError` whose message is one line naming
the offending key.  Nothing else in the code base reads configuration files.
"""

from __future__ import annotations

import configparser
import dataclasses
import datetime
import ipaddress
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any


class ConfigError(ValueError):
    """A configuration problem, described in one line that names the key."""


# --------------------------------------------------------------------------- parsers


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "yes", "true", "on"):
        return True
    if value in ("0", "no", "false", "off"):
        return False
    raise ValueError(f"expected yes/no, got {raw!r}")


def _int_range(lo: int, hi: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        value = int(raw.strip())
        if not lo <= value <= hi:
            raise ValueError(f"must be between {lo} and {hi}, got {value}")
        return value

    return parse


def _float_range(lo: float, hi: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        value = float(raw.strip())
        if not lo <= value <= hi:
            raise ValueError(f"must be between {lo} and {hi}, got {value}")
        return value

    return parse


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {raw!r}")
        return value

    return parse


def _str(raw: str) -> str:
    return raw.strip()


_ENDPOINT_RE = re.compile(r"^(tcp|ssl|tcp6|ssl6|unix):[^\s]+$")


def _endpoint(raw: str) -> str:
    value = raw.strip()
    if not _ENDPOINT_RE.match(value):
        raise ValueError(f"not an endpoint string like tcp:30000, got {raw!r}")
    return value


def _port_range(raw: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", raw)
    if not match:
        raise ValueError(f"expected LOW-HIGH, got {raw!r}")
    lo, hi = int(match.group(1)), int(match.group(2))
    if not (1 <= lo <= hi <= 65535):
        raise ValueError(f"invalid port range {lo}-{hi}")
    return (lo, hi)


def _epoch(raw: str) -> datetime.datetime:
    value = raw.strip()
    try:
        parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"not an ISO-8601 time: {raw!r}") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return parsed.astimezone(datetime.UTC)


def _networks(raw: str) -> tuple[str, ...]:
    items = tuple(part.strip() for part in raw.split(",") if part.strip())
    for item in items:
        ipaddress.ip_network(item, strict=False)
    return items


def _list(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _codecs(raw: str) -> str:
    return _choice("h264", "hevc", "both", "av1", "all")(raw)


def _server_id(raw: str) -> str:
    value = raw.strip()
    if value and not re.fullmatch(r"[A-Za-z0-9_-]{4,64}", value):
        raise ValueError("must be 4-64 characters of A-Z a-z 0-9 _ -")
    return value


def _url(raw: str) -> str:
    value = raw.strip()
    if value and not re.match(r"^https?://", value):
        raise ValueError(f"must be an http(s) URL, got {raw!r}")
    return value.rstrip("/")


def _path(raw: str) -> str:
    value = raw.strip()
    if not value:
        raise ValueError("must not be empty")
    return value


# --------------------------------------------------------------------------- schema


@dataclass(frozen=True)
class Key:
    """One config key: its parser, default (as written in the file) and CLI flag."""

    section: str
    name: str
    parse: Callable[[str], Any]
    default: str
    doc: str
    secret: bool = False

    @property
    def flag(self) -> str:
        """The command-line option for this key (``--flag``)."""
        if self.section == "shaping" and not self.name.startswith("default"):
            return f"shaping-{self.name}".replace("_", "-")
        return self.name.replace("_", "-")


SCHEMA: tuple[Key, ...] = (
    # [server]
    Key("server", "listen", _endpoint, "tcp:30000", "main listener: API, origin, dashboard"),
    Key("server", "bootstrap_listen", _endpoint, "tcp:30081", "bootstrap listener (302 to session port)"),
    Key("server", "session_ports", _port_range, "30181-30880", "range of per-session ports"),
    Key("server", "session_interface", _str, "", "address session ports bind to ('' = all)"),
    Key("server", "advertised_host", _str, "", "host name in generated URLs ('' = request Host)"),
    Key("server", "advertised_port_offset", _int_range(-65535, 65535), "0",
        "added to session ports in Location headers (NAT / port mapping)"),
    Key("server", "tls", _choice("off", "auto", "files"), "off", "off | auto | files"),
    Key("server", "tls_cert", _str, "", "certificate PEM path (tls = files; auto writes here)"),
    Key("server", "tls_key", _str, "", "private key PEM path (tls = files; auto writes here)"),
    Key("server", "tls_san", _list, "localhost,127.0.0.1", "subjectAltNames for tls = auto"),
    Key("server", "auth_htpasswd", _str, "", "htpasswd file enabling Basic auth ('' = off)"),
    Key("server", "trusted_proxies", _networks, "", "networks whose X-Forwarded-For is honoured"),
    Key("server", "max_sessions_per_client_ip", _int_range(0, 10000), "8",
        "sessions per non-private client IP (0 = unlimited)"),
    Key("server", "shutdown_grace_seconds", _float_range(0, 600), "5",
        "SIGTERM: time in-flight responses get before they are cut"),
    Key("server", "request_head_timeout", _float_range(1, 600), "20",
        "seconds a client has to send a whole request head (line + headers) on any port; then 408"),
    Key("server", "max_connections_per_client_ip", _int_range(0, 100000), "256",
        "open connections per client address on the main listener (0 = unlimited); more get 429"),
    # [paths]
    Key("paths", "media_dir", _path, "/var/lib/streamlab/media", "originals/ and dynamic_content/"),
    Key("paths", "state_dir", _path, "/var/lib/streamlab", "sqlite database, uploads, job logs, keys"),
    # [live]
    Key("live", "live_epoch", _epoch, "2020-01-01T00:00:00Z", "time zero of every live channel"),
    Key("live", "window_seconds", _float_range(6, 3600), "36", "playlist / MPD window length"),
    Key("live", "worker_idle_timeout", _float_range(0.1, 86400), "60", "drop idle workers after (s)"),
    Key("live", "upstream_timeout_seconds", _float_range(0.1, 600), "20",
        "upstream origins: connect / answer timeout (s), then 504"),
    Key("live", "upstream_connections_per_host", _int_range(1, 1000), "8",
        "upstream origins: idle keep-alive connections kept per host"),
    Key("live", "timeline", _choice("discontinuity", "continuous"), "continuous",
        "masters and MPDs without ?timeline=: continuous (one Period, no EXT-X-DISCONTINUITY,"
        " timestamps rising across loops; MPEG-TS falls back to discontinuity)"
        " | discontinuity (a Period + EXT-X-DISCONTINUITY per loop)"),
    # [sessions]
    Key("sessions", "session_idle_timeout", _float_range(1, 86400), "120",
        "expire a session after this long without media requests (s)"),
    Key("sessions", "session_expiry_grace", _float_range(0, 86400), "120",
        "idle session with controls set: expires only after this visible countdown (s); "
        "never while kept or watched"),
    Key("sessions", "session_port_quarantine", _float_range(0, 3600), "30",
        "a released session port is not reused for this long (s)"),
    Key("sessions", "network_log_size", _int_range(1, 1000000), "50000",
        "entries kept per session (at most)"),
    Key("sessions", "network_log_max_bytes", _int_range(65536, 1 << 32), str(8 * 1024 * 1024),
        "memory bound of one session's log incl. headers (bytes; 8 MiB ~ 9 min of LL-HLS)"),
    Key("sessions", "socket_hang_seconds", _float_range(0, 3600), "90", "*_hang faults hold this long"),
    Key("sessions", "socket_delay_seconds", _float_range(0, 3600), "12", "*_delayed faults close after"),
    Key("sessions", "socket_body_bytes", _int_range(0, 1 << 30), "65536", "body_* faults send this much"),
    # [shaping]
    Key("shaping", "backend", _choice("auto", "kernel", "userspace"), "auto", "auto | kernel | userspace"),
    Key("shaping", "interface", _str, "",
        "limit kernel shaping to this interface ('' = whichever interface the player's route uses)"),
    Key("shaping", "default_rate_mbps", _float_range(0, 10000), "0", "cap of a new session (0 = none)"),
    # [jobs]
    Key("jobs", "encode_workers", _int_range(1, 64), "1", "concurrent encodes"),
    Key("jobs", "ffmpeg", _path, "ffmpeg", "ffmpeg binary"),
    Key("jobs", "ffprobe", _path, "ffprobe", "ffprobe binary"),
    Key("jobs", "kill_grace_seconds", _float_range(0, 600), "5", "SIGTERM -> SIGKILL grace for encoders"),
    Key("jobs", "max_upload_bytes", _int_range(1, 1 << 50), str(20 * 1024**3), "largest upload (bytes)"),
    Key("jobs", "upload_ttl", _float_range(1, 86400 * 30), "86400", "abandoned uploads removed after (s)"),
    Key("jobs", "seed_on_first_start", _bool, "no", "seed + encode the demo clip on an empty media dir"),
    Key("jobs", "seed_duration", _float_range(1, 3600), "120", "demo clip length (s)"),
    Key("jobs", "seed_codecs", _codecs, "h264", "codec_selection of the demo encode"),
    # [discovery]
    Key("discovery", "rendezvous_url", _url, "", "pairing rendezvous base URL ('' = off)"),
    Key("discovery", "announce_url", _url, "", "URL of this server announced to the rendezvous"),
    Key("discovery", "announce_label", _str, "streamlab", "label shown next to this server"),
    Key("discovery", "server_id", _server_id, "", "fixed server id ('' = generated once, kept)"),
    Key("discovery", "announce_interval", _float_range(1, 86400 * 7), "43200", "announce period (s)"),
)

SECTIONS: tuple[str, ...] = tuple(dict.fromkeys(k.section for k in SCHEMA))
_BY_FLAG = {k.flag: k for k in SCHEMA}


def _section_class(section: str) -> type:
    fields = [(k.name, Any) for k in SCHEMA if k.section == section]
    cls = dataclasses.make_dataclass(
        f"{section.capitalize()}Config", fields, frozen=True
    )
    cls.__doc__ = f"The [{section}] section of the configuration."
    return cls


SECTION_CLASSES: dict[str, type] = {s: _section_class(s) for s in SECTIONS}


@dataclass(frozen=True)
class Config:
    """The whole configuration; one attribute per INI section."""

    server: Any
    paths: Any
    live: Any
    sessions: Any
    shaping: Any
    jobs: Any
    discovery: Any
    source: str = ""

    def redacted(self) -> dict[str, dict[str, Any]]:
        """The effective config as plain data with secrets hidden (for --check-config, /debug)."""
        out: dict[str, dict[str, Any]] = {}
        for key in SCHEMA:
            value = getattr(getattr(self, key.section), key.name)
            if isinstance(value, datetime.datetime):
                value = value.isoformat().replace("+00:00", "Z")
            elif isinstance(value, tuple):
                value = list(value)
            if key.secret and value:
                value = "***"
            out.setdefault(key.section, {})[key.name] = value
        return out

    def replace(self, **sections: Mapping[str, Any]) -> Config:
        """A copy with some keys changed, e.g. ``cfg.replace(live={"window_seconds": 12})``."""
        changed = {}
        for section, values in sections.items():
            changed[section] = dataclasses.replace(getattr(self, section), **values)
        return dataclasses.replace(self, **changed)


def load(path: str | None = None, overrides: Mapping[str, str] | None = None,
         base_dir: str | None = None) -> Config:
    """Read, merge and validate: defaults < file at *path* < *overrides* (flag -> text).

    Relative paths in ``[paths]`` are resolved against *base_dir* (default: the current
    directory), so a checkout config can say ``./var``.
    """
    raw: dict[tuple[str, str], str] = {(k.section, k.name): k.default for k in SCHEMA}
    known = {(k.section, k.name) for k in SCHEMA}
    if path is not None:
        parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=("#", ";"))
        try:
            with open(path, encoding="utf-8") as fh:
                parser.read_file(fh)
        except OSError as exc:
            raise ConfigError(f"config file {path}: {exc.strerror}") from exc
        except configparser.Error as exc:
            first = str(exc).splitlines()[0]
            raise ConfigError(f"config file {path}: {first}") from exc
        for section in parser.sections():
            if section not in SECTIONS:
                raise ConfigError(f"[{section}]: unknown section")
            for name, value in parser.items(section):
                if (section, name) not in known:
                    raise ConfigError(f"[{section}] {name}: unknown key")
                raw[(section, name)] = value
    for flag, value in (overrides or {}).items():
        key = _BY_FLAG.get(flag.replace("_", "-"))
        if key is None:
            raise ConfigError(f"--{flag}: unknown option")
        raw[(key.section, key.name)] = value
    values: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    for key in SCHEMA:
        text = raw[(key.section, key.name)]
        try:
            values[key.section][key.name] = key.parse(text)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"[{key.section}] {key.name}: {exc}") from None
    base = base_dir or os.getcwd()
    for name in ("media_dir", "state_dir"):
        values["paths"][name] = os.path.abspath(os.path.join(base, values["paths"][name]))
    _cross_check(values)
    return Config(**{s: SECTION_CLASSES[s](**v) for s, v in values.items()}, source=path or "")


def _cross_check(values: dict[str, dict[str, Any]]) -> None:
    server = values["server"]
    if server["tls"] == "files" and not (server["tls_cert"] and server["tls_key"]):
        raise ConfigError("[server] tls: 'files' needs tls_cert and tls_key")
    if server["tls"] == "files":
        for name in ("tls_cert", "tls_key"):
            if not os.path.isfile(server[name]):
                raise ConfigError(f"[server] {name}: no such file {server[name]!r}")
    if server["auth_htpasswd"] and not os.path.isfile(server["auth_htpasswd"]):
        raise ConfigError(f"[server] auth_htpasswd: no such file {server['auth_htpasswd']!r}")
    disc = values["discovery"]
    if disc["announce_url"] and not disc["rendezvous_url"]:
        raise ConfigError("[discovery] announce_url: set rendezvous_url too")


def check_paths(config: Config) -> None:
    """Make sure the data directories exist and are writable; ConfigError otherwise."""
    for name in ("media_dir", "state_dir"):
        path = getattr(config.paths, name)
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"[paths] {name}: cannot create {path!r}: {exc.strerror}") from None
        if not os.access(path, os.W_OK):
            raise ConfigError(f"[paths] {name}: {path!r} is not writable")


def flags() -> Iterable[Key]:
    """All keys in schema order (the CLI mirrors them)."""
    return SCHEMA


def render_default_file() -> str:
    """The documented default config file (kept in sync with etc/streamlab.conf by a test)."""
    lines = ["# streamlab configuration. Every key, its default and meaning.", ""]
    for section in SECTIONS:
        lines.append(f"[{section}]")
        for key in SCHEMA:
            if key.section == section:
                lines.append(f"# {key.doc}")
                lines.append(f"{key.name} = {key.default}")
        lines.append("")
    return "\n".join(lines)
