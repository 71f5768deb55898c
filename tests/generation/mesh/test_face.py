"""FaceAnimator on real art: two real photos (face boxes from real MediaPipe Face Mesh at test time)
and the children's drawings in ../shared/media/drawings (face boxes placed by hand from the head
joint, as a user does in the rig editor). The animated faces are read back with Face Mesh where
it can see them (the photos) and by pixel measures everywhere."""
from __future__ import annotations

import mediapipe as mp
import numpy as np
import pytest
import torch

from liveavatar.generation.mesh import face as face_mod
from liveavatar.generation.mesh.face import FaceAnimator, boxes_from_landmarks
from liveavatar.types import EMOTIONS, FACE_PARAMS, FP, VISEMES, Conditioning
from tests.media import load_rgb

from .drawings import art


def _box(c: tuple[float, float], w: float, h: float) -> list[float]:
    return [c[0] - w / 2, c[1] - h / 2, w, h]


#: Face boxes of the drawings, placed by hand around the drawn eyes/mouth (head centre = the
#: Animated Drawings "neck" joint, which sits mid-face in these drawings; char3's face is low on
#: its candy-corn body, so it is placed like a user would in the rig editor).
DRAWING_FACES = {
    1: dict(head_center=(231, 119), head_radius=72, eye_r=_box((205, 120), 30, 26), eye_l=_box((252, 118), 30, 26),
            brow_r=_box((205, 92), 36, 12), brow_l=_box((252, 90), 36, 12), mouth=_box((237, 160), 58, 26)),
    2: dict(head_center=(169, 47), head_radius=36, eye_r=_box((156, 43), 14, 12), eye_l=_box((182, 43), 14, 12),
            brow_r=_box((156, 31), 16, 6), brow_l=_box((182, 31), 16, 6), mouth=_box((166, 70), 24, 10)),
    3: dict(head_center=(275, 290), head_radius=110, eye_r=_box((203, 300), 60, 54),
            eye_l=_box((347, 300), 60, 54), brow_r=_box((203, 255), 50, 14), brow_l=_box((347, 255), 50, 14),
            mouth=_box((285, 312), 56, 20)),
}


@pytest.fixture(scope="module")
def face_mesh():
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True, max_num_faces=1) as f:
        yield f


def _landmarks(fm, rgb: np.ndarray) -> np.ndarray | None:
    r = fm.process(np.ascontiguousarray(rgb))
    if not r.multi_face_landmarks:
        return None
    h, w = rgb.shape[:2]
    return np.array([[p.x * w, p.y * h] for p in r.multi_face_landmarks[0].landmark], np.float64)


def _texture(rgba_or_rgb: np.ndarray) -> np.ndarray:
    """(4, H, W) premultiplied float texture from HxWx3/4 uint8."""
    a = rgba_or_rgb.astype(np.float32) / 255.0
    if a.shape[2] == 3:
        a = np.dstack([a, np.ones(a.shape[:2], np.float32)])
    return np.concatenate([a[..., :3].transpose(2, 0, 1) * a[..., 3][None], a[..., 3][None]], 0)


class Subject:
    """A picture, its texture, a FaceAnimator on it, and helpers to see the result."""

    def __init__(self, name: str, tex: np.ndarray, spec: dict, device: str = "cpu"):
        self.name, self.tex, self.spec = name, tex, spec
        self.fa = FaceAnimator(tex, spec, device)

    def frames(self, conds: list[Conditioning]) -> np.ndarray:
        """Full pictures (B, H, W, 3) uint8 over grey, with the patch (and overlay) pasted in."""
        fr = self.fa.animate(conds)
        x0, y0, x1, y1 = self.fa.box
        out = np.repeat(self.tex[None], len(conds), 0)
        out[:, :, y0:y1, x0:x1] = fr.patch.cpu().numpy()
        if fr.overlay is not None:
            ox0, oy0, ox1, oy1 = self.fa.overlay_box
            H, W = self.tex.shape[1:]
            sx0, sy0, sx1, sy1 = max(ox0, 0), max(oy0, 0), min(ox1, W), min(oy1, H)
            o = fr.overlay.cpu().numpy()[:, :, sy0 - oy0:sy1 - oy0, sx0 - ox0:sx1 - ox0]
            dst = out[:, :, sy0:sy1, sx0:sx1]
            out[:, :, sy0:sy1, sx0:sx1] = o + dst * (1 - o[:, 3:4])
        rgb = out[:, :3] + (1 - out[:, 3:4]) * 0.5
        return (rgb.transpose(0, 2, 3, 1) * 255 + 0.5).clip(0, 255).astype(np.uint8)

    def crop(self, frames: np.ndarray, box: list[float], grow: float = 1.0) -> np.ndarray:
        x, y, w, h = box
        cx, cy = x + w / 2, y + h / 2
        w, h = w * grow, h * grow
        return frames[:, int(cy - h / 2):int(cy + h / 2) + 1, int(cx - w / 2):int(cx + w / 2) + 1]


