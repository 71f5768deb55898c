"""Draws the shipped character packs (nova, bolt) as layered PNGs plus their manifest.

Run once: `python -m liveavatar.generation.rig2d.draw` (writes models/characters/<name>/).
The output is committed; this script is the "source" of the art (CC0, the project's own).
Everything is drawn 4x supersampled and downscaled, so edges are anti-aliased.

Geometry is in reference pixels of a 512x512 canvas. Limb textures are drawn hanging straight
down from their pivot (rest angle 0); the torso and neck point up from theirs (rest angle pi).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from liveavatar.paths import models_dir
from liveavatar.types import EMOTIONS, VISEMES

SS = 4  # supersampling factor

# Shared rig geometry (reference px). A pack may change these; the renderer reads the manifest.
RIG: dict[str, Any] = {
    "reference_size": 512,
    "hips": [256.0, 300.0],
    "body_height": 390.0,
    "shoulder_half_width": 48.0,
    "hip_half_width": 24.0,
    "bone_lengths": {"spine": 100.0, "neck": 52.0, "upper_arm": 78.0, "lower_arm": 72.0,
                     "upper_leg": 88.0, "lower_leg": 86.0},
}
FACE_CANVAS = 160
HEAD_PIVOT = (80.0, 86.0)       # head centre inside the face canvas (attaches to the neck end)
EYES_BOX = (36, 66, 88, 30)      # x, y, w, h inside the face canvas
BROWS_BOX = (36, 44, 88, 30)
BROW_Y = 66.0                    # resting brow line in the face canvas: near the eyes, as Face Mesh
                                 # expects brows (drawn higher, it reads them where brows usually are)
MOUTH_BOX = (52, 100, 56, 30)
EYE_DX = 18                      # eye centres at box centre +- EYE_DX


@dataclass
class Style:
    name: str
    display_name: str
    description: str
    skin: tuple
    skin_dark: tuple
    hair: tuple
    shirt: tuple
    shirt_dark: tuple
    pants: tuple
    shoes: tuple
    iris: tuple
    lips: tuple
    line: tuple = (40, 28, 30, 255)
    robot: bool = False
    extra: dict = field(default_factory=dict)


NOVA = Style("nova", "Nova", "Default human-like cartoon streamer (flat-shaded, MediaPipe-friendly).",
             skin=(238, 196, 160, 255), skin_dark=(214, 164, 128, 255), hair=(78, 46, 30, 255),
             shirt=(60, 110, 200, 255), shirt_dark=(40, 80, 160, 255), pants=(50, 52, 70, 255),
             shoes=(30, 30, 34, 255), iris=(70, 45, 30, 255), lips=(196, 84, 92, 255))
BOLT = Style("bolt", "Bolt", "A teal-and-orange robot with a square head and a visor.",
             skin=(150, 170, 182, 255), skin_dark=(110, 128, 140, 255), hair=(240, 130, 40, 255),
             shirt=(30, 150, 140, 255), shirt_dark=(20, 110, 104, 255), pants=(70, 78, 90, 255),
             shoes=(240, 130, 40, 255), iris=(0, 230, 255, 255), lips=(20, 30, 40, 255),
             line=(20, 26, 34, 255), robot=True)


class Layer:
    """A supersampled RGBA drawing surface of `w` x `h` final pixels."""

    def __init__(self, w: int, h: int):
        self.w, self.h = w, h
        self.img = Image.new("RGBA", (w * SS, h * SS), (0, 0, 0, 0))
        self.d = ImageDraw.Draw(self.img)

    @staticmethod
    def _s(v: Any) -> Any:
        return [round(x * SS) for x in v]

    def ellipse(self, cx: Any, cy: Any, rx: Any, ry: Any, fill: Any = None, outline: Any = None, width: Any = 0) -> Any:
        self.d.ellipse(self._s([cx - rx, cy - ry, cx + rx, cy + ry]), fill=fill, outline=outline,
                       width=round(width * SS))

    def rect(self, x0: Any, y0: Any, x1: Any, y1: Any, fill: Any = None, radius: Any = 0, outline: Any = None,
             width: Any = 0) -> Any:
        self.d.rounded_rectangle(self._s([x0, y0, x1, y1]), radius=radius * SS, fill=fill,
                                 outline=outline, width=round(width * SS))

    def poly(self, pts: Any, fill: Any = None, outline: Any = None) -> Any:
        self.d.polygon([(x * SS, y * SS) for x, y in pts], fill=fill, outline=outline)

    def line(self, pts: Any, fill: Any, width: Any) -> Any:
        self.d.line([(x * SS, y * SS) for x, y in pts], fill=fill, width=round(width * SS), joint="curve")
        r = width / 2  # round caps
        for x, y in (pts[0], pts[-1]):
            self.ellipse(x, y, r, r, fill=fill)

    def capsule(self, x: Any, y0: Any, y1: Any, w: Any, fill: Any, outline: Any = None) -> Any:
        if outline is not None:
            self.line([(x, y0), (x, y1)], outline, w + 3)
        self.line([(x, y0), (x, y1)], fill, w)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.img.resize((self.w, self.h), Image.Resampling.LANCZOS).save(path, optimize=True)


def arc_pts(cx: Any, cy: Any, half_w: Any, bend: Any, n: Any = 16, tilt: Any = 0.0) -> Any:
    """Points of a parabola-ish arc: bend > 0 bulges up (smile when negative... see callers)."""
    xs = np.linspace(-half_w, half_w, n)
    return [(cx + x, cy - bend * (1 - (x / half_w) ** 2) + tilt * x / half_w) for x in xs]


# ------------------------------------------------------------------------------------------------
# Body parts
# ------------------------------------------------------------------------------------------------

def draw_body(st: Style, out: Path) -> list[dict]:
    L = RIG["bone_lengths"]
    parts = []

    def part(name: Any, layer: Any, joint: Any, bone: Any, pivot: Any, rest: Any, depth: Any) -> Any:
        layer.save(out / "parts" / f"{name}.png")
        parts.append({"name": name, "file": f"parts/{name}.png", "joint": joint, "bone": bone,
                      "pivot": list(pivot), "rest_angle": rest, "depth": depth})

    # Torso: pivot at the hips centre, pointing up to the shoulders.
    sw, hw = RIG["shoulder_half_width"], RIG["hip_half_width"]
    W, H = 2 * sw + 24, L["spine"] + 40
    t = Layer(int(W), int(H))
    cx, hy, sy = W / 2, H - 18, H - 18 - L["spine"]
    if st.robot:
        t.rect(cx - sw + 2, sy - 4, cx + sw - 2, hy + 10, fill=st.shirt, radius=10, outline=st.line, width=2)
        t.rect(cx - 22, sy + 22, cx + 22, sy + 62, fill=st.shirt_dark, radius=6)
        t.ellipse(cx, sy + 42, 10, 10, fill=st.iris)
    else:
        t.poly([(cx - sw - 4, sy + 6), (cx + sw + 4, sy + 6), (cx + hw + 12, hy + 6), (cx - hw - 12, hy + 6)],
               fill=st.shirt)
        t.ellipse(cx - sw + 4, sy + 10, 14, 12, fill=st.shirt)   # rounded shoulders
        t.ellipse(cx + sw - 4, sy + 10, 14, 12, fill=st.shirt)
        t.ellipse(cx, sy + 2, 16, 9, fill=st.skin)               # neckline
        t.line([(cx - 12, sy + 12), (cx, sy + 22), (cx + 12, sy + 12)], st.shirt_dark, 3)
    t.rect(cx - hw - 14, hy - 4, cx + hw + 14, hy + 14, fill=st.pants, radius=5)  # belt line/pelvis
    part("torso", t, "hips", "spine", (cx, hy), math.pi, 20)

    n = Layer(30, int(L["neck"]) + 16)
    n.rect(6, 0, 24, L["neck"] + 8, fill=st.skin_dark if not st.robot else st.pants, radius=6)
    part("neck", n, "shoulders", "neck", (15, L["neck"] + 8), math.pi, 5)

    def limb(name: Any, length: Any, width: Any, colour: Any, joint: Any, bone: Any, depth: Any, foot: Any = 0) -> Any:
        w = int(width + 14 + abs(foot) * 2)
        lay = Layer(w, int(length + width + 16))
        x, y0 = w / 2, width / 2 + 4
        lay.capsule(x, y0, y0 + length, width, colour, outline=st.line)
        if foot:
            fx = x + foot
            lay.ellipse(fx, y0 + length + 2, 15, 8, fill=st.shoes, outline=st.line, width=1.5)
        part(name, lay, joint, bone, (x, y0), 0.0, depth)

    sleeve = st.shirt
    arm_skin = st.skin if not st.robot else st.skin_dark
    for side, sgn in (("l", 1), ("r", -1)):
        limb(f"upper_leg_{side}", L["upper_leg"], 30, st.pants, f"hip_{side}", f"upper_leg_{side}", 10)
        limb(f"lower_leg_{side}", L["lower_leg"], 26, st.pants, f"knee_{side}", f"lower_leg_{side}", 11,
             foot=sgn * 8)
        limb(f"upper_arm_{side}", L["upper_arm"], 24, sleeve, f"shoulder_{side}", f"upper_arm_{side}", 40)
        limb(f"lower_arm_{side}", L["lower_arm"], 19, arm_skin, f"elbow_{side}", f"lower_arm_{side}", 41)
        h = Layer(44, 48)
        if st.robot:
            h.rect(10, 4, 34, 30, fill=st.skin, radius=5, outline=st.line, width=1.5)
            h.rect(12, 28, 18, 42, fill=st.skin_dark, radius=2)
            h.rect(26, 28, 32, 42, fill=st.skin_dark, radius=2)
        else:
            h.ellipse(22, 20, 12, 15, fill=st.skin, outline=st.line, width=1.5)
            h.ellipse(22 + sgn * 11, 16, 4, 8, fill=st.skin, outline=st.line, width=1.2)   # thumb
            for k in range(4):
                h.line([(15 + k * 4.7, 28), (15 + k * 4.7, 37)], st.skin_dark, 3.2)
        part(f"hand_{side}", h, f"wrist_{side}", f"lower_arm_{side}", (22, 6), 0.0, 42)
    return parts


# ------------------------------------------------------------------------------------------------
# Head and face
# ------------------------------------------------------------------------------------------------

def draw_head(st: Style, out: Path) -> None:
    F = FACE_CANVAS
    cx, cy = HEAD_PIVOT
    head = Layer(F, F)
    if st.robot:
        head.line([(cx, cy - 58), (cx, cy - 40)], st.line, 3)                  # antenna
        head.ellipse(cx, cy - 60, 6, 6, fill=st.hair)
        head.rect(cx - 46, cy - 42, cx + 46, cy + 44, fill=st.skin, radius=16, outline=st.line, width=2.5)
        head.rect(cx - 52, cy - 12, cx - 44, cy + 12, fill=st.hair, radius=3)  # ear bolts
        head.rect(cx + 44, cy - 12, cx + 52, cy + 12, fill=st.hair, radius=3)
        head.rect(cx - 38, cy - 24, cx + 38, cy + 6, fill=(24, 34, 46, 255), radius=10)  # visor
    else:
        head.ellipse(cx, cy - 6, 46, 46, fill=st.hair)                          # hair back
        head.rect(cx - 46, cy - 10, cx + 46, cy + 30, fill=st.hair, radius=14)
        head.ellipse(cx - 39, cy + 4, 7, 10, fill=st.skin_dark)                # ears
        head.ellipse(cx + 39, cy + 4, 7, 10, fill=st.skin_dark)
        head.ellipse(cx, cy, 38, 47, fill=st.skin)                             # face
        head.line([(cx - 2, cy + 4), (cx - 4, cy + 16), (cx + 3, cy + 17)], st.skin_dark, 2.5)  # nose
        # fringe, high enough to leave the brows skin to move over (raised brows must show)
        head.poly([(cx - 40, cy - 24), (cx - 30, cy - 48), (cx + 10, cy - 54), (cx + 38, cy - 40),
                   (cx + 40, cy - 22), (cx + 18, cy - 38), (cx - 10, cy - 37)], fill=st.hair)
    head.save(out / "face" / "head.png")

    # Pupils (one layer for both eyes, in the eyes box): moved by gaze, hidden outside the eye mask.
    ex, ey, ew, eh = EYES_BOX
    pup = Layer(ew, eh)
    for sx in (ew / 2 - EYE_DX, ew / 2 + EYE_DX):
        if st.robot:
            pup.rect(sx - 5, eh / 2 - 4, sx + 5, eh / 2 + 4, fill=st.iris, radius=2)
        else:
            pup.ellipse(sx, eh / 2, 5.5, 5.5, fill=st.iris)
            pup.ellipse(sx, eh / 2, 2.6, 2.6, fill=(15, 10, 10, 255))
            pup.ellipse(sx + 2, eh / 2 - 2, 1.5, 1.5, fill=(255, 255, 255, 255))
    pup.save(out / "face" / "pupils.png")


def draw_expressions(st: Style, out: Path) -> dict:
    ex, ey, ew, eh = EYES_BOX
    bx, by, bw, bh = BROWS_BOX
    mx, my, mw, mh = MOUTH_BOX
    F = FACE_CANVAS
    cx, cy = HEAD_PIVOT
    white = (250, 250, 250, 255) if not st.robot else (24, 34, 46, 255)
    line = st.line
    expressions = {}
    for emo in EMOTIONS:
        files: dict[str, Any] = {}
        # ---- eyes + eye mask (where pupils may show)
        eyes, mask = Layer(ew, eh), Layer(ew, eh)
        for side in (-1, 1):                   # -1: image-left eye (character's right)
            x, y = ew / 2 + side * EYE_DX, eh / 2
            rx, ry = {"surprised": (10, 10), "excited": (10, 9.5), "shy": (8.5, 5)}.get(emo, (9.5, 7))
            if emo == "happy":                 # closed, smiling eyes: ^ ^
                eyes.line(arc_pts(x, y + 2, 9, 6), st.iris if st.robot else line, 3)
                continue
            eyes.ellipse(x, y, rx, ry, fill=white, outline=line, width=2)
            mask.ellipse(x, y, rx - 1.5, ry - 1.5, fill=(255, 255, 255, 255))
            lid = None
            if emo == "sad":                   # outer corner droops
                lid = [(x - side * 12, y - 3), (x + side * 12, y + 3), (x + side * 12, y - 12), (x - side * 12, y - 12)]
            elif emo == "angry":               # inner corner pressed down
                lid = [(x - side * 12, y + 2), (x + side * 12, y - 4), (x + side * 12, y - 12), (x - side * 12, y - 12)]
            elif emo == "shy":                 # lowered lids
                lid = [(x - 12, y - 1), (x + 12, y - 1), (x + 12, y - 12), (x - 12, y - 12)]
            if lid is not None:
                skin = st.skin if not st.robot else (24, 34, 46, 255)
                eyes.poly(lid, fill=skin)
                mask.poly(lid, fill=(0, 0, 0, 0))
                eyes.line([lid[0], lid[1]], line, 2.2)
            if emo == "excited":               # star highlights over the pupils happen in extras
                pass
        eyes.save(out / "face" / f"eyes_{emo}.png")
        mask.save(out / "face" / f"eyemask_{emo}.png")
        files["eyes"] = f"face/eyes_{emo}.png"
        files["eye_mask"] = f"face/eyemask_{emo}.png"

        # ---- brows
        brows = Layer(bw, bh)
        brow_col = st.line if not st.robot else st.iris     # darker than the hair: readable
        for side in (-1, 1):
            x, y = bw / 2 + side * EYE_DX, BROW_Y - by
            lift = {"happy": 3, "surprised": 6, "excited": 5, "sad": 1, "shy": 1}.get(emo, 0)
            # inner end tilt: + raises the inner end (sad), - presses it down (angry)
            inner = {"sad": 5, "shy": 3, "angry": -6}.get(emo, 0)
            xi, xo = x - side * 10, x + side * 10
            pts = [(xo, y - lift + 1), (x, y - lift - 2), (xi, y - lift - inner)]
            brows.line(pts, brow_col, 4.0 if emo == "angry" else 3.2)
        brows.save(out / "face" / f"brows_{emo}.png")
        files["brows"] = f"face/brows_{emo}.png"

        # ---- mouths: the resting (closed) one and one fully open shape per viseme
        corner = {"happy": 5, "excited": 7, "sad": -5, "angry": -4, "shy": 1}.get(emo, 0)
        wscale = {"excited": 1.15, "happy": 1.1, "shy": 0.75, "surprised": 0.8}.get(emo, 1.0)
        mcx, mcy = mw / 2, mh / 2
        closed = Layer(mw, mh)
        if emo == "surprised":
            closed.ellipse(mcx, mcy, 6, 7, fill=(110, 30, 40, 255), outline=st.lips, width=2.5)
        elif emo == "excited":
            closed.poly([(mcx - 16, mcy - 4)] + [(mcx + 16 * math.cos(a), mcy - 4 + 11 * math.sin(a))
                                                 for a in np.linspace(0, math.pi, 12)], fill=(110, 30, 40, 255))
            closed.line([(mcx - 16, mcy - 4), (mcx + 16, mcy - 4)], st.lips, 2.5)
        elif emo == "shy":
            closed.line([(mcx - 8, mcy), (mcx - 4, mcy - 2), (mcx, mcy), (mcx + 4, mcy - 2), (mcx + 8, mcy)],
                        st.lips, 2.5)
        else:
            half = 13 * wscale
            closed.line(arc_pts(mcx, mcy + corner * 0.5, half, -corner), st.lips, 3.5 if emo == "angry" else 3)
        closed.save(out / "face" / f"mouth_{emo}_closed.png")
        mouths = {"closed": f"face/mouth_{emo}_closed.png"}
        shapes = {"A": (15, 11), "I": (17, 5), "U": (7, 7), "E": (15, 7), "O": (10, 11)}
        for vis in VISEMES[1:]:
            hw_i, hh = shapes[vis]
            hw_ = hw_i * wscale
            m = Layer(mw, mh)
            n = 24
            top = [(mcx + hw_ * math.cos(a), mcy - corner * 0.6 * abs(math.cos(a)) - hh * 0.55 * math.sin(a))
                   for a in np.linspace(math.pi, 0, n)]
            bot = [(mcx + hw_ * math.cos(a), mcy - corner * 0.6 * abs(math.cos(a)) + hh * math.sin(a))
                   for a in np.linspace(0, math.pi, n)]
            m.poly(top + bot, fill=st.lips)
            inner_top = [(mcx + (hw_ - 3) * math.cos(a),
                          mcy - corner * 0.5 * abs(math.cos(a)) - (hh * 0.55 - 2.5) * math.sin(a))
                         for a in np.linspace(math.pi, 0, n)]
            inner_bot = [(mcx + (hw_ - 3) * math.cos(a), mcy - corner * 0.5 * abs(math.cos(a)) + (hh - 3) * math.sin(a))
                         for a in np.linspace(0, math.pi, n)]
            m.poly(inner_top + inner_bot, fill=(90, 20, 30, 255) if not st.robot else st.iris)
            if hh > 8 and not st.robot:
                m.rect(mcx - hw_ * 0.55, mcy - hh * 0.55 + 2, mcx + hw_ * 0.55, mcy - hh * 0.55 + 5,
                       fill=(250, 250, 250, 255), radius=1)   # upper teeth
            m.save(out / "face" / f"mouth_{emo}_{vis}.png")
            mouths[vis] = f"face/mouth_{emo}_{vis}.png"
        files["mouth"] = mouths

        # ---- extras: under the features (blush, tint) and over them (tears, marks, sparkles)
        back, front = Layer(F, F), Layer(F, F)
        blush = {"happy": 110, "excited": 150, "shy": 220}.get(emo)
        if blush:
            for side in (-1, 1):
                back.ellipse(cx + side * 24, cy + 12, 11 if emo != "shy" else 14, 6 if emo != "shy" else 8,
                             fill=(255, 60, 90, blush))
            if emo == "shy":   # hatch lines on the cheeks
                for side in (-1, 1):
                    for k in range(3):
                        x0 = cx + side * 24 - 8 + k * 6
                        front.line([(x0, cy + 16), (x0 + 4, cy + 8)], (230, 40, 70, 255), 1.6)
        if emo == "angry":
            back.ellipse(cx, cy - 20, 36, 22, fill=(220, 30, 20, 90))          # red forehead flush
            ax, ay = cx + 34, cy - 40                                          # anger mark (vein cross)
            for a in (45, 135, 225, 315):
                r = math.radians(a)
                p0 = (ax + 4 * math.cos(r), ay + 4 * math.sin(r))
                p1 = (ax + 12 * math.cos(r), ay + 12 * math.sin(r))
                front.line([p0, (p1[0] + 3 * math.sin(r), p1[1] - 3 * math.cos(r))], (230, 20, 20, 255), 4)
        if emo == "sad":
            back.rect(cx - 30, cy - 44, cx + 30, cy - 26, fill=(60, 80, 200, 70), radius=8)  # gloom
            for side in (-1, 1):
                x = cx + side * (EYE_DX + 4)
                front.poly([(x - 3, cy - 2), (x + 3, cy - 2), (x + 5, cy + 22), (x, cy + 28), (x - 5, cy + 22)],
                           fill=(80, 170, 255, 230))
        if emo == "surprised":
            front.poly([(cx + 44, cy - 44), (cx + 50, cy - 30), (cx + 44, cy - 24), (cx + 38, cy - 30)],
                       fill=(120, 200, 255, 255))                               # sweat drop
            for a in (-150, -120, -60, -30):
                r = math.radians(a)
                front.line([(cx + 54 * math.cos(r), cy - 10 + 60 * math.sin(r)),
                            (cx + 68 * math.cos(r), cy - 10 + 74 * math.sin(r))], (40, 40, 40, 255), 3)
        if emo in ("excited", "happy"):
            spots = [(18, 30, 11), (140, 26, 13), (146, 120, 9), (14, 118, 8)] if emo == "excited" \
                else [(142, 30, 8), (18, 34, 6)]
            for sx, sy, r in spots:                                            # 4-point sparkles
                front.poly([(sx, sy - r), (sx + r * 0.28, sy - r * 0.28), (sx + r, sy), (sx + r * 0.28, sy + r * 0.28),
                            (sx, sy + r), (sx - r * 0.28, sy + r * 0.28), (sx - r, sy), (sx - r * 0.28, sy - r * 0.28)],
                           fill=(255, 215, 40, 255))
        back.save(out / "face" / f"extras_back_{emo}.png")
        front.save(out / "face" / f"extras_front_{emo}.png")
        files["extras_back"] = f"face/extras_back_{emo}.png"
        files["extras_front"] = f"face/extras_front_{emo}.png"
        expressions[emo] = files
    return expressions


def draw_pack(st: Style, root: Path) -> Path:
    out = root / st.name
    parts = draw_body(st, out)
    draw_head(st, out)
    expressions = draw_expressions(st, out)
    parts.append({"name": "head", "file": "face/head.png", "joint": "head", "bone": "head",
                  "pivot": list(HEAD_PIVOT), "rest_angle": 0.0, "depth": 30})
    manifest = {
        "format": 1,
        "name": st.name,
        "display_name": st.display_name,
        "description": st.description,
        "licence": "CC0-1.0",
        "author": "LiveAvatar project (drawn by liveavatar/generation/rig2d/draw.py)",
        "rig": RIG,
        "parts": parts,
        "face": {
            "canvas": FACE_CANVAS,
            "pivot": list(HEAD_PIVOT),
            "pupils": "face/pupils.png",
            "eyes_box": list(EYES_BOX),
            "brows_box": list(BROWS_BOX),
            "mouth_box": list(MOUTH_BOX),
            "expressions": expressions,
        },
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return out


def main() -> None:
    root = models_dir() / "characters"
    for st in (NOVA, BOLT):
        print("wrote", draw_pack(st, root))


if __name__ == "__main__":
    main()
