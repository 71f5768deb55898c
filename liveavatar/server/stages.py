"""Stage wiring: the only place the server names the stages. Tests swap in fakes."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from liveavatar.server.config import ServerConfig


@dataclass
class Stages:
    generator: Callable[[], Any]                           # -> Generator (loaded, warmed up)
    perception: Callable[[], Any]                          # -> Perception
    worker: Callable[..., Any]    # (perception, frames_in, cues_out, pace) -> PerceptionWorker
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

    def worker(perception: Any, frames_in: Any, cues_out: Any, pace: Any = None) -> Any:
        from liveavatar.perception import PerceptionWorker
        return PerceptionWorker(perception, frames_in, cues_out, pace)

    def conditioner() -> Any:
        from liveavatar.conditioning import Conditioner
        return Conditioner(load_mapping(cfg.mapping), rate_hz=cfg.fps, mapping_path=cfg.mapping)

    def iter_media(path: Any, realtime: Any = True, loop: Any = True) -> Any:
        from liveavatar.sources.file import iter_media as f
        return f(path, realtime=realtime, loop=loop, mark_audio_end=True)

    return Stages(generator, perception, worker, conditioner, iter_media)
