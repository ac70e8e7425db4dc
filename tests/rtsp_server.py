"""A real RTSP server for the tests: serves an H.264 MP4 clip in an endless loop.

Runs with Debian's Python (``/usr/bin/python3.11``), which has PyGObject and the GStreamer RTSP
server bindings (``apt-get install python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp
gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad``)::

    /usr/bin/python3.11 tests/rtsp_server.py --clip CLIP.mp4 --port 8554 [--path /stream]

The clip's encoded access units are read once; every client gets its own media, fed from an
``appsrc`` that replays them forever with timestamps shifted by one clip duration per loop, so the
stream never ends and is never re-encoded. The sinks sync on the timestamps, so frames go out at
the clip's real rate. Prints ``READY <port>`` on stdout once listening.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer


@dataclass(frozen=True)
class AccessUnit:
    data: bytes
    pts_ns: int
    dts_ns: int
    duration_ns: int
    delta_unit: bool  # not a keyframe


def read_access_units(clip: str) -> tuple[Gst.Caps, list[AccessUnit], int]:
    """Demuxes ``clip`` into byte-stream H.264 access units; returns caps, units, loop length (ns)."""
    pipeline = Gst.parse_launch(
        f'filesrc location="{clip}" ! qtdemux ! h264parse config-interval=-1 '
        "! video/x-h264,stream-format=byte-stream,alignment=au ! appsink name=sink sync=false"
    )
    sink = pipeline.get_by_name("sink")
    pipeline.set_state(Gst.State.PLAYING)
    units: list[AccessUnit] = []
    caps = None
    while True:
        sample = sink.emit("pull-sample")
        if sample is None:
            break
        caps = sample.get_caps()
        buf = sample.get_buffer()
        ok, info = buf.map(Gst.MapFlags.READ)
        data = bytes(info.data) if ok else b""
        buf.unmap(info)
        dts = buf.dts if buf.dts != Gst.CLOCK_TIME_NONE else buf.pts
        units.append(
            AccessUnit(
                data=data,
                pts_ns=buf.pts,
                dts_ns=dts,
                duration_ns=buf.duration if buf.duration != Gst.CLOCK_TIME_NONE else 0,
                delta_unit=bool(buf.get_flags() & Gst.BufferFlags.DELTA_UNIT),
            )
        )
    pipeline.set_state(Gst.State.NULL)
    if not units or caps is None:
        raise SystemExit(f"no H.264 video found in {clip}")
    frame_ns = units[1].pts_ns - units[0].pts_ns if len(units) > 1 else Gst.SECOND // 10
    loop_ns = max(u.pts_ns for u in units) - min(u.pts_ns for u in units) + (units[-1].duration_ns or frame_ns)
    return caps, units, loop_ns


class LoopingClipFactory(GstRtspServer.RTSPMediaFactory):
    """Builds one appsrc-fed pipeline per client that replays the clip forever."""

    def __init__(self, caps: Gst.Caps, units: list[AccessUnit], loop_ns: int) -> None:
        super().__init__()
        self.caps = caps
        self.units = units
        self.loop_ns = loop_ns
        self.set_shared(False)
        self.set_launch(
            "( appsrc name=src format=time is-live=false ! h264parse config-interval=-1 "
            "! rtph264pay name=pay0 pt=96 )"
        )
        self.connect("media-configure", self._on_media_configure)

    def _on_media_configure(self, _factory, media: GstRtspServer.RTSPMedia) -> None:
        src = media.get_element().get_by_name_recurse_up("src")
        src.set_property("caps", self.caps)
        position = {"i": 0}
        src.connect("need-data", self._on_need_data, position)

    def _on_need_data(self, src, _length: int, position: dict) -> None:
        loop, i = divmod(position["i"], len(self.units))
        unit = self.units[i]
        buf = Gst.Buffer.new_wrapped(unit.data)
        shift = loop * self.loop_ns
        buf.pts = unit.pts_ns + shift
        buf.dts = unit.dts_ns + shift
        if unit.duration_ns:
            buf.duration = unit.duration_ns
        if unit.delta_unit:
            buf.set_flags(Gst.BufferFlags.DELTA_UNIT)
        position["i"] += 1
        src.emit("push-buffer", buf)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", required=True, help="H.264 MP4 clip to serve in a loop")
    parser.add_argument("--port", type=int, default=8554)
    parser.add_argument("--path", default="/stream", help="mount point, e.g. /stream")
    args = parser.parse_args()

    Gst.init(None)
    caps, units, loop_ns = read_access_units(args.clip)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    server.get_mount_points().add_factory(args.path, LoopingClipFactory(caps, units, loop_ns))
    if server.attach(None) == 0:
        raise SystemExit(f"cannot listen on 127.0.0.1:{args.port}")
    print(f"READY {args.port}", flush=True)
    try:
        GLib.MainLoop().run()
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
