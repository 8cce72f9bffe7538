"""Bring-your-own-stream: front an external HLS/DASH origin (an *upstream*) at
``/go-live/{name}/...`` so sessions, faults, shaping and the network log apply to it.

* :mod:`.paths` — pure: the mapping between upstream URLs and local origin paths.
* :mod:`.rewrite` — pure: HLS playlist and DASH MPD URL rewriting.
* :mod:`.detect` — pure: name validation and manifest detection (HLS/DASH, LL, live).
* :mod:`.client` — adapter: the treq client (pooled, keep-alive, streaming bodies).
* :mod:`.resource` — adapter: serving one request from the upstream with back-pressure.
* :mod:`.service` — the registry of upstreams (validation on creation, persistence).
"""