@pytest.fixture(scope="module")
def photos(face_mesh) -> list[Subject]:
    out = []
    for name in ("astronaut.png", "grace_hopper.jpg"):
        rgb = load_rgb(name)
        lm = _landmarks(face_mesh, rgb)
        assert lm is not None, name
        out.append(Subject(name, _texture(rgb), boxes_from_landmarks(lm)))
    return out


@pytest.fixture(scope="module")
def drawings() -> list[Subject]:
    return [Subject(f"char{i}", _texture(art(i)), spec) for i, spec in DRAWING_FACES.items()]


def cond(**kw: float) -> Conditioning:
    """A tracked neutral conditioning with some face params / emotion / viseme / head set."""
    c = Conditioning.neutral(t_tick_ns=int(1e9))
    c.body_present = 1.0
    c.face[FP["mouth_width"]] = 0.5          # the neutral width
    for k, v in kw.items():
        if k in FP:
            c.face[FP[k]] = v
        elif k in EMOTIONS:
            c.emotion[:] = 0.0
            c.emotion[EMOTIONS.index(k)] = v
            c.emotion[0] += 1.0 - v
        elif k in VISEMES:
            c.visemes[:] = 0.0
            c.visemes[VISEMES.index(k)] = v
            c.visemes[0] += 1.0 - v
        elif k in ("yaw", "pitch", "roll"):
            c.head[("yaw", "pitch", "roll").index(k)] = v
        else:
            raise KeyError(k)
    return c


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


# ---------------------------------------------------------------------------------------------
# rest, batching, inputs
# ---------------------------------------------------------------------------------------------

def test_neutral_face_reproduces_the_picture(photos, drawings):
    for s in photos + drawings:
        frame = s.frames([cond()])[0].astype(np.float32)
        base = (s.tex[:3] + (1 - s.tex[3:4]) * 0.5).transpose(1, 2, 0) * 255
        err = np.abs(frame - base)
        assert err.mean() < 0.6, (s.name, err.mean())          # mean over the picture, 0..255
        x0, y0, x1, y1 = s.fa.box
        assert np.percentile(err[y0:y1, x0:x1], 99) < 40, s.name


def test_batched_equals_single(photos):
    s = photos[0]
    conds = [cond(blink_left=1.0), cond(mouth_open=0.7, smile=0.5), cond(happy=1.0), cond(gaze_x=-1, yaw=0.4),
             cond(sad=0.6, brow_raise_right=1.0)]
    batch = s.fa.animate(conds)
    for i, c in enumerate(conds):
        one = s.fa.animate([c])
        assert torch.allclose(batch.patch[i], one.patch[0], atol=1e-5)
        if one.overlay is not None:
            assert batch.overlay is not None and torch.allclose(batch.overlay[i], one.overlay[0], atol=1e-5)


def test_bad_inputs_render_finite(photos):
    s = photos[1]
    c = cond()
    c.face[:] = np.nan
    c.head[:] = np.inf
    c.visemes[:] = np.nan
    c.emotion[:] = -1.0
    c2 = cond()
    c2.face = np.zeros(3, np.float32)          # too short
    c2.emotion = np.ones(len(EMOTIONS) + 3, np.float32)   # unknown extra emotions
    fr = s.fa.animate([c, c2])
    assert torch.isfinite(fr.patch).all()
    assert float(fr.patch.min()) >= 0.0 and float(fr.patch.max()) <= 1.0 + 1e-5


def test_face_without_head_is_refused():
    tex = np.zeros((4, 32, 32), np.float32)
    with pytest.raises(ValueError, match="head_center"):
        FaceAnimator(tex, {"present": False})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu(photos):
    s = photos[0]
    gpu = FaceAnimator(s.tex, s.spec, "cuda")
    conds = [cond(blink_left=1.0, mouth_open=0.6), cond(happy=1.0, gaze_x=1.0)]
    a, b = s.fa.animate(conds), gpu.animate(conds)
    assert torch.allclose(a.patch, b.patch.cpu(), atol=2e-3)


