"""The network (torch): a guide renderer and a small FiLM-conditioned U-Net decoder.

Both live in one module so the ONNX file is self-contained: it takes the packed conditioning
vector (see layout.py) and the previous frame's low-resolution state, draws the guide itself
(soft limb segments, head disk, head-local face coordinates, face parameters painted on the head)
and decodes a 256x256 RGBA frame. Drawing the guide inside the graph keeps the hot path to one
batched run call and guarantees training and inference draw exactly the same guide.

Torch is imported here only: the runtime (runtime.py) needs onnxruntime and numpy alone.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from liveavatar.generation.neural import layout
from liveavatar.types import ACTIONS, BONE_INDEX, BONES, FP, REST_BONE_ANGLES, VISEMES

# Segments drawn in the guide, as (start joint, end joint) names from JOINTS.
JOINTS = ("hips", "shoulders", "head", "shoulder_l", "elbow_l", "wrist_l", "shoulder_r",
          "elbow_r", "wrist_r", "hip_l", "knee_l", "ankle_l", "hip_r", "knee_r", "ankle_r")
_J = {n: i for i, n in enumerate(JOINTS)}
SEGMENTS = (("hips", "shoulders"), ("shoulders", "head"), ("shoulder_r", "shoulder_l"),
            ("hip_r", "hip_l"), ("shoulder_l", "elbow_l"), ("elbow_l", "wrist_l"),
            ("shoulder_r", "elbow_r"), ("elbow_r", "wrist_r"), ("hip_l", "knee_l"),
            ("knee_l", "ankle_l"), ("hip_r", "knee_r"), ("knee_r", "ankle_r"))
FACE_CHANNELS = ("mouth_open", "mouth_width", "smile", "blink_left", "blink_right", "gaze_x",
                 "gaze_y", "brow_raise_left", "brow_raise_right", "brow_furrow")
# limbs; head disk, face-local u, v; face parameters, visemes, yaw and pitch painted on the head;
# canvas x, y
GUIDE_CHANNELS = len(SEGMENTS) + 3 + len(FACE_CHANNELS) + len(VISEMES) + 2 + 2
STATE_CHANNELS = 4
N_ACTION_SAMPLES = 96     # phase samples per action clip in the action table
# Motion channels (as rig2d's): the bones, then hips dx, dy (body heights), body x-scale (spin),
# spine length scale (bow), head yaw, pitch, roll additions.
N_BONES = len(BONES)
DX, DY, XSCALE, SPINE_SCALE, YAW, PITCH, ROLL = range(N_BONES, N_BONES + 7)
N_MOTION = N_BONES + 7
TWO_PI = 2 * math.pi


def rest_motion() -> torch.Tensor:
    m = torch.zeros(N_MOTION)
    m[:N_BONES] = torch.from_numpy(REST_BONE_ANGLES)
    m[XSCALE] = 1.0
    m[SPINE_SCALE] = 1.0
    return m


@dataclass
class Geometry:
    """Where the character's skeleton sits on the square canvas (0..1, y down), in canvas units.
    Set from the teacher character's rig before training; the model file records it."""
    hips: tuple[float, float] = (0.5, 0.586)
    body_height: float = 0.762       # root offsets are in body heights
    spine: float = 0.195
    neck: float = 0.102
    head_radius: float = 0.11
    shoulder_half: float = 0.094
    hip_half: float = 0.047
    upper_arm: float = 0.152
    lower_arm: float = 0.141
    upper_leg: float = 0.172
    lower_leg: float = 0.168
    line_sigma: float = 0.018        # softness of the drawn limbs (mean of the below)
    # per segment (SEGMENTS order): about the half-width of the body part, so the guide is
    # already a rough silhouette (torso wide, forearms thin)
    segment_sigmas: tuple[float, ...] = (0.06, 0.02, 0.035, 0.035, 0.022, 0.02, 0.022, 0.02,
                                         0.028, 0.024, 0.028, 0.024)


