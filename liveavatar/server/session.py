"""One streamer's session: its perception thread, conditioner, ingest, viewers and outputs.

Per session:  ingest (WebRTC / WHIP / file) -> InputPump thread (decode to RGB, read the camera
timecode, feed audio to perception) -> LatestSlot[CapturedFrame] -> PerceptionWorker thread ->
LatestSlot[Cues] -> Conditioner. The render loop ticks every session's conditioner and hands the
frames back through `publish`, which packs them for WebRTC (output.webrtc).
"""
from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import av
import numpy as np
from aiortc import RTCPeerConnection

from liveavatar.output.base import FrameSink
from liveavatar.output.webrtc import AvatarTrack, FramePublisher, Packer, Published, SharedEncoder, VoiceTrack
from liveavatar.runtime import LatestSlot, StageTimer
from liveavatar.server import timecode
from liveavatar.server.file_ingest import FileDriver
from liveavatar.sources.webrtc import InputPump
from liveavatar.types import AudioChunk, CapturedFrame, Conditioning, ControlEvent, ControlKind, Cues, RenderedFrame

if TYPE_CHECKING:
    from liveavatar.server.engine import Engine

#: Rows of the timecode strip under the avatar in packed frames (viewers never show it).
STRIP_ROWS = 16
#: Viewers' browsers buffer audio longer than video (measured in Chromium against this service:
#: ~45-55 ms of audio vs ~10 ms of video). The voice is sent this much earlier so both play
#: together; the browser itself does not sync them (see signalling.whep), or the picture would wait.
VOICE_LEAD_MS = 35.0


class RateMeter:
    """Counts events; `rate()` gives events/s since the previous call (called at ~1 Hz)."""
    __slots__ = ("count", "_last_count", "_last_t")

    def __init__(self) -> None:
        self.count = 0
        self._last_count = 0
        self._last_t = time.monotonic()

    def rate(self) -> float:
        now = time.monotonic()
        dt = now - self._last_t
        r = (self.count - self._last_count) / dt if dt > 0 else 0.0
        self._last_count, self._last_t = self.count, now
        return r


def _paint_avatar_stamp(strip: np.ndarray, stamp: tuple[int, int, int]) -> None:
    timecode.draw(strip, stamp, timecode.AVATAR_FIELDS)


