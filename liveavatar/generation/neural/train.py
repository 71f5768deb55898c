"""Training core: teacher pairs on disk, a resumable training loop, PSNR/SSIM on held-out runs.

The `liveavatar train` command (liveavatar/commands/train.py) wires a teacher to this: rig2d
renders for `--from-character`, perception + conditioning over video frames for `--from-video`.
Nothing here imports another stage.
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from liveavatar.errors import UserError
from liveavatar.generation.neural import layout
from liveavatar.generation.neural.model import NetConfig, NeuralAvatarNet
from liveavatar.types import Conditioning

RenderFn = Callable[[Sequence[Conditioning]], np.ndarray]   # -> (B, S, S, 4) uint8 straight RGBA


@dataclass
class TrainConfig:
    steps: int = 3000
    batch: int = 12
    lr: float = 2e-3
    minutes: float = 0.0           # wall-clock cap (0: none); stops cleanly and checkpoints
    seed: int = 0
    val_every: int = 250
    prev_dropout: float = 0.3      # how often the previous frame is withheld (as after a reset)
    self_feed: float = 0.25        # how often the previous frame is the network's own output
    device: str = "cpu"


@dataclass
class PairSet:
    """Packed conditionings (N, COND_DIM), straight-alpha RGBA frames (N, S, S, 4) uint8 and run
    starts (N,) bool (True: the frame before is not its previous frame)."""
    cond: np.ndarray
    images: np.ndarray
    starts: np.ndarray

    def __len__(self) -> int:
        return len(self.cond)


def make_pairs(conds: Sequence[Conditioning], starts: np.ndarray, render: RenderFn, path: Path,
               size: int = 256, batch: int = 16, on_batch: Callable[[int], None] | None = None) -> PairSet:
    """Render the teacher for every conditioning into `path`.npz-like files (memory-mapped), or
    reuse them when a finished set with the same count is already there (resume)."""
    img_path, meta_path = path.with_suffix(".images.npy"), path.with_suffix(".meta.npz")
    n = len(conds)
    packed = np.zeros((n, layout.COND_DIM), np.float32)
    for i in range(0, n, 256):
        layout.pack(conds[i:i + 256], packed[i:i + 256])
    if img_path.exists() and meta_path.exists():
        meta = np.load(meta_path)
        if int(meta["n"]) == n and np.array_equal(meta["cond"], packed):
            return PairSet(packed, np.load(img_path, mmap_mode="r"), starts)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = np.lib.format.open_memmap(img_path, mode="w+", dtype=np.uint8, shape=(n, size, size, 4))
    for i in range(0, n, batch):
        frames = render(conds[i:i + batch])
        if frames.shape[1:] != (size, size, 4):
            raise UserError(f"teacher rendered {frames.shape[1:]}, expected ({size}, {size}, 4)")
        images[i:i + len(frames)] = frames
        if on_batch:
            on_batch(len(frames))
    images.flush()
    np.savez(meta_path, n=n, cond=packed)   # written last: marks the set complete
    return PairSet(packed, np.load(img_path, mmap_mode="r"), starts)


def premultiplied(rgba_u8: torch.Tensor) -> torch.Tensor:
    """(B, H, W, 4) uint8 straight alpha -> (B, 4, H, W) float premultiplied, 0..1."""
    x = rgba_u8.permute(0, 3, 1, 2).float() / 255.0
    return torch.cat([x[:, :3] * x[:, 3:4], x[:, 3:4]], dim=1)


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB for tensors in 0..1."""
    mse = ((a - b) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    return 10 * torch.log10(1.0 / mse)


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM (Gaussian window 11, sigma 1.5, as Wang et al.), averaged over channels."""
    c = a.shape[1]
    x = torch.arange(11, dtype=a.dtype, device=a.device) - 5
    g = torch.exp(-x * x / (2 * 1.5 ** 2))
    g = g / g.sum()
    win = (g[:, None] * g[None, :]).expand(c, 1, 11, 11).contiguous()

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, win, groups=c)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a ** 2
    var_b = blur(b * b) - mu_b ** 2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return s.flatten(1).mean(1)


@torch.no_grad()
def evaluate(net: NeuralAvatarNet, val: PairSet, run_len: int, device: str = "cpu") -> dict:
    """Roll the network through the held-out runs as it runs live (its own previous frame as
    input, zeros at each run start) and compare with the teacher frame by frame."""
    net.eval()
    n_runs = len(val) // run_len
    g = net.cfg.guide
    state = torch.zeros(n_runs, 4, g, g, device=device)
    ps, ss = [], []
    order = np.arange(n_runs * run_len).reshape(n_runs, run_len)
    for t in range(run_len):
        idx = order[:, t]
        cond = torch.from_numpy(val.cond[idx]).to(device)
        target = premultiplied(torch.from_numpy(np.ascontiguousarray(val.images[idx]))).to(device)
        native = net(cond, state)
        # measured at the output size, rounded to uint8 as the exported model outputs it
        pred = torch.round(net.to_output(native) * 255) / 255
        ps.append(psnr(pred, target))
        ss.append(ssim(pred, target))
        state = net.next_state(native)
    net.train()
    p, s = torch.cat(ps), torch.cat(ss)
    return {"psnr_db": float(p.mean()), "psnr_p10_db": float(torch.quantile(p, 0.1)),
            "ssim": float(s.mean()), "frames": int(p.numel())}


@dataclass
class TrainState:
    step: int = 0
    elapsed_s: float = 0.0
    best_psnr: float = -1.0
    history: list = field(default_factory=list)


class Trainer:
    def __init__(self, run_dir: Path, net_cfg: NetConfig, cfg: TrainConfig, train: PairSet,
                 val: PairSet, val_run_len: int, clip_table: dict | None = None) -> None:
        self.run_dir, self.cfg, self.train_set, self.val, self.val_run_len = run_dir, cfg, train, val, val_run_len
        torch.manual_seed(cfg.seed)
        self.rng = np.random.default_rng(cfg.seed)
        self.device = cfg.device
        self.net = NeuralAvatarNet(net_cfg).to(self.device)
        if clip_table:
            set_action_clips(self.net, **clip_table)
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=cfg.lr, weight_decay=1e-4)
        self.state = TrainState()
        # frames whose previous frame is known
        self.has_prev = ~train.starts
        self.ckpt = run_dir / "checkpoint.pt"

    # -- checkpoints -------------------------------------------------------------------------
    def save(self) -> None:
        blob = {"net": self.net.state_dict(), "opt": self.opt.state_dict(),
                "net_config": self.net.cfg.to_dict(), "train_config": asdict(self.cfg),
                "state": asdict(self.state), "torch_rng": torch.get_rng_state(),
                "np_rng": self.rng.bit_generator.state}
        tmp = self.ckpt.with_suffix(".tmp")
        torch.save(blob, tmp)
        tmp.replace(self.ckpt)   # atomic: a crash never leaves half a checkpoint

    def resume(self) -> bool:
        if not self.ckpt.exists():
            return False
        try:
            blob = torch.load(self.ckpt, map_location=self.device, weights_only=False)
            self.net.load_state_dict(blob["net"])
            self.opt.load_state_dict(blob["opt"])
        except Exception as e:
            raise UserError(f"{self.ckpt}: cannot resume from this checkpoint ({e})") from None
        self.state = TrainState(**blob["state"])
        torch.set_rng_state(blob["torch_rng"])
        self.rng.bit_generator.state = blob["np_rng"]
        return True

    # -- one step ----------------------------------------------------------------------------
    def progress(self) -> float:
        """0..1 through training: by steps, or by wall time when a time cap is set."""
        t = self.state.step / max(1, self.cfg.steps)
        if self.cfg.minutes:
            t = max(t, self.state.elapsed_s / (self.cfg.minutes * 60))
        return min(1.0, t)

    def _lr(self) -> float:
        t = self.progress()
        warm = min(1.0, (self.state.step + 1) / max(1, min(100, self.cfg.steps // 10)))   # short runs warm up fast
        return self.cfg.lr * warm * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))

    def _batch(self) -> Any:
        ts, cfg = self.train_set, self.cfg
        idx = np.sort(self.rng.integers(0, len(ts), cfg.batch))
        cond = torch.from_numpy(ts.cond[idx]).to(self.device)
        target = premultiplied(torch.from_numpy(np.ascontiguousarray(ts.images[idx]))).to(self.device)
        if self.net.cfg.upsample > 1:   # the network is taught at its native resolution
            target = F.avg_pool2d(target, self.net.cfg.upsample)
        prev_idx = np.maximum(idx - 1, 0)
        prev = premultiplied(torch.from_numpy(np.ascontiguousarray(ts.images[prev_idx]))).to(self.device)
        state = self.net.next_state(prev)
        keep = self.has_prev[idx] & (self.rng.random(len(idx)) >= cfg.prev_dropout)
        # sometimes the previous frame is the network's own rendering of it, as at run time
        own = keep & (self.rng.random(len(idx)) < cfg.self_feed) & self.has_prev[prev_idx] & \
            (self.progress() > 0.1)
        if own.any():
            j = np.flatnonzero(own)
            with torch.no_grad():
                pp = np.maximum(prev_idx[j] - 1, 0)
                pstate = self.net.next_state(premultiplied(torch.from_numpy(
                    np.ascontiguousarray(ts.images[pp]))).to(self.device))
                own_prev = self.net(torch.from_numpy(ts.cond[prev_idx[j]]).to(self.device), pstate)
            state[j] = self.net.next_state(own_prev)
        state = state * torch.from_numpy(keep.astype(np.float32)).view(-1, 1, 1, 1).to(self.device)
        state = state + 0.01 * torch.randn_like(state) * (state > 0)
        return cond, state, target

    def step(self) -> float:
        for g in self.opt.param_groups:
            g["lr"] = self._lr()
        cond, state, target = self._batch()
        pred = self.net(cond, state)
        # L1 for sharp edges, MSE because PSNR is what we report; the alpha channel drives the
        # silhouette, so it is weighted up
        err = pred - target
        w = torch.tensor([1.0, 1.0, 1.0, 2.0], device=self.device).view(1, 4, 1, 1)
        loss = (err.abs() * w).mean() + 4.0 * (err * err * w).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), 1.0)
        self.opt.step()
        self.state.step += 1
        return float(loss.detach())

    def run(self, on_step: Callable[[int, float, dict | None], None] | None = None) -> dict:
        cfg = self.cfg
        t_start = time.monotonic() - self.state.elapsed_s
        last_val: dict | None = None
        ema = None
        while self.state.step < cfg.steps:
            loss = self.step()
            ema = loss if ema is None else 0.95 * ema + 0.05 * loss
            self.state.elapsed_s = time.monotonic() - t_start
            out_of_time = cfg.minutes and self.state.elapsed_s >= cfg.minutes * 60
            if self.state.step % cfg.val_every == 0 or self.state.step == cfg.steps or out_of_time:
                last_val = evaluate(self.net, self.val, self.val_run_len, self.device)
                last_val.update(step=self.state.step, loss=ema, elapsed_s=round(self.state.elapsed_s, 1))
                self.state.history.append(last_val)
                if last_val["psnr_db"] > self.state.best_psnr:
                    self.state.best_psnr = last_val["psnr_db"]
                    torch.save({"net": self.net.state_dict(), "net_config": self.net.cfg.to_dict(),
                                "metrics": last_val}, self.run_dir / "best.pt")
                self.save()
                (self.run_dir / "history.json").write_text(json.dumps(self.state.history, indent=1))
            if on_step:
                on_step(self.state.step, ema, last_val)
            if out_of_time:
                break
        if last_val is None:
            last_val = evaluate(self.net, self.val, self.val_run_len, self.device)
        return last_val

    def best_net(self) -> tuple[NeuralAvatarNet, dict]:
        blob = torch.load(self.run_dir / "best.pt", map_location="cpu", weights_only=False)
        net = NeuralAvatarNet(NetConfig.from_dict(blob["net_config"]))
        net.load_state_dict(blob["net"])
        return net.eval(), blob["metrics"]


def set_action_clips(net: NeuralAvatarNet, clips: np.ndarray, has: np.ndarray) -> None:
    """Load the teacher's action clips: motion channels (A, N_ACTION_SAMPLES, N_MOTION) sampled
    at evenly spaced phases 0..1, and has (A,) 0/1 for actions the teacher plays."""
    g = net.guide
    g.clips.copy_(torch.from_numpy(np.asarray(clips, np.float32)))
    g.has_clip.copy_(torch.from_numpy(np.asarray(has, np.float32)))
