"""A local Janus for tests (Debian's package, config in a temp dir) and aiortc subscribers that
watch a session through it, as a viewer of the SFU would."""
from __future__ import annotations

import asyncio
from contextlib import contextmanager

import av
from aiortc import RTCConfiguration, RTCPeerConnection

from liveavatar.interop.janus import JanusTarget, subscribe
from liveavatar.interop.janus_local import LocalJanus
from tests.server.harness import free_port, http, wait_until


@contextmanager
def local_janus(**options):
    janus = LocalJanus(free_port(), **options).start()
    try:
        yield janus
    finally:
        janus.cleanup()


def wait_published(url: str, timeout: float = 60.0, session: str = "default", headers: dict | None = None) -> dict:
    """The service's /sfu answer once the session is live in Janus."""
    return wait_until(lambda: (info := http(f"{url}/api/sessions/{session}/sfu", headers=headers)[1]).get("live")
                      and info, timeout, what=f"session {session!r} published in Janus")


class JanusViewer:
    """One aiortc subscriber: counts video and audio frames, keeps the newest picture."""

    def __init__(self) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.video_frames = 0
        self.audio_frames = 0
        self.latest: av.VideoFrame | None = None
        self._tasks: list[asyncio.Task] = []
        self._janus = None

        @self.pc.on("track")
        def on_track(track) -> None:
            self._tasks.append(asyncio.ensure_future(self._read(track)))

    async def start(self, info: dict) -> JanusViewer:
        target = JanusTarget(info["url"], info["room"])
        self._janus = await subscribe(target, info["feed"], self.pc, info.get("pin"))
        return self

    async def _read(self, track) -> None:
        try:
            while True:
                frame = await track.recv()
                if track.kind == "video":
                    self.video_frames += 1
                    self.latest = frame
                else:
                    self.audio_frames += 1
        except Exception:   # the track ended
            pass

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        if self._janus is not None:
            await self._janus.close()
        await self.pc.close()
