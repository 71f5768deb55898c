"""File-to-file avatar render. Every input frame is perceived (no dropping offline), the
conditioner ticks at the output rate on the file's own timeline (a virtual clock), and the
generator draws one frame per tick; the input's audio is carried over."""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from liveavatar.clock import VirtualClock
from liveavatar.errors import UserError
from liveavatar.runtime.timing import StageTimer
from liveavatar.types import (
    AudioChunk,
    CapturedFrame,
    Conditioning,
    ControlEvent,
    ControlKind,
    Cues,
    EventSource,
    TriggerMode,
)

if TYPE_CHECKING:
    from liveavatar.conditioning import Conditioner
    from liveavatar.generation.protocol import Generator
    from liveavatar.output.video_file import VideoFileWriter


@dataclass
class RenderOptions:
    input: Path
    output: Path
    size: int = 512
    fps: float | None = None            # None: the input's rate
    character: str = "nova"
    emotion: str | None = None          # force one emotion for the whole clip
    generator: str = "auto"
    device: str | None = None
    background: tuple[int, int, int] = (0, 177, 64)
    mapping: Path | None = None


@dataclass
class RenderResult:
    output: Path
    frames: int
    seconds: float
    wall_s: float
    timings: dict = field(default_factory=dict)
    keywords: list[str] = field(default_factory=list)   # spoken keywords heard, in order
    gestures: list[tuple[str, float]] = field(default_factory=list)   # (gesture, capture time s) recognised

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0


#: Called with every analysed input frame and its cues (benchmarks read the person from these).
CuesObserver = Callable[[CapturedFrame, Cues], None]
#: Called with every output tick's conditioning and the rendered RGBA frame.
FrameObserver = Callable[[Conditioning, np.ndarray], None]


def render_file(opts: RenderOptions, progress: Callable[[int, int], None] | None = None, *,
                on_cues: CuesObserver | None = None, on_frame: FrameObserver | None = None) -> RenderResult:
    """Render opts.input to opts.output. UserError on bad input; never leaves a partial file.
    `on_cues` / `on_frame` see what perception found and what was drawn (`liveavatar bench
    fidelity` measures through them, on exactly this code path)."""
    import time

    from liveavatar.conditioning import Conditioner, load_mapping
    from liveavatar.generation import registry
    from liveavatar.output.video_file import VideoFileWriter
    from liveavatar.perception import Perception
    from liveavatar.sources.file import AudioEnd, audio_end_before_last_frame, iter_media, probe

    if not 64 <= opts.size <= 2048:
        raise UserError(f"--size {opts.size}: use 64..2048")
    if opts.fps is not None and not 1 <= opts.fps <= 120:
        raise UserError(f"--fps {opts.fps}: use 1..120")
    info = probe(opts.input)
    fps = opts.fps or info.fps
    if opts.output.resolve() == opts.input.resolve():
        raise UserError(f"{opts.output}: output would overwrite the input")

    mapping = load_mapping(opts.mapping)
    clock = VirtualClock(0)
    conditioner = Conditioner(mapping, rate_hz=fps, clock=clock)
    if opts.emotion is not None:
        if opts.emotion not in conditioner.emotions:
            raise UserError(f"unknown emotion {opts.emotion!r}; known: {', '.join(conditioner.emotions)}")
    gen = registry.create(opts.generator, opts.device, opts.size)
    if opts.character not in gen.characters():
        raise UserError(f"unknown character {opts.character!r} for generator {opts.generator}; "
                        f"available: {', '.join(gen.characters())}")
    gen.prepare_character(opts.character)
    if opts.emotion is not None:
        conditioner.push_event(ControlEvent(ControlKind.EMOTION, opts.emotion, EventSource.API,
                                            TriggerMode.TOGGLE, t_ns=0))

    # sync: every frame gets its own pose and hands, and audio is analysed in order (deterministic).
    perception = Perception(static=False, sync=True, keywords=mapping.keyword_words())
    timer = StageTimer(window=1_000_000)
    period_ns = 1e9 / fps
    n_ticks_total = max(1, int(round(info.duration_s * fps))) if info.duration_s > 0 else 0
    writer = VideoFileWriter(opts.output, gen.size, gen.size, fps,
                             info.sample_rate if info.has_audio else 0, info.channels,
                             background=opts.background)
    tick = 0
    keywords: list[str] = []
    video_end_ns = 0
    t_start = time.perf_counter()
    try:
        # The last frame after the end of the audio: a keyword said at the very end still counts.
        items = audio_end_before_last_frame(iter_media(opts.input, start_ns=0, mark_audio_end=True))
        while True:
            with timer.measure("decode"):
                item = next(items, None)
            if item is None:
                break
            if isinstance(item, AudioChunk):
                perception.process_audio(item)
                with timer.measure("encode_audio"):
                    writer.write_audio(item.samples, item.sample_rate)
                continue
            if isinstance(item, AudioEnd):
                perception.flush_audio()
                continue
            assert isinstance(item, CapturedFrame)
            with timer.measure("perception"):
                cues = perception.process_video(item)
            if on_cues is not None:
                on_cues(item, cues)
            conditioner.push_cues(cues)
            keywords += [k.word for k in cues.keywords]
            video_end_ns = item.t_capture_ns + int(period_ns)
            # Emit every output tick whose time this frame has reached.
            while tick * period_ns <= item.t_capture_ns:
                _emit(tick, clock, conditioner, gen, opts.character, writer, timer, period_ns, on_frame)
                tick += 1
                if progress:
                    progress(tick, n_ticks_total)
        if tick == 0:
            raise UserError(f"{opts.input}: contains no video frames")
        # Fill ticks up to the end of the last input frame so the durations match.
        end_ticks = int(math.ceil(video_end_ns / period_ns - 1e-6))
        while tick < end_ticks:
            _emit(tick, clock, conditioner, gen, opts.character, writer, timer, period_ns, on_frame)
            tick += 1
            if progress:
                progress(tick, n_ticks_total)
        with timer.measure("finish"):
            out = writer.finish()
    except BaseException:
        writer.abort()
        raise
    finally:
        perception.close()
    wall = time.perf_counter() - t_start
    return RenderResult(out, tick, tick / fps, wall, timer.summary(), keywords, list(conditioner.gesture_log))


def _emit(tick: int, clock: VirtualClock, conditioner: Conditioner, gen: Generator, character: str,
          writer: VideoFileWriter, timer: StageTimer, period_ns: float, on_frame: FrameObserver | None) -> None:
    t = int(tick * period_ns)
    clock.sleep_until(t)
    with timer.measure("conditioning"):
        cond = conditioner.tick(t)
    with timer.measure("generate"):
        rgba = gen.render([cond], [character])[0]
    with timer.measure("encode_video"):
        writer.write_video(rgba)
    if on_frame is not None:
        on_frame(cond, rgba)