# ---------------------------------------------------------------------------------------------
# eyes
# ---------------------------------------------------------------------------------------------

def _eye_openness(lm: np.ndarray) -> float:
    """Eye aspect ratio averaged over both eyes (Face Mesh lids 159/145, 386/374; corners 33/133, 362/263)."""
    def ear(t: int, b: int, c0: int, c1: int) -> float:
        return float(np.hypot(*(lm[t] - lm[b])) / np.hypot(*(lm[c0] - lm[c1])))
    return 0.5 * (ear(159, 145, 33, 133) + ear(386, 374, 362, 263))


def test_blink_covers_the_eyes_and_restores(photos, drawings, face_mesh):
    for s in photos + drawings:
        open_, shut, again = s.frames([cond(), cond(blink_left=1.0, blink_right=1.0), cond()])
        for side in ("eye_l", "eye_r"):
            box = s.fa.eyes_b[side[-1]]
            box = [box[0] + s.fa.box[0], box[1] + s.fa.box[1], box[2], box[3]]
            e_open, e_shut = (s.crop(np.stack([open_, shut]), box, 0.9).astype(np.float32) / 255)
            # the dark parts of the eye (iris, pupil) are covered by the lid: few dark pixels remain
            dark_open = (_luma(e_open) < 0.35).mean()
            dark_shut = (_luma(e_shut) < 0.35).mean()
            assert dark_open > 0.04, (s.name, side, dark_open)
            assert dark_shut < 0.6 * dark_open, (s.name, side, dark_open, dark_shut)
            # and the lid is skin coloured: close to the sampled skin
            assert np.abs(np.median(e_shut.reshape(-1, 3), 0) - s.fa.skin).max() < 0.2, s.name
        assert np.array_equal(open_, again), s.name
    for s in photos:        # Face Mesh sees the eyes close
        lm_open = _landmarks(face_mesh, s.frames([cond()])[0])
        lm_shut = _landmarks(face_mesh, s.frames([cond(blink_left=1.0, blink_right=1.0)])[0])
        assert lm_open is not None and lm_shut is not None
        assert _eye_openness(lm_shut) < 0.6 * _eye_openness(lm_open), s.name


def test_wink_closes_one_eye(photos):
    s = photos[0]
    rest, wink = s.frames([cond(), cond(blink_left=1.0)])
    diff = {}
    for side in ("l", "r"):
        b = s.fa.eyes_b[side]
        box = [b[0] + s.fa.box[0], b[1] + s.fa.box[1], b[2], b[3]]
        a, w = s.crop(np.stack([rest, wink]), box).astype(np.float32)
        diff[side] = np.abs(a - w).mean()
    assert diff["l"] > 8.0 and diff["r"] < 0.5, diff
    # the character's left eye is on the image's right
    assert s.fa.eyes["l"].centre[0] > s.fa.eyes["r"].centre[0]


def _dark_centroid(img: np.ndarray, near: np.ndarray | None = None) -> np.ndarray:
    """Darkness-weighted centroid of the dark blob nearest the crop's centre (the iris or the
    drawn eye dot; not the hair or lines at the crop's edge)."""
    import cv2
    lum = _luma(img.astype(np.float32) / 255)
    dark = (lum < 0.45).astype(np.uint8)
    n, labels, stats, cents = cv2.connectedComponentsWithStats(dark, connectivity=8)
    if n > 1:
        mid = np.array([img.shape[1], img.shape[0]]) / 2
        dist = np.hypot(*((cents[1:] - mid) / mid).T)
        best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA] / (1.0 + 3.0 * dist)))
        if near is not None:         # follow a blob found before
            best = 1 + int(np.argmin(np.hypot(*(cents[1:] - near).T)))
        keep = labels == best
    else:
        keep = np.ones(lum.shape, bool)
    w = np.clip(0.45 - lum, 0, None) * keep
    ys, xs = np.mgrid[0:img.shape[0], 0:img.shape[1]]
    return np.array([(w * xs).sum(), (w * ys).sum()]) / max(w.sum(), 1e-6)


