"""Upload throughput on the real daemon: chunked (raw bodies) and single-shot multipart.

The bytes are random, so completion stops at ffprobe (422): the figures are about
receiving, fsyncing, comparing and hashing bytes.  Also prints the daemon's peak RSS to
show that bodies are not held in memory.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from streamlab.testing.daemon import Daemon  # noqa: E402

SIZE = int(os.environ.get("BENCH_UPLOAD_MB", "64")) * 1024 * 1024
CHUNK = 8 * 1024 * 1024


def rss_peak_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def main() -> None:
    data = os.urandom(SIZE)
    digest = hashlib.sha256(data).hexdigest()
    with tempfile.TemporaryDirectory() as work:
        d = Daemon(work, config={"jobs": {"max_upload_bytes": str(SIZE * 2)}})
        with d:
            r = d.request("POST", "/api/upload/init", {"filename": "bench.bin", "file_size": SIZE,
                                                       "sha256": digest, "codec_selection": "h264"})
            job_id = r.json()["job_id"]
            t0 = time.monotonic()
            for off in range(0, SIZE, CHUNK):
                r = d.request("POST", f"/api/upload/chunk/{job_id}?offset={off}", data[off:off + CHUNK],
                              headers={"Content-Type": "application/octet-stream"}, timeout=120)
                assert r.status == 200, r.body
            t1 = time.monotonic()
            # a full retry pass: every chunk compared with what is on disk
            for off in range(0, SIZE, CHUNK):
                d.request("POST", f"/api/upload/chunk/{job_id}?offset={off}", data[off:off + CHUNK],
                          headers={"Content-Type": "application/octet-stream"}, timeout=120)
            t2 = time.monotonic()
            r = d.request("POST", f"/api/upload/complete/{job_id}", {}, timeout=120)
            t3 = time.monotonic()
            boundary = uuid.uuid4().hex
            head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="b.bin"\r\n\r\n'
            body = (head.encode() + data + f"\r\n--{boundary}--\r\n".encode())
            t4 = time.monotonic()
            d.request("POST", "/api/upload", body,
                      headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}, timeout=300)
            t5 = time.monotonic()
            peak = rss_peak_kb(d.proc.pid)
    mb = SIZE / 1e6
    print(f"file size                     {mb:8.1f} MB")
    print(f"chunked upload (8 MiB chunks) {mb / (t1 - t0):8.1f} MB/s")
    print(f"retried chunks (compare only) {mb / (t2 - t1):8.1f} MB/s")
    print(f"complete (hash check + probe) {(t3 - t2) * 1000:8.1f} ms -> {r.status} (random: not video)")
    print(f"single-shot multipart         {mb / (t5 - t4):8.1f} MB/s")
    print(f"daemon peak RSS               {peak / 1024:8.1f} MB")


if __name__ == "__main__":
    main()
