"""What /health reports: readiness, what really runs (generator, devices, providers) and the
counters an operator checks first."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from liveavatar.server.engine import Engine


def perception_info(engine: Engine) -> dict:
    """What perception really runs on (MediaPipe's legacy solutions run on the CPU through
    TFLite's XNNPACK delegate; voice activity through onnxruntime)."""
    info: dict = {"device": "cpu"}
    try:
        import mediapipe
        info["runtime"] = f"mediapipe {mediapipe.__version__} (TFLite, XNNPACK CPU delegate)"
    except ImportError:
        info["runtime"] = "unavailable"
    for s in list(engine.sessions.values()):
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


def service_health(engine: Engine) -> dict:
    info: dict = {}
    if engine.generator is not None:
        try:
            info = engine.generator.info()
        except Exception as e:
            info = {"error": str(e)}
    perception = perception_info(engine)
    render = engine.render_loop
    return {
        "status": "ok" if engine.ready else ("error" if engine.warmup_error else "warming_up"),
        "error": engine.warmup_error or (render.error if render else None),
        "generator": getattr(engine.generator, "name", engine.cfg.generator),
        "device": getattr(engine.generator, "device", None),
        "generator_info": info,
        "perception": perception,
        "webrtc": {"library": "aiortc", "video_codec": "VP8 (software)", "audio_codec": "Opus"},
        "sessions": len(engine.sessions), "max_sessions": engine.cfg.max_sessions,
        "fps": engine.cfg.fps, "size": engine.cfg.size,
        "render_fps_target": engine.cfg.fps,
        "uptime_s": round(time.monotonic() - engine.started_at, 1),
        "perception_worker_restarts": engine.worker_restarts,
        "render_errors": render.errors if render else 0,
        **engine.governor.stats(),
    }
