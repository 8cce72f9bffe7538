"""Pure parts of discovery: ids, payload, retry backoff."""

from __future__ import annotations

import re
import secrets
from typing import Any

SERVER_ID_RE = re.compile(r"^[A-Za-z0-9_-]{4,64}$")
BACKOFF_BASE = 5.0
BACKOFF_CAP = 600.0


def valid_server_id(value: str) -> bool:
    """4-64 characters of ``[A-Za-z0-9_-]``."""
    return bool(SERVER_ID_RE.match(value or ""))


def new_server_id() -> str:
    """A fresh random server id (22 URL-safe characters)."""
    return secrets.token_urlsafe(16)


def announce_payload(server_id: str, url: str, label: str) -> dict[str, Any]:
    """The JSON body POSTed to ``<rendezvous_url>/announce``."""
    return {"server_id": server_id, "url": url, "label": label}


def backoff_delay(failures: int, interval: float, base: float = BACKOFF_BASE,
                  cap: float = BACKOFF_CAP) -> float:
    """Seconds before retry number *failures* (1, 2, ...): base, 2*base, 4*base ... never
    above *cap* nor above the regular *interval*."""
    if failures <= 0:
        return interval
    return float(min(base * (2 ** (failures - 1)), cap, interval))