@dataclass
class NetConfig:
    size: int = 256                  # output is size x size
    guide: int = 64                  # guide and state resolution (size / 4 / upsample)
    upsample: int = 1                # the network predicts at size / upsample; bilinear after
    widths: tuple[int, int, int, int] = (32, 48, 64, 16)   # @guide, @guide/2, @guide/4, @2*guide
    embed: int = 128
    geometry: Geometry = field(default_factory=Geometry)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> NetConfig:
        d = dict(d)
        geo = Geometry(**{k: tuple(v) if isinstance(v, list) else v  # type: ignore[arg-type]
                          for k, v in d.pop("geometry", {}).items()})
        if "widths" in d:
            d["widths"] = tuple(d["widths"])
        return cls(geometry=geo, **d)


def _wrap(a: torch.Tensor) -> torch.Tensor:
    """Angles to -pi..pi, so blends take the short way round."""
    return a - TWO_PI * torch.floor((a + math.pi) / TWO_PI)


class GuideRenderer(nn.Module):
    """Turns the packed conditioning into motion channels (live pose, idle blend, action clip)
    and draws them as guide channels at `res` x `res`, batched, in torch ops that export to
    ONNX. No trainable weights: the geometry and the action clips are fixed buffers."""

    # Buffers (register_buffer), declared for the type checker.
    hips: torch.Tensor
    lengths: torch.Tensor
    halves: torch.Tensor
    head_radius: torch.Tensor
    sigma: torch.Tensor
    grid_x: torch.Tensor
    grid_y: torch.Tensor
    rest: torch.Tensor
    clips: torch.Tensor
    has_clip: torch.Tensor

    def __init__(self, res: int, geo: Geometry) -> None:
        super().__init__()
        self.res = res
        g = geo
        self.body_height = g.body_height
        self.register_buffer("hips", torch.tensor(g.hips, dtype=torch.float32))
        # bone lengths in BONES order, shoulder / hip half widths, head radius
        self.register_buffer("lengths", torch.tensor(
            [g.spine, g.neck, g.upper_arm, g.lower_arm, g.upper_arm, g.lower_arm, g.upper_leg,
             g.lower_leg, g.upper_leg, g.lower_leg], dtype=torch.float32))
        self.register_buffer("halves", torch.tensor([g.shoulder_half, g.hip_half], dtype=torch.float32))
        self.register_buffer("head_radius", torch.tensor(g.head_radius, dtype=torch.float32))
        sig = g.segment_sigmas if len(g.segment_sigmas) == len(SEGMENTS) else (g.line_sigma,) * len(SEGMENTS)
        self.register_buffer("sigma", torch.tensor(sig, dtype=torch.float32))
        coords = (torch.arange(res, dtype=torch.float32) + 0.5) / res
        yy, xx = torch.meshgrid(coords, coords, indexing="ij")
        self.register_buffer("grid_x", xx.reshape(1, 1, res * res), persistent=False)
        self.register_buffer("grid_y", yy.reshape(1, 1, res * res), persistent=False)
        self.register_buffer("rest", rest_motion(), persistent=False)
        # Action clips: motion channels per phase sample, filled from the teacher (rig2d's clips)
        # before training; rows with has_clip=0 leave the live pose alone.
        self.register_buffer("clips", rest_motion().expand(len(ACTIONS), N_ACTION_SAMPLES, N_MOTION).clone())
        self.register_buffer("has_clip", torch.zeros(len(ACTIONS)))
        o = layout.OFFSETS
        self._sl = {k: (o[k].start, o[k].stop) for k in o}
        self._face_idx = [o["face"].start + FP[n] for n in FACE_CHANNELS] + list(
            range(o["visemes"].start, o["visemes"].stop))

    def geometry(self) -> Geometry:
        L = self.lengths.tolist()
        return Geometry(hips=tuple(self.hips.tolist()), body_height=self.body_height,
                        spine=L[0], neck=L[1], upper_arm=L[2], lower_arm=L[3], upper_leg=L[6],
                        lower_leg=L[7], head_radius=float(self.head_radius),
                        shoulder_half=float(self.halves[0]), hip_half=float(self.halves[1]),
                        line_sigma=float(self.sigma.mean()), segment_sigmas=tuple(self.sigma.tolist()))

    def field(self, cond: torch.Tensor, name: str) -> torch.Tensor:
        a, b = self._sl[name]
        return cond[:, a:b]

    def motion(self, cond: torch.Tensor) -> torch.Tensor:
        """(B, N_MOTION): live pose eased towards rest as tracking fades, then the action clip
        blended over it by its weight (the same order rig2d uses)."""
        rest = self.rest.unsqueeze(0)
        present = self.field(cond, "body_present")
        bones = rest[:, :N_BONES] + _wrap(self.field(cond, "bone_angles") - rest[:, :N_BONES]) * present
        extra = rest[:, N_BONES:].expand(cond.shape[0], -1)
        extra = torch.cat([extra[:, :4], self.field(cond, "head")], dim=1)
        onehot = self.field(cond, "action")
        w = self.field(cond, "action_weight") * (onehot @ self.has_clip.unsqueeze(1))   # (B, 1)
        # linear interpolation between the two nearest phase samples of the clip
        pos = self.field(cond, "action_phase") * (N_ACTION_SAMPLES - 1)               # (B, 1)
        i0 = torch.floor(pos).clamp(0, N_ACTION_SAMPLES - 2)
        frac = pos - i0
        sample = torch.arange(N_ACTION_SAMPLES, dtype=cond.dtype, device=cond.device)
        wphase = (1 - frac) * (sample == i0).to(cond.dtype) + frac * (sample == i0 + 1).to(cond.dtype)
        mix = onehot.unsqueeze(2) * wphase.unsqueeze(1)                                # (B, A, S)
        clip = torch.einsum("bas,asc->bc", mix, self.clips)                            # (B, 17)
        bones = bones + _wrap(clip[:, :N_BONES] - bones) * w
        extra = extra + (clip[:, N_BONES:] - rest[:, N_BONES:]) * w
        return torch.cat([bones, extra], dim=1)

    def joints(self, cond: torch.Tensor, ch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, len(JOINTS), 2) canvas positions, by rig2d's forward kinematics."""
        ang = ch[:, :N_BONES]
        dirs = torch.stack([torch.sin(ang), torch.cos(ang)], dim=-1)           # (B, 10, 2)
        root = self.field(cond, "root")
        s = root[:, 2:3]                                                         # (B, 1)
        seg = dirs * self.lengths.view(1, -1, 1) * s.unsqueeze(2)               # (B, 10, 2)
        hips = self.hips.view(1, 2) + (root[:, :2] + ch[:, DX:DY + 1]) * self.body_height
        spine = seg[:, BONE_INDEX["spine"]] * ch[:, SPINE_SCALE:SPINE_SCALE + 1].clamp(0.3, 1.5)
        sd = dirs[:, BONE_INDEX["spine"]]
        perp = torch.stack([-sd[:, 1], sd[:, 0]], dim=-1)     # the character's left, across the chest
        sh = hips + spine
        head = sh + seg[:, BONE_INDEX["neck"]]
        s_half = perp * self.halves[0] * s
        h_half = torch.cat([self.halves[1] * s, torch.zeros_like(s)], dim=1)    # hips do not tilt
        sl, sr, hl, hr = sh + s_half, sh - s_half, hips + h_half, hips - h_half
        el = sl + seg[:, BONE_INDEX["upper_arm_l"]]
        er = sr + seg[:, BONE_INDEX["upper_arm_r"]]
        kl = hl + seg[:, BONE_INDEX["upper_leg_l"]]
        kr = hr + seg[:, BONE_INDEX["upper_leg_r"]]
        j = torch.stack([hips, sh, head, sl, el, el + seg[:, BONE_INDEX["lower_arm_l"]], sr, er,
                         er + seg[:, BONE_INDEX["lower_arm_r"]], hl, kl,
                         kl + seg[:, BONE_INDEX["lower_leg_l"]], hr, kr,
                         kr + seg[:, BONE_INDEX["lower_leg_r"]]], dim=1)
        # spin: x scaled about the hips, never quite to zero (as rig2d)
        xs = ch[:, XSCALE:XSCALE + 1]
        xs = torch.where(xs.abs() < 0.05, torch.where(xs < 0, -0.05, 0.05), xs)
        jx = hips[:, 0:1] + (j[..., 0] - hips[:, 0:1]) * xs
        return torch.stack([jx, j[..., 1]], dim=-1), xs

    def forward(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, R = cond.shape[0], self.res
        ch = self.motion(cond)
        j, xs = self.joints(cond, ch)
        # x and y kept apart: (B, S, P) tensors vectorise far better than a trailing dim of 2
        a = j[:, [_J[s] for s, _ in SEGMENTS]]                                 # (B, S, 2)
        b = j[:, [_J[e] for _, e in SEGMENTS]]
        ax, ay = a[..., 0:1], a[..., 1:2]                                        # (B, S, 1)
        abx, aby = b[..., 0:1] - ax, b[..., 1:2] - ay
        dx, dy = self.grid_x - ax, self.grid_y - ay                              # (B, S, P)
        t = ((dx * abx + dy * aby) / (abx * abx + aby * aby + 1e-6)).clamp(0, 1)
        ex, ey = dx - t * abx, dy - t * aby
        limbs = torch.exp(-(ex * ex + ey * ey) / (2 * self.sigma.view(1, -1, 1) ** 2))
        # head: a disk in the head's own frame (turned by neck + roll, squashed by yaw and spin)
        s = self.field(cond, "root")[:, 2:3]
        yaw = ch[:, YAW:YAW + 1].clamp(-0.8, 0.8)
        angle = ch[:, BONE_INDEX["neck"]:BONE_INDEX["neck"] + 1] - math.pi + ch[:, ROLL:ROLL + 1]
        c, sn = torch.cos(angle), torch.sin(angle)
        px = (self.grid_x[:, 0] - j[:, _J["head"], 0:1]) / xs                   # (B, P)
        py = self.grid_y[:, 0] - j[:, _J["head"], 1:2]
        r = self.head_radius * s
        u = (px * c - py * sn) / (r * (1 - 0.15 * yaw.abs()))
        v = (px * sn + py * c) / r
        disk = torch.sigmoid((1 - torch.sqrt(u * u + v * v + 1e-8)) * 6)
        painted = torch.cat([cond[:, self._face_idx], yaw, ch[:, PITCH:PITCH + 1]], dim=1)
        face = painted.unsqueeze(2) * disk.unsqueeze(1)                          # (B, 18, P)
        canvas = torch.cat([self.grid_x, self.grid_y], dim=1).expand(B, 2, R * R)
        maps = torch.cat([limbs, disk.unsqueeze(1), (u * disk).unsqueeze(1),
                          (v * disk).unsqueeze(1), face, canvas], dim=1)
        return maps.reshape(B, GUIDE_CHANNELS, R, R), ch


def cond_features(cond: torch.Tensor, motion: torch.Tensor) -> torch.Tensor:
    """The vector the FiLM embedding reads: the final pose as sin/cos (no wrap-around), the
    extra motion channels, and everything else in the conditioning."""
    o = layout.OFFSETS
    ang = motion[:, :N_BONES]
    rest = cond[:, o["bone_angles"].stop:]
    return torch.cat([torch.sin(ang), torch.cos(ang), motion[:, N_BONES:], rest], dim=1)


FEATURE_DIM = 2 * N_BONES + (N_MOTION - N_BONES) + (layout.COND_DIM - N_BONES)


class FiLMConv(nn.Module):
    """3x3 conv, then a per-channel scale and shift from the conditioning embedding."""

    def __init__(self, cin: int, cout: int, embed: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1)
        self.film = nn.Linear(embed, 2 * cout)
        nn.init.zeros_(self.film.weight)   # starts as identity: plain conv
        nn.init.zeros_(self.film.bias)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.film(e).unsqueeze(-1).unsqueeze(-1).chunk(2, dim=1)
        return F.silu(self.conv(x) * (1 + gamma) + beta)


class NeuralAvatarNet(nn.Module):
    """cond (B, COND_DIM), state (B, 4, G, G) -> premultiplied RGBA (B, 4, size, size) in 0..1."""

    def __init__(self, cfg: NetConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or NetConfig()
        if cfg.size != 4 * cfg.guide * cfg.upsample:
            raise ValueError("size must be 4 x guide x upsample")
        c0, c1, c2, c3 = cfg.widths
        E = cfg.embed
        self.guide = GuideRenderer(cfg.guide, cfg.geometry)
        self.embed = nn.Sequential(nn.Linear(FEATURE_DIM, E), nn.SiLU(), nn.Linear(E, E), nn.SiLU())
        self.e0 = FiLMConv(GUIDE_CHANNELS + STATE_CHANNELS, c0, E)
        self.e1 = FiLMConv(c0, c1, E, stride=2)
        self.e2 = FiLMConv(c1, c2, E, stride=2)
        self.m1 = FiLMConv(c2, c2, E)
        self.m2 = FiLMConv(c2, c2, E)
        self.d1 = FiLMConv(c2, c1, E)
        self.d2 = FiLMConv(c1, c0, E)
        self.d3 = FiLMConv(c0, c0, E)
        self.up1 = nn.Conv2d(c0, 4 * c3, 1)   # 1x1: the 3x3 after the shuffle mixes space
        self.up2 = nn.Conv2d(c3, c3, 3, padding=1)
        self.out = nn.Conv2d(c3, 4 * 4, 1)
        with torch.no_grad():   # start transparent: most of the canvas is background
            self.out.bias[12:16] = -4.0  # type: ignore[index]   # pixel shuffle puts channels 12..15 into alpha

    def forward(self, cond: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            g, motion = self.guide(cond)
        e = self.embed(cond_features(cond, motion))
        x0 = self.e0(torch.cat([g, state], dim=1), e)
        x1 = self.e1(x0, e)
        x2 = self.e2(x1, e)
        x2 = x2 + self.m1(x2, e)
        x2 = x2 + self.m2(x2, e)
        y1 = self.d1(F.interpolate(x2, scale_factor=2.0, mode="nearest"), e) + x1
        y0 = self.d2(F.interpolate(y1, scale_factor=2.0, mode="nearest"), e) + x0
        y0 = self.d3(y0, e) + y0
        h = F.silu(F.pixel_shuffle(self.up1(y0), 2))
        h = F.silu(self.up2(h)) + h
        o = F.pixel_shuffle(self.out(h), 2)
        alpha = torch.sigmoid(o[:, 3:4])
        rgb = torch.sigmoid(o[:, :3])
        return torch.cat([rgb * alpha, alpha], dim=1)

    @property
    def native(self) -> int:
        """The resolution the network predicts at."""
        return self.cfg.size // self.cfg.upsample

    def next_state(self, premult: torch.Tensor) -> torch.Tensor:
        """State for the next frame from a frame at native or output resolution."""
        return F.avg_pool2d(premult, premult.shape[-1] // self.cfg.guide)

    def to_output(self, premult: torch.Tensor) -> torch.Tensor:
        """Native prediction -> output size (bilinear), for export and honest evaluation."""
        if self.cfg.upsample == 1:
            return premult
        return F.interpolate(premult, scale_factor=float(self.cfg.upsample), mode="bilinear",
                             align_corners=False).clamp(0, 1)


class ExportWrapper(nn.Module):
    """What goes into the ONNX file: uint8 straight-alpha RGBA (B, H, W, 4) ready for sinks, and
    the next state, so the runtime does no per-pixel work in Python."""

    def __init__(self, net: NeuralAvatarNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, cond: torch.Tensor, state: torch.Tensor) -> Any:
        native = self.net(cond, state)
        premult = self.net.to_output(native)
        alpha = premult[:, 3:4]
        # straight alpha; fully transparent pixels get black colour instead of noise
        rgb = premult[:, :3] / alpha.clamp_min(1e-3) * (alpha > 2e-3).to(premult.dtype)
        rgba = torch.cat([rgb.clamp(0, 1), alpha], dim=1).permute(0, 2, 3, 1)
        rgba_u8 = torch.round(rgba * 255.0).to(torch.uint8)
        return rgba_u8, self.net.next_state(native)
