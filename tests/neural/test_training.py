"""Training on rig2d's nova: the loss falls, runs are deterministic, and resume continues."""
from __future__ import annotations

import numpy as np
import torch

from liveavatar.generation.neural.train import evaluate, psnr, ssim

from .conftest import trainer_for


def test_a_few_steps_on_a_tiny_set_lower_the_loss(nova_pairs, tmp_path):
    trainer = trainer_for(tmp_path, nova_pairs, steps=80)
    before = evaluate(trainer.net, nova_pairs[1], 16)
    losses = [trainer.step() for _ in range(80)]
    after = evaluate(trainer.net, nova_pairs[1], 16)
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
    assert after["psnr_db"] > before["psnr_db"] + 2.0       # held-out frames, never trained on
    assert after["ssim"] > before["ssim"]


def test_same_seed_same_weights_and_resume_continues_exactly(nova_pairs, tmp_path):
    straight = trainer_for(tmp_path / "a", nova_pairs, steps=6)
    (tmp_path / "a").mkdir()
    straight.run()
    # the same run, stopped after 3 steps and resumed by a new process-like Trainer
    (tmp_path / "b").mkdir()
    first = trainer_for(tmp_path / "b", nova_pairs, steps=6)
    for _ in range(3):
        first.step()
    first.save()
    second = trainer_for(tmp_path / "b", nova_pairs, steps=6)
    assert second.resume() and second.state.step == 3
    second.run()
    assert second.state.step == 6
    for (name, a), b in zip(straight.net.state_dict().items(), second.net.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5, msg=f"{name} differs after resume")
    assert (tmp_path / "b" / "best.pt").exists() and (tmp_path / "b" / "history.json").exists()


def test_metrics_match_their_definitions():
    rng = torch.Generator().manual_seed(0)
    a = torch.rand(2, 4, 32, 32, generator=rng)
    b = (a + 0.1).clamp(0, 1)
    mse = ((a - b) ** 2).flatten(1).mean(1)
    torch.testing.assert_close(psnr(a, b), 10 * torch.log10(1 / mse))
    torch.testing.assert_close(ssim(a, a), torch.ones(2))
    assert (ssim(a, b) < 1).all() and (ssim(a, torch.rand(2, 4, 32, 32, generator=rng)) < 0.2).all()