def test_gaze_moves_the_iris(photos, drawings):
    for s in photos + drawings:
        left, mid, right, down = s.frames([cond(gaze_x=-1.0), cond(), cond(gaze_x=1.0), cond(gaze_y=1.0)])
        for side in ("l", "r"):
            eye = s.fa.eyes[side]
            assert eye.iris, (s.name, side)
            b = s.fa.eyes_b[side]
            box = [b[0] + s.fa.box[0], b[1] + s.fa.box[1], b[2], b[3]]
            cl, cm, cr, cd = (_dark_centroid(x) for x in s.crop(np.stack([left, mid, right, down]), box, 1.3))
            need = max(0.6, 0.25 * eye.travel[0])
            assert cl[0] < cm[0] - need and cr[0] > cm[0] + need, (s.name, side, cl, cm, cr)
            assert cd[1] > cm[1], (s.name, side, cm, cd)


def test_surprise_widens_and_smile_squints(photos, face_mesh):
    for s in photos:
        ear = [_eye_openness(_landmarks(face_mesh, f))
               for f in s.frames([cond(), cond(surprised=1.0), cond(happy=1.0), cond(angry=1.0)])]
        rest, surprised, happy, angry = ear
        assert surprised > 1.12 * rest, (s.name, ear)
        assert happy < 0.95 * rest and angry < 0.95 * rest, (s.name, ear)


# ---------------------------------------------------------------------------------------------
# mouth and brows
# ---------------------------------------------------------------------------------------------

def _mouth_gap(lm: np.ndarray) -> float:
    """Inner lip distance (13/14) over the face height (10/152)."""
    return float(np.hypot(*(lm[13] - lm[14])) / np.hypot(*(lm[10] - lm[152])))


def test_mouth_opens_with_a_dark_interior(photos, drawings, face_mesh):
    levels = [0.0, 0.25, 0.5, 0.75, 1.0]
    for s in photos + drawings:
        frames = s.frames([cond(mouth_open=v) for v in levels])
        b = s.fa.mouth_b
        box = [b[0] + s.fa.box[0], b[1] + s.fa.box[1], b[2], b[3] + s.fa.max_open]
        crops = s.crop(frames, box, 1.4).astype(np.float32) / 255
        lum = _luma(crops)
        rest = lum[0]
        # the interior: pixels that turned dark (not the picture's own dark lines)
        area = [float(((x < 0.3) & (rest >= 0.3)).sum()) for x in lum]
        assert area[0] == 0.0
        assert all(b_ > a_ for a_, b_ in zip(area, area[1:], strict=False)), (s.name, area)
        assert area[-1] > 0.08 * s.fa.mouth_b[2] * s.fa.max_open, (s.name, area)
    for s in photos:
        gaps = [_mouth_gap(_landmarks(face_mesh, f)) for f in s.frames([cond(mouth_open=v) for v in (0.0, 0.5, 1.0)])]
        assert gaps[2] > gaps[1] > gaps[0] and gaps[2] > gaps[0] + 0.03, (s.name, gaps)


def test_visemes_shape_the_mouth(photos):
    s = photos[0]
    frames = s.frames([cond(A=1.0), cond(I=1.0), cond(U=1.0), cond(O=1.0)])
    b = s.fa.mouth_b
    box = [b[0] + s.fa.box[0], b[1] + s.fa.box[1], b[2], b[3] + s.fa.max_open]
    rest = _luma(s.crop(s.frames([cond()]), box, 1.4)[0].astype(np.float32) / 255)
    dims = {}
    for name, img in zip("AIUO", s.crop(frames, box, 1.4), strict=True):
        m = (_luma(img.astype(np.float32) / 255) < 0.3) & (rest >= 0.3)
        ys, xs = np.nonzero(m)
        assert len(xs) > 3, name
        dims[name] = (xs.ptp() + 1, ys.ptp() + 1)
    assert dims["A"][1] > dims["I"][1]              # A is tall, I flat
    assert dims["U"][0] < dims["A"][0] and dims["O"][0] < dims["A"][0]   # U and O are narrow
    assert dims["O"][1] > dims["U"][1]


def test_smile_lifts_the_mouth_corners(photos):
    s = photos[0]
    rest, smile, sad = s.frames([cond(), cond(smile=1.0), cond(sad=1.0)])
    # the displacement field moves the corners up (smile) / down (sad): measured on the field itself
    p = s.fa.params([cond(smile=1.0), cond(sad=1.0)])
    k = s.fa.coefficients(p)
    assert k[0, face_mod.BI["mouth_corners"]] > 1.0 > -1.0 > k[1, face_mod.BI["mouth_corners"]]
    b = s.fa.mouth_b
    box = [b[0] + s.fa.box[0], b[1] + s.fa.box[1], b[2], b[3]]
    for img in (smile, sad):
        assert np.abs(s.crop(img[None], box)[0].astype(np.float32) - s.crop(rest[None], box)[0]).mean() > 1.0


