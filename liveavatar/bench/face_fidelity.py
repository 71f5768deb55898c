"""Face fidelity of a rendered character against real people (issue 14's measure).

Each real face clip goes through real perception and conditioning; the character is rendered
from those conditionings and MediaPipe Face Mesh reads the avatar back. Per clip we correlate the
person's and the avatar's mouth opening (inner-lip gap over face height) and eye openness (eye
aspect ratio, both eyes averaged), frame by frame.

`face_fidelity(clips, render)` takes any renderer (a batch of Conditionings -> RGBA or RGB frames):
`generator_renderer` wraps a Generator and a character; `picture_renderer` animates only the
face of one picture (FaceAnimator on the photo, the body left still) so the face animation can be
measured without the rest of a generator.

Run: python -m liveavatar.bench.face_fidelity [--character astro] [--seconds 12]
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from liveavatar.types import FP, Conditioning

Renderer = Callable[[Sequence[Conditioning]], np.ndarray]
BACKGROUND = np.array([128.0, 128.0, 128.0], np.float32)
CLIPS_DIR = Path(__file__).resolve().parents[2] / ".." / "shared" / "media" / "faces"


def mouth_open(lm: np.ndarray) -> float:
    """Inner-lip gap (13/14) over the face height (10/152); landmarks in px (or any isotropic unit)."""
    return float(np.hypot(*(lm[13, :2] - lm[14, :2])) / max(np.hypot(*(lm[10, :2] - lm[152, :2])), 1e-6))


def eye_open(lm: np.ndarray) -> float:
    """Eye aspect ratio (lids 159/145, 386/374 over corners 33/133, 362/263), both eyes averaged."""
    def ear(t: int, b: int, c0: int, c1: int) -> float:
        return float(np.hypot(*(lm[t, :2] - lm[b, :2])) / max(np.hypot(*(lm[c0, :2] - lm[c1, :2])), 1e-6))
    return 0.5 * (ear(159, 145, 33, 133) + ear(386, 374, 362, 263))


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 5 or np.std(a[ok]) < 1e-9 or np.std(b[ok]) < 1e-9:
        return float("nan")
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def _over(rgba: np.ndarray) -> np.ndarray:
    if rgba.shape[-1] == 3:
        return rgba
    a = rgba[..., 3:4].astype(np.float32) / 255.0
    return (rgba[..., :3] * a + BACKGROUND * (1.0 - a) + 0.5).astype(np.uint8)


def clip_conditionings(clip: Path, seconds: float | None = None) -> tuple[list[Conditioning], np.ndarray, np.ndarray]:
    """Real perception + conditioning over a clip: one Conditioning per input frame (ticks at the
    clip's rate), and the person's mouth / eye openness per frame (NaN where no face was found)."""
    from liveavatar.conditioning import conditioning_over
    from liveavatar.perception import Perception
    from liveavatar.sources.file import iter_media, probe
    from liveavatar.types import CapturedFrame

    fps = probe(clip).fps or 30.0
    cues, mouth, eyes = [], [], []
    with Perception(static=False, sync=True, enable_voice=False) as p:
        for item in iter_media(clip, start_ns=0, audio=False):
            if not isinstance(item, CapturedFrame):
                continue
            if seconds is not None and item.t_capture_ns > seconds * 1e9:
                break
            c = p.process_video(item)
            cues.append(c)
            if c.face.present:
                w, h = c.image_size
                lm = c.face.landmarks[:, :2] * np.array([w, h], np.float32)
                mouth.append(mouth_open(lm))
                eyes.append(eye_open(lm))
            else:
                mouth.append(np.nan)
                eyes.append(np.nan)
    conds = list(conditioning_over(cues, rate_hz=fps))
    n = min(len(conds), len(cues))
    return conds[:n], np.array(mouth[:n]), np.array(eyes[:n])


def face_fidelity(clips: Sequence[Path], render: Renderer, seconds: float | None = None,
                  batch: int = 8) -> dict[str, Any]:
    """Mouth-open and eye-openness correlation (avatar vs person) per clip and pooled.

    Returns {"clips": {name: {...}}, "mouth_corr", "eye_corr" (mean over clips), "frames",
    "avatar_found" (share of frames where Face Mesh found the avatar's face)}. Per clip also the
    avatar against its conditioning (how faithfully the generator draws what it is asked) and the
    conditioning against the person (perception + conditioning's share)."""
    import mediapipe as mp

    per: dict[str, dict[str, float]] = {}
    total, found_total = 0, 0
    for clip in clips:
        conds, p_mouth, p_eye = clip_conditionings(Path(clip), seconds)
        a_mouth = np.full(len(conds), np.nan)
        a_eye = np.full(len(conds), np.nan)
        with mp.solutions.face_mesh.FaceMesh(static_image_mode=False, refine_landmarks=True,
                                             max_num_faces=1) as fm:
            for s in range(0, len(conds), batch):
                frames = render(conds[s:s + batch])
                for k, f in enumerate(frames):
                    rgb = np.ascontiguousarray(_over(np.asarray(f)))
                    r = fm.process(rgb)
                    if not r.multi_face_landmarks:
                        continue
                    h, w = rgb.shape[:2]
                    lm = np.array([[q.x * w, q.y * h] for q in r.multi_face_landmarks[0].landmark])
                    a_mouth[s + k] = mouth_open(lm)
                    a_eye[s + k] = eye_open(lm)
        found = int(np.isfinite(a_mouth).sum())
        # What the generator was asked for: separates the conditioning's share of the error from ours.
        c_mouth = np.array([float(np.nan_to_num(c.face[FP["mouth_open"]])) for c in conds])
        c_eye = np.array([1.0 - 0.5 * float(np.nan_to_num(c.face[FP["blink_left"]] + c.face[FP["blink_right"]]))
                          for c in conds])
        per[Path(clip).name] = {"frames": len(conds), "avatar_found": found / max(len(conds), 1),
                                "mouth_corr": _corr(p_mouth, a_mouth), "eye_corr": _corr(p_eye, a_eye),
                                "mouth_corr_vs_conditioning": _corr(c_mouth, a_mouth),
                                "eye_corr_vs_conditioning": _corr(c_eye, a_eye),
                                "conditioning_mouth_corr": _corr(p_mouth, c_mouth),
                                "conditioning_eye_corr": _corr(p_eye, c_eye),
                                "person_mouth_range": float(np.nanmax(p_mouth) - np.nanmin(p_mouth))
                                if np.isfinite(p_mouth).any() else float("nan")}
        total += len(conds)
        found_total += found
    mouth = [v["mouth_corr"] for v in per.values() if np.isfinite(v["mouth_corr"])]
    eye = [v["eye_corr"] for v in per.values() if np.isfinite(v["eye_corr"])]
    return {"clips": per, "mouth_corr": float(np.mean(mouth)) if mouth else float("nan"),
            "eye_corr": float(np.mean(eye)) if eye else float("nan"), "frames": total,
            "avatar_found": found_total / max(total, 1)}


def generator_renderer(generator: Any, character: str) -> Renderer:
    """A renderer that draws `character` with a prepared Generator (batched)."""
    generator.prepare_character(character)

    def render(conds: Sequence[Conditioning]) -> np.ndarray:
        return np.asarray(generator.render(list(conds), [character] * len(conds)))
    return render


def picture_renderer(rgb: np.ndarray, face: Any, device: str = "cpu") -> Renderer:
    """Only the face animated on one picture (HxWx3 uint8), e.g. a photo with Face Mesh boxes."""
    from liveavatar.generation.mesh.face import FaceAnimator

    tex = np.concatenate([rgb.transpose(2, 0, 1).astype(np.float32) / 255.0,
                          np.ones((1,) + rgb.shape[:2], np.float32)], 0)
    anim = FaceAnimator(tex, face, device)
    x0, y0, x1, y1 = anim.box

    def render(conds: Sequence[Conditioning]) -> np.ndarray:
        patch = anim.animate(conds).patch.cpu().numpy()
        out = np.repeat(rgb[None], len(conds), 0)
        out[:, y0:y1, x0:x1] = (patch[:, :3].transpose(0, 2, 3, 1) * 255 + 0.5).clip(0, 255).astype(np.uint8)
        return out
    return render


def pack_picture_renderer(character: str, device: str = "cpu") -> Renderer:
    """Face-only renderer on a mesh pack's face layer and face boxes (e.g. the shipped "astro")."""
    from liveavatar.generation import characters
    from liveavatar.generation.mesh import pack as mesh_pack

    entry = characters.find(character)
    p = mesh_pack.load(entry.folder)
    idx = next((i for i, la in enumerate(p.manifest.layers) if la.part == "head"), 0)
    layer = p.layers[idx]
    rgb = (layer[..., :3] * layer[..., 3:4] * 255 + 0.5).clip(0, 255).astype(np.uint8)   # over black
    rgb = np.where(layer[..., 3:4] > 0, rgb, 128).astype(np.uint8)
    return picture_renderer(rgb, p.manifest.face, device)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--character", default="astro")
    ap.add_argument("--face-only", action="store_true", help="animate only the face on the pack's picture")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--seconds", type=float, default=None, help="first N seconds of each clip")
    ap.add_argument("--clips", nargs="*", type=Path, default=None)
    args = ap.parse_args(argv)
    clips = args.clips or sorted(CLIPS_DIR.glob("*.mp4"))
    if args.face_only:
        render = pack_picture_renderer(args.character)
    else:
        from liveavatar.generation import registry
        render = generator_renderer(registry.create("auto", "cpu", args.size), args.character)
    print(json.dumps(face_fidelity(clips, render, args.seconds), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
