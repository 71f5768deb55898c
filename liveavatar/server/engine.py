"""The live engine: sessions, their input pumps, and the one render thread.

Per session:  ingest (WebRTC / WHIP / file) -> InputPump thread (decode to RGB, read the camera
timecode, feed audio to perception) -> LatestSlot[CapturedFrame] -> PerceptionWorker thread ->
LatestSlot[Cues] -> Conditioner. One RenderLoop thread (the device worker) ticks every session's
conditioner at the fixed output rate and renders all sessions in ONE generator call, then packs
each session's frame for WebRTC and hands it to the asyncio side through a FramePublisher.
The asyncio loop only does signalling and WebRTC; everything heavy is on these threads.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np

from liveavatar.clock import Ticker
from liveavatar.errors import NotFoundError, UserError
from liveavatar.output.webrtc import FramePublisher, Packer, Published
from liveavatar.runtime import LatestSlot, StageTimer, Worker
from liveavatar.server import actions, timecode
from liveavatar.server.config import ServerConfig
from liveavatar.sources.webrtc import InputPump
from liveavatar.types import (
    VOICE_RATE,
    AudioChunk,
    CapturedFrame,
    ControlEvent,
    ControlKind,
    Cues,
    EventSource,
    RenderedFrame,
)

log = logging.getLogger("liveavatar.server")

#: Rows of the timecode strip under the avatar in packed frames (viewers never show it).
STRIP_ROWS = 16
#: Viewers' browsers buffer audio longer than video (measured in Chromium against this service:
#: ~45-55 ms of audio vs ~10 ms of video). The voice is sent this much earlier so both play
#: together; the browser itself does not sync them (see app.whep), or the picture would wait.
VOICE_LEAD_MS = 35.0


class AdmissionError(UserError):
    """The service is at its session limit (or still warming up): try again later."""
    http_status = 503

    def __init__(self, message: str, code: str, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.details = details


# ---------------------------------------------------------------------------------------------
# Stage factories: the only place the server names the stages. Tests swap in fakes.
# ---------------------------------------------------------------------------------------------

@dataclass
class Stages:
    generator: Callable[[], Any]                           # -> Generator (loaded, warmed up)
    perception: Callable[[], Any]                          # -> Perception
    worker: Callable[[Any, LatestSlot, LatestSlot], Any]   # -> PerceptionWorker
    conditioner: Callable[[], Any]                         # -> Conditioner
    iter_media: Callable[..., Any] | None = None           # sources.file.iter_media


def real_stages(cfg: ServerConfig) -> Stages:
    from liveavatar.conditioning import load_mapping
    mapping = load_mapping(cfg.mapping)  # bad file: ConfigError naming it, before we bind
    keywords = list(getattr(mapping, "keyword_words", lambda: cfg.keywords)())

    def generator() -> Any:
        if cfg.workers:   # the generator runs on Ray Serve replicas; this process sends conditionings
            from liveavatar.interop.ray_workers import RayGenerator
            remote = RayGenerator(cfg.workers, cfg.generator, cfg.device, cfg.size, replicas=cfg.worker_replicas,
                                  max_sessions=cfg.max_sessions, fps=cfg.fps, render_threads=cfg.render_threads)
            remote.load()
            remote.warmup()
            return remote
        from liveavatar.generation import registry
        gen = registry.create(cfg.generator, cfg.device, cfg.size)
        if getattr(gen, "device", "cpu") == "cpu":
            import torch
            torch.set_num_threads(cfg.render_threads)
        return gen

    def perception() -> Any:
        # Vision in a child process: MediaPipe's Python side off this process's GIL.
        from liveavatar.perception.process import PerceptionProcess
        return PerceptionProcess(keywords=keywords)

    def worker(perception: Any, frames_in: Any, cues_out: Any) -> Any:
        from liveavatar.perception import PerceptionWorker
        return PerceptionWorker(perception, frames_in, cues_out)

    def conditioner() -> Any:
        from liveavatar.conditioning import Conditioner
        return Conditioner(load_mapping(cfg.mapping), rate_hz=cfg.fps, mapping_path=cfg.mapping)

    def iter_media(path: Any, realtime: Any = True, loop: Any = True) -> Any:
        from liveavatar.sources.file import iter_media as f
        return f(path, realtime=realtime, loop=loop, mark_audio_end=True)

    return Stages(generator, perception, worker, conditioner, iter_media)


# ---------------------------------------------------------------------------------------------
# Session
# ---------------------------------------------------------------------------------------------

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


class FileDriver(Worker):
    """Feeds a session from a media file (real-time paced, looping): the demo / --source."""

    def __init__(self, session: Session, path: Path, iter_media: Callable[..., Any]) -> None:
        super().__init__(f"file-{session.sid}")
        self.session, self.path, self._iter_media = session, path, iter_media
        self.error: str | None = None

    def run(self) -> None:
        s = self.session
        resampler = None
        try:
            for item in self._iter_media(self.path, realtime=True, loop=True):
                if self.halted:
                    break
                if isinstance(item, CapturedFrame):
                    s.receive_video(item, item.t_capture_ns)
                elif isinstance(item, AudioChunk):
                    s.receive_audio(item)
                    resampler = resampler or av.AudioResampler(format="s16", layout="mono", rate=VOICE_RATE)
                    s.push_voice_threadsafe(chunk_to_voice_frames(item, resampler))
                else:   # the end of one pass's audio (the file loops)
                    s.end_audio()
        except Exception as e:  # a broken demo file must not take the service down
            self.error = f"{self.path}: {e}"
            log.error("session %s: file source stopped: %s", s.sid, self.error)


def chunk_to_voice_frames(chunk: AudioChunk, resampler: av.AudioResampler) -> list[av.AudioFrame]:
    samples = chunk.samples if chunk.samples.ndim == 1 else chunk.samples.mean(axis=1)
    pcm = (np.clip(samples, -1, 1) * 32767).astype(np.int16)[None, :]
    frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
    frame.sample_rate = chunk.sample_rate
    return resampler.resample(frame)


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
        self.worker = engine.stages.worker(perception, self.frames_in, self.cues)
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
        self.ingest: Any = None       # the RTCPeerConnection feeding us, if any
        self.ingest_kind = ""
        self.ever_had_camera = False
        self.file_driver: FileDriver | None = None
        self.viewers = 0
        self.sinks: dict[str, Any] = {}
        self.subscribers: set[asyncio.Queue] = set()
        self.cue_subscribers = 0
        self.last_used = time.monotonic()
        self.voice: Any = None        # media.VoiceTrack, set by the app
        self.out_tracks: dict[str, Any] = {}   # layout -> media.AvatarTrack (relayed to viewers)
        self.shared_encoder: Any = None        # media.SharedEncoder: one VP8 encode for our pages
        self._t0_ns = 0
        self._seq = 0
        # Called on the render thread with each tick's Conditioning (e.g. interop.vmc's sender):
        # each must return at once (copy into a slot, never send or wait).
        self.tick_taps: list[Callable[[Any], None]] = []

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
    def tick(self, t_ns: int) -> Any:
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

    def publish(self, rgba: np.ndarray, cond: Any, events: int, t_rendered: int) -> None:
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
            "camera": bool(self.ingest), "ingest": self.ingest_kind,
            "viewers": self.viewers, "perception": pstats,
        }


# ---------------------------------------------------------------------------------------------
# Engine: generator + render thread + session table
# ---------------------------------------------------------------------------------------------

class RenderLoop(Worker):
    """The device worker: one generator call per output tick for all live sessions."""

    def __init__(self, engine: Engine) -> None:
        super().__init__("render")
        self.engine = engine
        self.ticker = Ticker(engine.cfg.fps)
        self.frames = 0
        self.errors = 0               # render ticks that raised (the frame is skipped, not retried)
        self.error: str | None = None

    def run(self) -> None:
        eng = self.engine
        gen = eng.generator
        # a generator on remote workers takes the session ids too (one request in flight each)
        by_session = getattr(gen, "render_sessions", None)
        conds: list[Any] = []
        chars: list[str] = []
        events: list[int] = []
        last_reload = time.monotonic()
        last_error_log = 0.0
        while not self.halted:
            t = self.ticker.wait()
            sessions = eng.live
            if not sessions:
                continue
            conds.clear()
            chars.clear()
            events.clear()
            t_tick = time.perf_counter()
            try:
                for s in sessions:
                    cond, ev = s.tick(t)
                    conds.append(cond)
                    chars.append(s.character)
                    events.append(ev)
                t0 = time.perf_counter()
                if by_session is not None:
                    frames = by_session([s.sid for s in sessions], conds, chars)
                else:
                    frames = gen.render(conds, chars)
                t1 = time.perf_counter()
                eng.timer.record("render", (t1 - t0) * 1e3)
                t_rendered = time.monotonic_ns()
                for i, s in enumerate(sessions):
                    s.publish(frames[i], conds[i], events[i], t_rendered)
                self.frames += 1
                eng.timer.record("publish", (time.perf_counter() - t1) * 1e3)
                eng.timer.record("tick", (time.perf_counter() - t_tick) * 1e3)
            except Exception as e:  # keep the clock running: the next tick renders again
                self.errors += 1
                self.error = f"{type(e).__name__}: {e}"
                now = time.monotonic()
                if now - last_error_log >= 1.0:  # a generator failing every tick logs once a second
                    last_error_log = now
                    log.exception("render tick failed (%d so far)", self.errors)
            now = time.monotonic()
            if now - last_reload > 1.0:
                last_reload = now
                for s in sessions:
                    if hasattr(s.conditioner, "reload_if_changed"):
                        try:
                            with s.lock:
                                s.conditioner.reload_if_changed()
                        except UserError as e:
                            log.error("session %s: %s", s.sid, e)


class Engine:
    def __init__(self, cfg: ServerConfig, stages: Stages, loop: asyncio.AbstractEventLoop | None,
                 flat_bg: tuple[int, int, int] = (0, 255, 0)) -> None:
        self.cfg = cfg
        self.stages = stages
        # None until start() takes the running loop (tests build an Engine without one).
        self.loop: asyncio.AbstractEventLoop = loop  # type: ignore[assignment]
        self.flat_bg = flat_bg
        self.wallclock = timecode.WallClockMap()
        self.timer = StageTimer(window=600)
        self.generator: Any = None
        self.ready = False
        self.warmup_error: str | None = None
        self.sessions: dict[str, Session] = {}
        self.live: tuple[Session, ...] = ()   # snapshot read by the render thread
        self.render_loop: RenderLoop | None = None
        # Setup work that must stay off the loop and out of aiortc's default executor.
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="setup")
        self._creating: dict[str, asyncio.Future] = {}
        self.started_at = time.monotonic()
        self.worker_restarts = 0      # perception worker threads found dead and replaced

    # -- startup / shutdown -------------------------------------------------------------------
    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        try:
            self.generator = await self.loop.run_in_executor(self.pool, self.stages.generator)
            if self.cfg.character:      # --character: new sessions start as it, so load it now
                await self.loop.run_in_executor(self.pool, self.generator.prepare_character, self.cfg.character)
        except UserError as e:
            self.warmup_error = str(e)
            raise
        except Exception as e:
            self.warmup_error = f"{type(e).__name__}: {e}"
            raise
        self.render_loop = RenderLoop(self)
        self.render_loop.start()
        self.ready = True

    async def stop(self) -> None:
        if self.render_loop:
            await self.loop.run_in_executor(None, self.render_loop.stop, 2.0)
        for s in list(self.sessions.values()):
            await self.remove(s.sid)
        close = getattr(self.generator, "close", None)   # remote workers: delete the deployment
        if close is not None:
            await self.loop.run_in_executor(self.pool, close)
        self.pool.shutdown(wait=False, cancel_futures=True)

    def characters(self) -> list[str]:
        return list(self.generator.characters()) if self.generator else []

    def default_character(self) -> str:
        chars = self.characters()
        if self.cfg.character:
            return self.cfg.character       # prepared (so known) in start()
        return "nova" if "nova" in chars or not chars else chars[0]

    # -- sessions -----------------------------------------------------------------------------
    def get(self, sid: str) -> Session:
        s = self.sessions.get(sid)
        if s is None:
            raise NotFoundError(f"no session {sid!r}; sessions: {', '.join(sorted(self.sessions)) or 'none'}")
        s.last_used = time.monotonic()
        return s

    async def get_or_create(self, sid: str) -> Session:
        if not self.ready:
            raise AdmissionError("the service is still warming up; retry in a few seconds",
                                 "warming_up", retry_after_s=2)
        s = self.sessions.get(sid)
        if s is not None:
            s.last_used = time.monotonic()
            return s
        pending = self._creating.get(sid)
        if pending is not None:
            return await asyncio.shield(pending)
        if len(self.sessions) + len(self._creating) >= self.cfg.max_sessions:
            raise AdmissionError(
                f"session limit reached ({self.cfg.max_sessions} live sessions); "
                "end one or start the service with a higher --max-sessions",
                "session_limit", limit=self.cfg.max_sessions, active=len(self.sessions),
                retry_after_s=10)
        fut = self.loop.create_future()
        self._creating[sid] = fut
        try:
            perception, conditioner = await self.loop.run_in_executor(self.pool, self._make_stages)
            s = Session(sid, self, perception, conditioner, self.default_character())
            await self.loop.run_in_executor(self.pool, actions.use_character_actions, s)
            s.start()
            self.sessions[sid] = s
            self.live = tuple(self.sessions.values())
            fut.set_result(s)
            log.info("session %s created", sid)
            return s
        except BaseException as e:
            fut.set_exception(e)
            fut.exception()  # mark retrieved: concurrent waiters re-raise it themselves
            raise
        finally:
            del self._creating[sid]

    def _make_stages(self) -> Any:
        return self.stages.perception(), self.stages.conditioner()

    async def remove(self, sid: str) -> None:
        s = self.sessions.pop(sid, None)
        if s is None:
            return
        self.live = tuple(self.sessions.values())
        forget = getattr(self.generator, "forget_session", None)
        if forget is not None:
            forget(sid)
        if s.ingest is not None:
            await s.ingest.close()
        await self.loop.run_in_executor(self.pool, s.close)
        log.info("session %s closed", sid)

    async def reap_idle(self) -> None:
        """Forget sessions (other than 'default') nobody has used for `session_idle_s`."""
        now = time.monotonic()
        for sid, s in list(self.sessions.items()):
            if sid != "default" and not s.busy and now - s.last_used > self.cfg.session_idle_s:
                await self.remove(sid)

    def revive_workers(self) -> int:
        """Replace any session's perception worker whose thread died (a crash in native code, a
        BaseException): the avatar idles meanwhile instead of staying frozen on stale cues.
        Called ~1 Hz; restarts are logged and counted (/health, /metrics)."""
        revived = 0
        for s in list(self.sessions.values()):
            if getattr(s.worker, "alive", True):
                continue
            log.error("session %s: perception worker died; restarting it", s.sid)
            s.worker = self.stages.worker(s.perception, s.frames_in, s.cues)
            s.worker.start()
            self.worker_restarts += 1
            revived += 1
        return revived

    # -- sources ------------------------------------------------------------------------------
    def drive_from_file(self, s: Session, path: Path) -> None:
        if self.stages.iter_media is None:
            raise UserError("file sources are not available in this build (liveavatar.sources missing)")
        if s.file_driver:
            s.file_driver.stop()
        s.file_driver = FileDriver(s, path, self.stages.iter_media)
        s.file_driver.start()

    def stop_file(self, s: Session) -> None:
        if s.file_driver:
            s.file_driver.stop()
            s.file_driver = None

    # -- character ----------------------------------------------------------------------------
    async def set_character(self, s: Session, name: str, source: EventSource) -> dict:
        known = self.characters()
        if name not in known:
            raise NotFoundError(f"unknown character {name!r}; available: {', '.join(known)}")
        await self.loop.run_in_executor(self.pool, self.generator.prepare_character, name)
        s.character = name
        await self.loop.run_in_executor(self.pool, actions.use_character_actions, s)   # its own action set
        with s.lock:
            s.events_applied += 1
        s.publish_event({"type": "control", "session": s.sid, "kind": "character", "name": name,
                         "source": source.value, "mode": "momentary"})
        return s.state()

    # -- stats --------------------------------------------------------------------------------
    def render_ms(self) -> float:
        return self.timer.summary().get("render", {}).get("median_ms", 0.0)

    def loop_lag_ms(self) -> dict:
        lag = self.timer.summary().get("loop_lag", {})
        return {"median": round(lag.get("median_ms", 0.0), 1), "p95": round(lag.get("p95_ms", 0.0), 1)}

    def ticker_skipped(self) -> int:
        return self.render_loop.ticker.skipped if self.render_loop else 0

    def _perception_info(self) -> dict:
        """What perception really runs on (MediaPipe's legacy solutions run on the CPU through
        TFLite's XNNPACK delegate; voice activity through onnxruntime)."""
        info: dict = {"device": "cpu"}
        try:
            import mediapipe
            info["runtime"] = f"mediapipe {mediapipe.__version__} (TFLite, XNNPACK CPU delegate)"
        except ImportError:
            info["runtime"] = "unavailable"
        for s in list(self.sessions.values()):
            analyzer = getattr(s.perception, "voice_analyzer", None)
            if analyzer is not None:
                info["voice_vad_providers"] = list(analyzer.vad.providers)
            if hasattr(s.perception, "stats"):
                try:
                    st = s.perception.stats()
                    info["fps"] = st.get("fps")
                    info["ms"] = st.get("ms")
                except Exception:
                    pass
            break
        return info

    def health(self) -> dict:
        info: dict = {}
        if self.generator is not None:
            try:
                info = self.generator.info()
            except Exception as e:
                info = {"error": str(e)}
        perception = self._perception_info()
        render = self.render_loop
        return {
            "status": "ok" if self.ready else ("error" if self.warmup_error else "warming_up"),
            "error": self.warmup_error or (render.error if render else None),
            "generator": getattr(self.generator, "name", self.cfg.generator),
            "device": getattr(self.generator, "device", None),
            "generator_info": info,
            "perception": perception,
            "webrtc": {"library": "aiortc", "video_codec": "VP8 (software)", "audio_codec": "Opus"},
            "sessions": len(self.sessions), "max_sessions": self.cfg.max_sessions,
            "fps": self.cfg.fps, "size": self.cfg.size,
            "render_fps_target": self.cfg.fps,
            "uptime_s": round(time.monotonic() - self.started_at, 1),
            "perception_worker_restarts": self.worker_restarts,
            "render_errors": render.errors if render else 0,
        }
