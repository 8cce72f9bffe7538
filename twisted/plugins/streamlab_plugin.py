"""twistd plugin: ``twistd -n streamlab --config PATH``."""

from twisted.application.service import ServiceMaker

streamlab = ServiceMaker(
    "streamlab",
    "streamlab.tap",
    "Looping-live origin, per-player fault proxy and encoder for video-player QA",
    "streamlab",
)
