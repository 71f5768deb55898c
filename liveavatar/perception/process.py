"""Live perception with the vision models in a child process.

Why: MediaPipe's Python side (its graph calls, the landmark protobufs, our feature code) holds
the GIL for milliseconds per model per frame, and on a busy machine the OS preempts it while it
holds it. Everything else in the live service (the asyncio loop that sends WebRTC, the render
thread) then waited: the loop woke 40-60 ms late several times a second, viewers' browsers
buffered more audio to ride it out, and the lip-synced video waited with it. In a child
process vision has its own GIL; it also runs at a lower priority (nice), so when the CPU is
short the avatar keeps its frame rate and tracking lags instead.

Voice stays here (its VAD is light and releases the GIL; keyword decoding already has its own
process), and its features are merged into each frame's Cues, as `Perception` does.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from liveavatar.errors import UserError
from liveavatar.perception.pipeline import Perception, prepare_image
from liveavatar.types import AudioChunk, CapturedFrame, Cues

if TYPE_CHECKING:
    from liveavatar.runtime.child import Child

log = logging.getLogger(__name__)

MAX_SIDE = 960             # frames are downscaled to this before they cross (as Perception does)
RESTART_AFTER_S = 5.0      # a crashed child is restarted at most this often


def _vision_main(conn: Any, nice: int, max_side: int) -> None:
    """Child: a voice-less live Perception. Messages in: ("frame", shape, seq, t_ns) followed by
    the pixels as bytes; ("calibrate", seconds); ("close",). Out: ("ready",) or ("error", text),
    then (cues, stats) per frame."""
    import os
    try:
        os.nice(nice)
    except OSError:
        pass
    try:
        perception = Perception(static=False, enable_voice=False, max_side=max_side)
        perception.warmup()   # graphs are built now, while the session is being created
    except Exception as e:   # e.g. a broken MediaPipe install: the parent reports it
        conn.send(("error", f"{type(e).__name__}: {e}"))
        return
    conn.send(("ready",))
    last_stats = 0.0
    try:
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                return
            kind = msg[0]
            if kind == "close":
                return
            if kind == "calibrate":
                perception.start_calibration(msg[1])
                continue
            _, shape, seq, t_ns = msg
            data = conn.recv_bytes()
            image = np.frombuffer(data, np.uint8).reshape(shape) if shape else np.zeros(0, np.uint8)
            cues = perception.process_video(CapturedFrame(image, seq, t_ns))
            now = time.monotonic()
            stats = None
            if now - last_stats >= 0.5:    # stats ride along twice a second
                last_stats = now
                stats = perception.stats()
            conn.send((cues, stats))
    finally:
        perception.close()


class PerceptionProcess:
    """Drop-in for `Perception` in the live service (process_video from one worker thread,
    process_audio and start_calibration from anywhere, stats, close). Construction starts the
    child and waits until its models are loaded; a failure there raises UserError."""

    def __init__(self, keywords: Sequence[str] = (), keyword_threshold: float = 1e-20, nice: int = 5,
                 max_side: int = MAX_SIDE) -> None:
        self.nice, self.max_side = nice, max_side
        # Voice first: a bad keyword list is a ConfigError before any process starts.
        self._voice = Perception(static=False, keywords=keywords, keyword_threshold=keyword_threshold,
                                 pose=False, face=False, hands=False)
        self.voice_analyzer = self._voice.voice_analyzer
        self._calibrate: float | None = None
        self._stats: dict = {}
        self._lock = threading.Lock()     # one frame in flight; close() waits for it
        self._closed = False
        self.restarts = 0
        self._last_start = 0.0
        self._child: Child | None = None
        try:
            self._start()
        except BaseException:
            self._voice.close()
            raise

    # -- child lifecycle -----------------------------------------------------------------------
    def _start(self) -> None:
        from liveavatar.runtime.child import Child
        self._last_start = time.monotonic()
        self._child = Child(_vision_main, (self.nice, self.max_side), "perception-vision",
                            goodbye=("close",), error=lambda msg: UserError(f"perception could not start: {msg}"))

    def _stop_child(self) -> None:
        child, self._child = self._child, None
        if child is not None:
            child.stop()

    @property
    def process(self) -> Any:
        """The vision process (multiprocessing.Process), or None while it is down."""
        return self._child.proc if self._child is not None else None

    # -- the Perception interface ---------------------------------------------------------------
    def process_video(self, frame: CapturedFrame) -> Cues:
        image = prepare_image(frame.image, self.max_side)
        with self._lock:
            if self._closed:
                raise RuntimeError("perception is closed")
            if self._child is None:
                if time.monotonic() - self._last_start < RESTART_AFTER_S:
                    raise RuntimeError("the vision process is down; restarting it shortly")
                self.restarts += 1
                log.error("restarting the perception vision process (restart %d)", self.restarts)
                self._start()
            child = self._child
            assert child is not None
            try:
                calibrate, self._calibrate = self._calibrate, None
                if calibrate is not None:
                    child.conn.send(("calibrate", calibrate))
                shape = image.shape if image is not None else ()
                conn = child.conn
                conn.send(("frame", shape, frame.seq, frame.t_capture_ns))
                conn.send_bytes(image.data.cast("B") if image is not None else b"")
                cues, stats = conn.recv()
            except (EOFError, OSError):
                self._stop_child()
                code = child.exitcode
                raise RuntimeError(f"the vision process died (exit code {code})") from None
        if stats is not None:
            self._stats = stats
        cues.voice = self._voice.voice()
        cues.keywords = self._voice._drain_hits()
        return cues

    def process_audio(self, chunk: AudioChunk) -> None:
        self._voice.process_audio(chunk)

    def flush_audio(self, timeout: float = 10.0) -> bool:
        """End of the audio (a live track stopped): decode the utterance in progress; its keywords
        come with the next frame's cues. Blocks up to `timeout`: call it off the event loop."""
        return self._voice.flush_audio(timeout)

    def start_calibration(self, seconds: float = 3.0) -> None:
        """Never blocks the caller: the request goes with the next frame."""
        self._calibrate = max(0.2, float(seconds))

    def stats(self) -> dict:
        out = dict(self._stats)
        voice = self._voice.stats()
        for key in ("voice_cpu_fraction", "bad_audio_chunks", "voice_vad_providers"):
            if key in voice:
                out[key] = voice[key]
        dropped = dict(out.get("dropped", {}))
        dropped["audio_chunks"] = voice.get("dropped", {}).get("audio_chunks", 0)
        out["dropped"] = dropped
        out["vision_process_restarts"] = self.restarts
        return out

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._lock:
            self._stop_child()
        self._voice.close()

    def __enter__(self) -> PerceptionProcess:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