def test_brows_raise_per_side_and_furrow(photos, face_mesh):
    for s in photos:
        rest, up_l, up_both, furrow = s.frames([cond(), cond(brow_raise_left=1.0),
                                               cond(brow_raise_left=1.0, brow_raise_right=1.0),
                                               cond(brow_furrow=1.0)])
        lm = {k: _landmarks(face_mesh, f) for k, f in (("rest", rest), ("up_l", up_l), ("both", up_both),
                                                       ("furrow", furrow))}
        brow_l, brow_r = [334, 296, 336, 285, 295], [105, 66, 107, 55, 65]   # subject's left on image right

        def height(m: np.ndarray, idx: list[int], eye: tuple[int, int]) -> float:
            return float(m[list(eye), 1].mean() - m[idx, 1].mean())    # brow above the eye, px
        h = {k: (height(m, brow_l, (386, 374)), height(m, brow_r, (159, 145))) for k, m in lm.items()}
        assert h["up_l"][0] > h["rest"][0] + 0.8, (s.name, h)        # the left brow rose
        assert abs(h["up_l"][1] - h["rest"][1]) < 0.5 * (h["up_l"][0] - h["rest"][0]), (s.name, h)
        assert h["both"][1] > h["rest"][1] + 0.8, (s.name, h)
        # furrow: the inner brow ends come together and down (the field at the inner brow ends)
        d = s.fa.displacement([cond(brow_furrow=1.0)])[0].numpy()
        ox, oy = s.fa.box[:2]
        for idx, towards in ((285, -1.0), (55, 1.0)):          # inner end of the left / right brow
            x, y = int(lm["rest"][idx, 0] - ox), int(lm["rest"][idx, 1] - oy)
            assert d[y, x, 0] * towards > 0.5 and d[y, x, 1] > 0.3, (s.name, idx, d[y, x])
    # and Face Mesh sees the astronaut's brows come together
    s = photos[0]
    rest, furrow = s.frames([cond(), cond(brow_furrow=1.0)])
    inner = [float(m[285, 0] - m[55, 0]) for m in (_landmarks(face_mesh, rest), _landmarks(face_mesh, furrow))]
    assert inner[1] < inner[0] - 0.5, inner


def test_head_turn_moves_features_more_than_the_outline(drawings):
    for s in drawings:
        rest, turned, nod = s.frames([cond(), cond(yaw=0.6), cond(pitch=0.6)])
        for side in ("l", "r"):                 # the eyes (their dark dots) move right / down
            b = s.fa.eyes_b[side]
            box = [b[0] + s.fa.box[0], b[1] + s.fa.box[1], b[2], b[3]]
            crops = s.crop(np.stack([rest, turned, nod]), box, 1.25)
            c0 = _dark_centroid(crops[0])
            c1, c2 = _dark_centroid(crops[1], near=c0), _dark_centroid(crops[2], near=c0)
            assert c1[0] > c0[0] + 0.02 * s.fa.radius, (s.name, side, c0, c1)
            assert c2[1] > c0[1] + 0.02 * s.fa.radius, (s.name, side, c0, c2)
        d = s.fa.displacement([cond(yaw=0.6)])[0].numpy()
        m = s.fa.mouth_b
        assert d[int(m[1] + m[3] / 2), int(m[0] + m[2] / 2), 0] > 0.1 * s.fa.radius
        # the outline: the patch border (and the alpha) stays where it was
        x0, y0, x1, y1 = s.fa.box
        fr = s.fa.animate([cond(), cond(yaw=0.6)]).patch.numpy()
        assert np.allclose(fr[0, 3], fr[1, 3], atol=0.02) or s.tex[3, y0:y1, x0:x1].min() == 1.0
        edge = np.abs(fr[1, :, :2] - fr[0, :, :2]).mean() + np.abs(fr[1, :, -2:] - fr[0, :, -2:]).mean()
        assert edge < 0.01, (s.name, edge)


# ---------------------------------------------------------------------------------------------
# emotions
# ---------------------------------------------------------------------------------------------

def _colour_mask(img: np.ndarray, rgb: tuple[int, int, int], tol: float = 60.0) -> np.ndarray:
    return np.abs(img.astype(np.float32) - np.array(rgb, np.float32)).sum(-1) < tol


