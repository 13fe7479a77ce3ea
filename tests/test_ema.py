"""train/ema.py: the decay ramp, the average after k updates (by hand and against Ultralytics' ModelEMA), counted in
images (4 steps of 16 images = 1 step of 64), integer buffers copied, skipped steps not averaged."""
import copy
import math

import pytest
import torch
import torch.nn as nn

from tests.helpers import requireOracle
from train.ema import ModelEma

requireOracle("ultralytics")
from ultralytics.utils.torch_utils import ModelEMA as RefEma  # noqa: E402


class Toy(nn.Module):
    """One scalar weight, one float buffer, one integer buffer."""

    def __init__(self, value=0.0):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([value], dtype=torch.float64))
        self.register_buffer("mean", torch.tensor([value], dtype=torch.float64))
        self.register_buffer("count", torch.tensor(0, dtype=torch.long))
        self.set(value)

    def set(self, value, count=0):
        with torch.no_grad():
            self.w.fill_(value)
            self.mean.fill_(2 * value)
            self.count.fill_(count)
        return self


def test_decay_ramp_by_hand():
    ema = ModelEma(Toy(), decay=0.9999, tau=2000.0)
    assert ema.stepDecay(64) == pytest.approx(0.000499825033328626, rel=1e-12)  # 0.9999 (1 - exp(-1 / 2000))
    assert ema.updates == 1.0
    assert ema.stepDecay(32) == pytest.approx((0.9999 * (1 - math.exp(-1.5 / 2000))) ** 0.5, rel=1e-12)
    assert ema.updates == 1.5
    late = ModelEma(Toy(), decay=0.9999, tau=2000.0, updates=10 ** 6)
    assert late.stepDecay(64) == pytest.approx(0.9999, rel=1e-12)  # the ramp has reached decay
    assert late.stepDecay(16) == pytest.approx(0.9999 ** 0.25, rel=1e-12)


def test_average_after_k_updates_by_hand():
    """decay 0.5, tau 1: d_k = 0.5 (1 - exp(-k)); ema_k = d_k ema_{k-1} + (1 - d_k) w_k, from ema_0 = 1."""
    model = Toy(1.0)
    ema = ModelEma(model, decay=0.5, tau=1.0)
    expected = 1.0
    for k, value in enumerate([3.0, -2.0, 5.0], start=1):
        ema.update(model.set(value, count=k))
        d = 0.5 * (1 - math.exp(-k))
        expected = d * expected + (1 - d) * value
        assert ema.module.w.item() == pytest.approx(expected, rel=1e-12)
        assert ema.module.mean.item() == pytest.approx(2 * expected, rel=1e-12)  # float buffers are averaged
        assert ema.module.count.item() == k  # integer buffers are copied
    # the three steps written out: d1 = 0.5 (1 - e^-1), d2 = 0.5 (1 - e^-2), d3 = 0.5 (1 - e^-3)
    d1, d2, d3 = (0.5 * (1 - math.exp(-k)) for k in (1, 2, 3))
    byHand = ((1 * d1 + 3 * (1 - d1)) * d2 + (-2) * (1 - d2)) * d3 + 5 * (1 - d3)
    assert ema.module.w.item() == pytest.approx(byHand, rel=1e-12)
    assert not ema.module.training and not ema.module.w.requires_grad


def test_equals_ultralytics_model_ema_per_64_images():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    ours, ref = ModelEma(model, decay=0.9, tau=3.0), RefEma(model, decay=0.9, tau=3)
    for _ in range(6):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
            model.train()(torch.randn(2, 3, 8, 8))  # moves the BatchNorm statistics and its counter
        ours.update(model, numImages=64)
        ref.update(model)
    assert ours.updates == ref.updates == 6
    for key, value in ref.ema.state_dict().items():
        if not value.is_floating_point():  # Ultralytics leaves integer buffers (num_batches_tracked) as they were
            assert ours.module.state_dict()[key] == model.state_dict()[key] == 6, key
            continue
        assert torch.allclose(ours.module.state_dict()[key].double(), value.double(), rtol=1e-5, atol=1e-6), key


def test_four_steps_of_16_images_equal_one_of_64():
    """Past the ramp, four averaging steps of 16 images towards the same weights move the average as one step of
    64 images does; a single step of 16 images moves it a quarter as far in log terms (d ** 0.25)."""
    start = Toy(1.0)
    one, four, single = (ModelEma(start, decay=0.9, tau=1.0, updates=1000.0) for _ in range(3))
    target = copy.deepcopy(start).set(5.0, count=7)
    one.update(target, numImages=64)
    for _ in range(4):
        four.update(target, numImages=16)
    single.update(target, numImages=16)
    assert one.updates == four.updates == 1001.0 and single.updates == 1000.25
    assert one.module.w.item() == pytest.approx(0.9 * 1 + 0.1 * 5, rel=1e-12)
    assert four.module.w.item() == pytest.approx(one.module.w.item(), rel=1e-12)
    assert four.module.mean.item() == pytest.approx(one.module.mean.item(), rel=1e-12)
    assert single.module.w.item() == pytest.approx(0.9 ** 0.25 * 1 + (1 - 0.9 ** 0.25) * 5, rel=1e-12)


def test_skipped_step_is_not_averaged_but_counted():
    model = Toy(1.0)
    ema = ModelEma(model, decay=0.5, tau=1.0)
    model.set(9.0, count=3)
    ema.update(model, skipped=torch.tensor(True))
    assert ema.updates == 1.0
    assert ema.module.w.item() == 1.0 and ema.module.mean.item() == 2.0  # untouched
    ema.update(model, skipped=torch.tensor(False))
    d2 = 0.5 * (1 - math.exp(-2))  # the count advanced through the skipped step
    assert ema.updates == 2.0
    assert ema.module.w.item() == pytest.approx(d2 * 1 + (1 - d2) * 9, rel=1e-6)  # a float32 weight tensor
    assert ema.module.count.item() == 3
