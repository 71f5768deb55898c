"""aiortc as a standard WHIP publisher and WHEP player, for tests and the benchmark."""
from __future__ import annotations

import asyncio
import fractions
from pathlib import Path

import aiohttp
import av
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from liveavatar.server import timecode


class LoopingFile:
    """A media file as live camera + microphone tracks, looped and paced in real time (aiortc's
    MediaPlayer stops at the end of these clips instead of looping). One reader thread feeds
    both tracks through small bounded buffers."""

    def __init__(self, media: Path) -> None:
        import threading
        self.video = _BufferedTrack("video", self)
        self.audio = _BufferedTrack("audio", self)
        self._stop = threading.Event()
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, args=(media,), daemon=True)
        self._thread.start()

    def _run(self, media: Path) -> None:
        from liveavatar.sources.file import iter_media
        from liveavatar.types import CapturedFrame
        resampler = av.AudioResampler(format="s16", layout="mono", rate=48000)
        vpts = apts = 0
        for item in iter_media(media, realtime=True, loop=True):
            if self._stop.is_set():
                return
            if isinstance(item, CapturedFrame):
                f = av.VideoFrame.from_ndarray(item.image, format="rgb24")
                f.pts, f.time_base = vpts, fractions.Fraction(1, 90000)
                vpts += 3000
                self._loop.call_soon_threadsafe(self.video.push, f)
            else:
                mono = item.samples if item.samples.ndim == 1 else item.samples.mean(axis=1)
                pcm = (mono.clip(-1, 1) * 32767).astype("int16")[None, :]
                f = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
                f.sample_rate = item.sample_rate
                for rf in resampler.resample(f):
                    rf.pts, rf.time_base = apts, fractions.Fraction(1, 48000)
                    apts += rf.samples
                    self._loop.call_soon_threadsafe(self.audio.push, rf)

    def stop(self) -> None:
        self._stop.set()


class _BufferedTrack(MediaStreamTrack):
    def __init__(self, kind: str, owner: LoopingFile) -> None:
        super().__init__()
        self.kind = kind
        self._queue: asyncio.Queue = asyncio.Queue(maxsize=50)

    def push(self, frame) -> None:
        if self._queue.full():
            self._queue.get_nowait()
        self._queue.put_nowait(frame)

    async def recv(self):
        return await self._queue.get()


class StampedVideo(MediaStreamTrack):
    """A real video track with the studio's camera timecode drawn into each frame."""

    kind = "video"

    def __init__(self, source: MediaStreamTrack) -> None:
        super().__init__()
        self.source = source
        self.stamps: list[int] = []

    async def recv(self) -> av.VideoFrame:
        frame = await self.source.recv()
        img = frame.to_ndarray(format="rgb24")
        h = timecode.camera_strip_height(img.shape[0])
        stamp = timecode.wall_ms_now()
        timecode.draw(img[-h:], (stamp,), timecode.CAMERA_FIELDS)
        self.stamps.append(stamp)
        out = av.VideoFrame.from_ndarray(img, format="rgb24")
        out.pts, out.time_base = frame.pts, frame.time_base
        return out


class Publisher:
    def __init__(self, pc: RTCPeerConnection, player: LoopingFile, location: str, video) -> None:
        self.pc, self.player, self.location, self.video = pc, player, location, video

    async def close(self) -> None:
        await self.pc.close()
        self.player.stop()


async def post_sdp(url: str, sdp: str, headers: dict | None = None) -> tuple[int, str, dict]:
    async with aiohttp.ClientSession() as c:
        async with c.post(url, data=sdp, headers={"Content-Type": "application/sdp", **(headers or {})}) as r:
            return r.status, await r.text(), dict(r.headers)


async def publish(url: str, media: Path, stamp: bool = False, audio: bool = True,
                  headers: dict | None = None, video_codec: str | None = None) -> Publisher:
    """WHIP: send `media` (looped, real-time) as camera + microphone. `video_codec` (e.g.
    "video/H264") offers only that codec, as OBS's WHIP output does."""
    from aiortc import RTCRtpSender
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    player = LoopingFile(media)
    video = StampedVideo(player.video) if stamp else player.video
    vt = pc.addTransceiver(video, direction="sendonly")
    if video_codec:
        vt.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("video").codecs
                                if c.mimeType == video_codec])
    if audio:
        pc.addTransceiver(player.audio, direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    status, text, hdrs = await post_sdp(url, pc.localDescription.sdp, headers)
    if status != 201:
        await pc.close()
        raise AssertionError(f"WHIP POST {url} -> {status}: {text}")
    await pc.setRemoteDescription(RTCSessionDescription(text, "answer"))
    return Publisher(pc, player, hdrs["Location"], video)


class Player:
    """WHEP: receive the avatar; keeps the newest frame and counts frames (bounded memory)."""

    def __init__(self) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.video_frames = 0
        self.audio_frames = 0
        self.latest: av.VideoFrame | None = None
        self.location = ""
        self._tasks: list[asyncio.Task] = []

    async def start(self, url: str, headers: dict | None = None) -> Player:
        self.pc.addTransceiver("video", direction="recvonly")
        self.pc.addTransceiver("audio", direction="recvonly")

        @self.pc.on("track")
        def on_track(track):
            self._tasks.append(asyncio.ensure_future(self._read(track)))

        await self.pc.setLocalDescription(await self.pc.createOffer())
        status, text, hdrs = await post_sdp(url, self.pc.localDescription.sdp, headers)
        if status != 201:
            await self.pc.close()
            raise AssertionError(f"WHEP POST {url} -> {status}: {text}")
        self.location = hdrs["Location"]
        await self.pc.setRemoteDescription(RTCSessionDescription(text, "answer"))
        return self

    async def _read(self, track) -> None:
        try:
            while True:
                f = await track.recv()
                if track.kind == "video":
                    self.video_frames += 1
                    self.latest = f
                else:
                    self.audio_frames += 1
        except Exception:
            pass

    async def wait_frames(self, n: int, timeout: float = 30.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.video_frames < n:
            if loop.time() > deadline:
                raise AssertionError(f"only {self.video_frames} video frames in {timeout} s (wanted {n})")
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        await self.pc.close()

