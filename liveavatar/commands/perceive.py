"""`liveavatar perceive INPUT`: what the tracker sees, one JSON line per frame."""
from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer


def perceive(
    input: Path = typer.Argument(..., help="A video file, or an image (still mode)."),
    json_out: bool = typer.Option(True, "--json/--no-json", help="JSON lines on stdout (the default)."),
    conditioning: bool = typer.Option(False, "--conditioning",
                                      help="Print the conditioning stream (what the generator gets) instead."),
    landmarks: bool = typer.Option(False, help="Include raw landmark arrays."),
    keywords: str = typer.Option("", help="Comma-separated command words to spot (default: the mapping's)."),
    mapping: Path | None = typer.Option(None, help="Mapping file (TOML)."),
    max_frames: int = typer.Option(0, help="Stop after this many frames (0: all)."),
) -> None:
    """Show per frame which parts were found, expression and voice features (or the conditioning)."""
    from liveavatar.clock import VirtualClock
    from liveavatar.conditioning import Conditioner, conditioning_to_json, load_mapping
    from liveavatar.perception import Perception, cues_to_json
    from liveavatar.sources.file import (
        IMAGE_SUFFIXES,
        AudioEnd,
        audio_end_before_last_frame,
        iter_media,
        load_image,
        probe,
    )
    from liveavatar.types import AudioChunk, CapturedFrame

    the_mapping = load_mapping(mapping)
    words = [w.strip() for w in keywords.split(",") if w.strip()] or \
        the_mapping.keyword_words()
    still = input.suffix.lower() in IMAGE_SUFFIXES
    items: Iterator[CapturedFrame | AudioChunk | AudioEnd]
    if still:
        items = iter([CapturedFrame(load_image(input), 0, 0)])
        fps = 30.0
    else:
        fps = probe(input).fps
        # The last frame after the end of the audio: a keyword said at the very end still counts.
        items = audio_end_before_last_frame(iter_media(input, start_ns=0, mark_audio_end=True))
    # sync: every frame gets its own pose and hands, and audio is analysed in order (a file, not live)
    perception = Perception(static=still, keywords=words, sync=True)
    clock = VirtualClock(0)
    conditioner = Conditioner(the_mapping, rate_hz=fps, clock=clock) if conditioning else None
    out = sys.stdout
    n = 0
    try:
        for item in items:
            if isinstance(item, AudioChunk):
                perception.process_audio(item)
                continue
            if isinstance(item, AudioEnd):
                perception.flush_audio()
                continue
            cues = perception.process_video(item)
            if conditioner is not None:
                clock.sleep_until(item.t_capture_ns)
                conditioner.push_cues(cues)
                rec = conditioning_to_json(conditioner.tick(item.t_capture_ns), conditioner.emotions)
            else:
                rec = cues_to_json(cues, include_landmarks=landmarks)
            rec = {"frame": item.seq, "t_s": round(item.t_capture_ns / 1e9, 4), **rec}
            out.write((json.dumps(rec, default=float) if json_out else _human(rec)) + "\n")
            n += 1
            if max_frames and n >= max_frames:
                break
    except BrokenPipeError:  # `| head` closed the pipe: not an error
        pass
    finally:
        perception.close()


def _human(rec: dict) -> str:
    """One readable line: the flat numbers of a JSON record, 2 decimals."""
    parts = [f"frame {rec.pop('frame')} t={rec.pop('t_s'):.2f}s"]

    def walk(prefix: str, v: Any) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                walk(f"{prefix}{k}." if prefix or k else k, x)
        elif isinstance(v, bool):
            parts.append(f"{prefix.rstrip('.')}={'yes' if v else 'no'}")
        elif isinstance(v, (int, float)):
            parts.append(f"{prefix.rstrip('.')}={v:.2f}")
        elif isinstance(v, str):
            parts.append(f"{prefix.rstrip('.')}={v}")
    walk("", rec)
    return " ".join(parts)