class Session:
    """One streamer's pipeline. Created on the loop; its threads own the heavy work."""

    def __init__(self, sid: str, engine: Engine, perception: Any, conditioner: Any,
                 character: str) -> None:
        self.sid = sid
        self.engine = engine
        self.perception = perception
        self.conditioner = conditioner
        self.character = character
        self.frames_in: LatestSlot[CapturedFrame] = LatestSlot()
        self.cues: LatestSlot[Cues] = LatestSlot()
        self.worker = engine.stages.worker(perception, self.frames_in, self.cues, engine.governor.min_interval_s)
        self.timer = StageTimer(window=600)
        self.input = InputPump(sid, perception, self.frames_in, self.timer, self._camera_capture_ns)
        # Guards the conditioner: control events arrive on the loop, ticks on the render thread.
        self.lock = threading.Lock()
        self.publisher = FramePublisher(engine.loop)
        self.packer = Packer(engine.cfg.size, engine.flat_bg, engine.cfg.timecode, STRIP_ROWS, _paint_avatar_stamp)
        self.want_packed = 0          # live packed / flat consumers (render thread packs only then)
        self.want_flat = 0
        self.latest: RenderedFrame | None = None
        self.last_cues: Cues | None = None
        self.events_applied = 0
        self.frames_received = RateMeter()
        self.cues_meter = RateMeter()
        self.rendered = RateMeter()
        self._last_capture_ns = 0
        self.latency_ms = 0.0         # capture -> rendered, smoothed
        self.ingest: RTCPeerConnection | None = None   # the camera connection feeding us, if any
        self.ingest_kind = ""
        self.ever_had_camera = False
        self.file_driver: FileDriver | None = None
        self.viewers = 0
        self.sinks: dict[str, FrameSink] = {}
        self.subscribers: set[asyncio.Queue] = set()
        self.cue_subscribers = 0
        self.last_used = time.monotonic()
        self.voice: VoiceTrack | None = None           # made for the first viewer (voice_track)
        self.out_tracks: dict[str, AvatarTrack] = {}   # layout -> source relayed to viewers
        self.shared_encoder: SharedEncoder | None = None   # one VP8 encode for our pages
        self._t0_ns = 0
        self._seq = 0
        # Called on the render thread with each tick's Conditioning (e.g. interop.vmc's sender):
        # each must return at once (copy into a slot, never send or wait).
        self.tick_taps: list[Callable[[Conditioning], None]] = []

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        self.input.start()
        self.worker.start()

    def close(self) -> None:
        if self.file_driver:
            self.file_driver.stop()
        if self.shared_encoder is not None:
            self.shared_encoder.stop()
        self.input.stop()
        self.frames_in.close()
        try:
            self.worker.stop()
        finally:
            for sink in self.sinks.values():
                sink.stop()
            self.sinks.clear()
            if hasattr(self.perception, "close"):
                self.perception.close()

    @property
    def ingest_ms(self) -> float:
        """Capture -> arrival here, smoothed (stamped cameras only)."""
        return self.input.ingest_ms

    @property
    def busy(self) -> bool:
        return bool(self.ingest or self.viewers or self.subscribers or self.file_driver or self.sinks)

    # -- ingest (sources.webrtc.IngestTarget; the file driver too) ----------------------------
    def receive_video(self, frame: av.VideoFrame | CapturedFrame, t_arrival_ns: int) -> None:
        self.frames_received.count += 1
        self.input.put_video(frame, t_arrival_ns)

    def receive_audio(self, chunk: AudioChunk) -> None:
        self.input.put_audio(chunk)

    def receive_voice(self, frames: list[av.AudioFrame]) -> None:
        """The microphone's audio for viewers (on the loop)."""
        if self.voice is not None:
            self.voice.push_many(frames)

    def end_audio(self) -> None:
        self.input.end_audio()

    def _camera_capture_ns(self, image: np.ndarray, t_arrival_ns: int) -> int | None:
        """The capture time the studio page stamped into the camera frame, if it did."""
        strip_h = timecode.camera_strip_height(image.shape[0])
        stamp = timecode.read(image[-strip_h:], timecode.CAMERA_FIELDS)
        if stamp is None:
            return None
        return self.engine.wallclock.capture_ns_from_stamp(stamp[0], t_arrival_ns)

    def attach_ingest(self, pc: RTCPeerConnection, kind: str = "webrtc") -> None:
        """A camera connection (WHIP) now feeds the session; it replaces the one before it and
        the demo / --source file. On the loop."""
        old = self.ingest
        self.ingest, self.ingest_kind, self.ever_had_camera = pc, kind, True
        self.stop_file()
        if old is not None:
            asyncio.ensure_future(old.close())
        self.publish_event({"type": "camera", "session": self.sid, "connected": True})

    def detach_ingest(self, pc: RTCPeerConnection) -> None:
        """`pc` went away: the avatar idles until a reconnect attaches a new ingest."""
        if self.ingest is pc:
            self.ingest, self.ingest_kind = None, ""
            self.publish_event({"type": "camera", "session": self.sid, "connected": False})

    def drive_from_file(self, path: Path, iter_media: Callable[..., Any]) -> None:
        self.stop_file()
        self.file_driver = FileDriver(self, path, iter_media)
        self.file_driver.start()

    def stop_file(self) -> None:
        if self.file_driver:
            self.file_driver.stop()
            self.file_driver = None

    # -- viewers and outputs (loop side) ------------------------------------------------------
    def add_viewer(self, layout: str) -> None:
        """A viewer of `layout` ('packed' or 'flat') joined: the render thread packs it from now on."""
        if layout == "packed":
            self.want_packed += 1
        else:
            self.want_flat += 1
        self.viewers += 1

    def remove_viewer(self, layout: str) -> None:
        self.viewers -= 1
        if layout == "packed":
            self.want_packed -= 1
        else:
            self.want_flat -= 1

    def voice_track(self) -> VoiceTrack:
        """The session's one voice source (relayed to every viewer), made on first use."""
        if self.voice is None:
            self.voice = VoiceTrack(self)
        return self.voice

    def avatar_track(self, layout: str) -> AvatarTrack:
        """The session's one source of `layout` frames (relayed to viewers), made on first use."""
        track = self.out_tracks.get(layout)
        if track is None:
            track = self.out_tracks[layout] = AvatarTrack(self.publisher, layout)
        return track

    def shared_encoder_for_viewers(self) -> SharedEncoder:
        """The session's one VP8 encode of its packed frames, started on first use."""
        if self.shared_encoder is None:
            cfg = self.engine.cfg
            self.shared_encoder = SharedEncoder(self.sid, self.engine.loop, self.timer, 2 * cfg.size,
                                                cfg.size + STRIP_ROWS, cfg.fps)
            self.shared_encoder.start()
        return self.shared_encoder

    def replace_sink(self, name: str, sink: FrameSink) -> FrameSink | None:
        """Start sending frames to `sink` under `name`; returns the sink it replaced (to stop)."""
        old = self.sinks.pop(name, None)
        self.sinks[name] = sink
        return old

    def take_sinks(self, keep: tuple[str, ...] = ()) -> dict[str, FrameSink]:
        """Stop sending frames to every sink but `keep`; returns them (to stop, off the loop)."""
        taken = {n: s for n, s in self.sinks.items() if n not in keep}
        for name in taken:
            del self.sinks[name]
        return taken

    # -- events (loop side) -------------------------------------------------------------------
    def subscribe(self, queue: asyncio.Queue) -> None:
        self.subscribers.add(queue)

    def unsubscribe(self, queue: asyncio.Queue, wanted_cues: bool) -> None:
        self.subscribers.discard(queue)
        if wanted_cues:
            self.cue_subscribers -= 1

    def want_cues(self, now: bool, before: bool) -> None:
        """A subscriber turned the tracking overlay's cues on or off."""
        if now != before:
            self.cue_subscribers += 1 if now else -1

    # -- control (loop side) ------------------------------------------------------------------
    def control(self, event: ControlEvent) -> int:
        """Apply a control event (UserError for unknown names). Returns its number, for
        `state_after`."""
        event.t_ns = time.monotonic_ns()
        if event.kind is ControlKind.CALIBRATE and hasattr(self.perception, "start_calibration"):
            self.perception.start_calibration(3.0)
        with self.lock:
            self.conditioner.push_event(event)
            self.events_applied += 1
            number = self.events_applied
        self.publish_event({"type": "control", "session": self.sid, "kind": event.kind.value,
                            "name": event.name, "source": event.source.value,
                            "mode": event.mode.value})
        return number

    async def state_after(self, event_number: int, timeout: float = 0.5) -> dict:
        """The session's state once a frame reflecting event `event_number` is rendered
        (or after `timeout` if rendering is stalled)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        pub = self.publisher.latest
        while (pub is None or pub.events < event_number) and loop.time() < deadline:
            try:
                pub = await asyncio.wait_for(self.publisher.wait_newer(pub.seq if pub else 0),
                                             deadline - loop.time())
            except asyncio.TimeoutError:
                break
        return self.state()

    def state(self) -> dict:
        with self.lock:
            cond_state = self.conditioner.state()
        return {"session": self.sid, "character": self.character, "camera": bool(self.ingest),
                "ingest": self.ingest_kind or ("file" if self.file_driver else ""),
                "viewers": self.viewers, "conditioning": cond_state}

    def publish_event(self, event: dict) -> None:
        """Fan an event out to WebSocket subscribers (loop thread); a slow client loses its
        oldest events, never blocks us."""
        for q in self.subscribers:
            if q.full():
                q.get_nowait()
            q.put_nowait(event)

    def voice_delay_ms(self) -> float:
        """How long to hold the voice so it meets the avatar frames showing the same moment: the
        avatar's capture -> render time, less the trip to us that the voice made as well, less
        the extra time a viewer's browser buffers audio over video (VOICE_LEAD_MS)."""
        return max(0.0, self.latency_ms - self.ingest_ms - VOICE_LEAD_MS)

    def push_voice_threadsafe(self, frames: list[av.AudioFrame]) -> None:
        if self.voice is not None and frames:
            self.engine.loop.call_soon_threadsafe(self.voice.push_many, frames)

    # -- render thread ------------------------------------------------------------------------
    def tick(self, t_ns: int) -> tuple[Conditioning, int]:
        cues = self.cues.take_nowait()
        if cues is not None and cues.t_capture_ns:
            self.timer.record("capture_to_cues", (time.monotonic_ns() - cues.t_capture_ns) / 1e6)
        with self.lock:
            if cues is not None:
                self.conditioner.push_cues(cues)
                self.last_cues = cues
                self.cues_meter.count += 1
            with self.timer.measure("condition"):
                cond = self.conditioner.tick(t_ns)
            events = self.events_applied
        for tap in self.tick_taps:
            tap(cond)
        if cues is not None and cues.keywords:
            words = [k.word for k in cues.keywords]
            self.engine.loop.call_soon_threadsafe(
                self.publish_event, {"type": "voice", "session": self.sid, "keywords": words})
        return cond, events

    def publish(self, rgba: np.ndarray, cond: Conditioning, events: int, t_rendered: int) -> None:
        self._seq += 1
        frame = RenderedFrame(rgba.copy(), self._seq, int(cond.t_capture_ns), t_rendered)
        self.latest = frame
        self.rendered.count += 1
        if frame.t_capture_ns and frame.t_capture_ns != self._last_capture_ns:
            self._last_capture_ns = frame.t_capture_ns
            ms = (t_rendered - frame.t_capture_ns) / 1e6
            if 0 <= ms < 5000:
                self.timer.record("capture_to_render", ms)
                self.latency_ms += 0.1 * (ms - self.latency_ms)
        wc = self.engine.wallclock
        stamp = (wc.to_wall_ms(frame.t_capture_ns) if frame.t_capture_ns else 0,
                 wc.to_wall_ms(t_rendered), events & 0xFF)
        packed = flat = None
        with self.timer.measure("pack"):
            if self.want_packed:
                packed = self.packer.pack(frame.rgba, stamp)
            if self.want_flat:
                flat = self.packer.compose_flat(frame.rgba, stamp)
        if packed is not None:
            if not self._t0_ns:
                self._t0_ns = t_rendered
            packed.pts = (t_rendered - self._t0_ns) * 90_000 // 1_000_000_000
            if self.shared_encoder is not None:
                self.shared_encoder.submit(packed)
        for sink in self.sinks.values():
            sink.send(frame)
        self.publisher.publish(Published(self._seq, events, frame, packed, flat))

    # -- stats (loop, ~1 Hz) ------------------------------------------------------------------
    def stats(self) -> dict:
        timings = self.timer.summary()
        pstats = {}
        if hasattr(self.perception, "stats"):
            try:
                pstats = self.perception.stats()
            except Exception:
                pstats = {}
        return {
            "type": "stats", "session": self.sid,
            "fps_in": round(self.frames_received.rate(), 1),
            "fps_perceived": round(self.cues_meter.rate(), 1),
            "fps_out": round(self.rendered.rate(), 1),
            # running totals, so a client can take rates over its own window (bench e2e does)
            "frames": {"in": self.frames_received.count, "perceived": self.cues_meter.count,
                       "out": self.rendered.count},
            "t_s": round(time.monotonic(), 3),
            "ms": {k: round(v["median_ms"], 1) for k, v in timings.items()},
            "ms_p95": {k: round(v["p95_ms"], 1) for k, v in timings.items()},
            "render_ms": round(self.engine.render_ms(), 1),
            "loop_lag_ms": self.engine.loop_lag_ms(),
            "capture_to_render_ms": round(timings.get("capture_to_render", {}).get("median_ms", 0.0), 1),
            "dropped": {"ingest": self.input.raw_video.dropped,
                        "perception": self.frames_in.dropped,  # the worker reports this same slot's count
                        "cues": self.cues.dropped,
                        "audio": self.input.audio_dropped},
            "render_skipped": self.engine.ticker_skipped(),
            **self.engine.governor.stats(),       # tracking slowed so the avatar keeps its rate
            "camera": bool(self.ingest), "ingest": self.ingest_kind,
            "viewers": self.viewers, "perception": pstats,
        }
