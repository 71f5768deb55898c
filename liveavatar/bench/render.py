"""Offline render speed: a 640x480 clip of a real person talking (the bundled demo, looped to
the asked length) rendered to WebM-with-alpha and to MP4, end to end through the CLI's code path."""
from __future__ import annotations

import tempfile
from pathlib import Path

from liveavatar.bench import report


def _make_clip(seconds: float, out: Path) -> Path:

    from liveavatar.output.video_file import VideoFileWriter
    from liveavatar.paths import assets_dir
    from liveavatar.sources.file import iter_media
    from liveavatar.types import AudioChunk, CapturedFrame

    n_frames = int(seconds * 30)
    src = assets_dir() / "demo.mp4"
    w = None
    n = 0
    for item in iter_media(src, loop=True, start_ns=0):
        if isinstance(item, AudioChunk):
            if w is None:
                continue
            w.write_audio(item.samples, item.sample_rate)
            continue
        if not isinstance(item, CapturedFrame):
            continue
        if w is None:
            h, wd = item.image.shape[:2]
            w = VideoFileWriter(out, wd, h, 30, 22050, 1)
        import numpy as np
        rgba = np.concatenate([item.image, np.full(item.image.shape[:2] + (1,), 255, np.uint8)], axis=2)
        w.write_video(rgba)
        n += 1
        if n >= n_frames:
            break
    assert w is not None, f"{src} has no video"
    w.finish()
    return out


def run(seconds: float = 10.0) -> dict:
    from liveavatar.offline.render import RenderOptions, render_file

    rows = []
    extra = {}
    with tempfile.TemporaryDirectory() as d:
        clip = _make_clip(seconds, Path(d) / "clip.mp4")
        for suffix in ("webm", "mp4"):
            res = render_file(RenderOptions(input=clip, output=Path(d) / f"out.{suffix}"))
            rows.append(report.row(f"render 640x480 {seconds:.0f}s -> 512x512 {suffix}", res.fps, None, "fps",
                                   f"{res.wall_s:.1f} s wall for {res.seconds:.1f} s of video "
                                   f"({res.seconds / res.wall_s:.2f}x real time)"))
            for stage, s in res.timings.items():
                rows.append(report.row(f"  {suffix} stage {stage}", s["median_ms"], s["p95_ms"], "ms"))
            extra[suffix] = {"fps": res.fps, "wall_s": res.wall_s, "timings": res.timings}
    return report.result("render", rows, **extra)