def test_emotions_add_their_marks_at_the_face(photos, drawings):
    for s in photos + drawings:
        names = ["neutral", "happy", "sad", "angry", "surprised", "excited", "shy"]
        frames = dict(zip(names, s.frames([cond()] + [cond(**{n: 1.0}) for n in names[1:]]), strict=True))
        hc, r = np.array(s.fa.head_c) + s.fa.box[:2], s.fa.radius
        H, W = frames["neutral"].shape[:2]
        ys, xs = np.mgrid[0:H, 0:W]
        dist = np.hypot(xs - hc[0], ys - hc[1]) / r
        for n in names[1:]:
            changed = np.abs(frames[n].astype(np.float32) - frames["neutral"]).sum(-1) > 30
            assert changed.sum() > 0.02 * r * r, (s.name, n)
            assert np.percentile(dist[changed], 95) < 1.9, (s.name, n)   # at the face, scaled to the head
        def new(n: str, rgb: tuple[int, int, int], frames: dict = frames) -> np.ndarray:
            return _colour_mask(frames[n], rgb) & ~_colour_mask(frames["neutral"], rgb)
        assert new("happy", (255, 215, 40)).sum() > 0.01 * r * r or s.fa.overlay_box is None, s.name   # sparkles
        assert new("excited", (255, 215, 40)).sum() > new("happy", (255, 215, 40)).sum(), s.name
        tears = new("sad", (100, 180, 255))
        assert tears.sum() > 0.01 * r * r, s.name
        eye_y = min(s.fa.eyes["l"].centre[1], s.fa.eyes["r"].centre[1]) + s.fa.box[1]
        assert np.median(ys[tears]) > eye_y, s.name                   # tears run below the eyes
        mark = new("angry", (225, 20, 25))
        assert mark.sum() > 0.003 * r * r, s.name
        def blush(n: str, frames: dict = frames) -> np.ndarray:
            return (frames[n][..., 0].astype(int) - frames["neutral"][..., 0] > 10) & \
                (frames[n][..., 1].astype(int) < frames["neutral"][..., 1])
        assert blush("shy").sum() > blush("happy").sum() > 0.02 * r * r, s.name
        assert new("surprised", (120, 200, 255)).sum() > 0, s.name   # sweat drop


def test_emotion_mix_blends_the_marks(photos):
    s = photos[0]
    half, full = s.frames([cond(sad=0.5), cond(sad=1.0)])
    rest = s.frames([cond()])[0].astype(np.float32)
    d_half = np.abs(half.astype(np.float32) - rest).sum()
    d_full = np.abs(full.astype(np.float32) - rest).sum()
    assert 0.2 * d_full < d_half < 0.9 * d_full


def test_auto_blink_only_without_tracking(photos):
    s = photos[0]
    c_idle = cond()
    c_idle.body_present = 0.0
    from liveavatar.generation.rig2d.motion import AUTO_BLINK_FIRST_S, AUTO_BLINK_PERIOD_S, AUTO_BLINK_S
    # the middle of the second automatic blink
    c_idle.t_tick_ns = int((AUTO_BLINK_FIRST_S + AUTO_BLINK_PERIOD_S + AUTO_BLINK_S / 2) * 1e9)
    c_live = cond()
    c_live.t_tick_ns = c_idle.t_tick_ns
    idle, live = s.fa.animate([c_idle, c_live]).patch
    rest = s.fa.animate([cond()]).patch[0]
    assert (idle - rest).abs().mean() > 1e-3
    assert torch.allclose(live, rest)


def test_reads_face_params_another_stage_appends(photos, monkeypatch):
    """Appended FACE_PARAMS (eye_wide_* are real now; mouth_pucker may come) are read by name
    when present."""
    s = photos[0]
    wanted = ("eye_wide_left", "eye_wide_right", "mouth_pucker")
    extra = tuple(n for n in wanted if n not in FACE_PARAMS)
    fp = {n: i for i, n in enumerate(FACE_PARAMS + extra)}
    monkeypatch.setattr(face_mod, "FP", fp)
    c = cond(mouth_open=0.8)
    c.face = np.concatenate([c.face, np.zeros(len(extra), np.float32)])
    wide = cond(mouth_open=0.8)
    wide.face = np.concatenate([wide.face, np.zeros(len(extra), np.float32)])
    for name in wanted:
        wide.face[fp[name]] = 1.0
    p = s.fa.params([c, wide])
    assert p["open_l"][1] > p["open_l"][0] and p["open_r"][1] > p["open_r"][0]
    assert p["mouth_w"][1] < p["mouth_w"][0] and p["round"][1] > p["round"][0]
