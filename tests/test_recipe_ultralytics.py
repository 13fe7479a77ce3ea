"""The recipe rules Mars shares with Ultralytics 8.4.190, in the training loop (engine/trainer.py): gradient
accumulation to mcfg.nominalBatchSize images per optimizer step (the steps the rule takes, one accumulated step equal to
one big batch, AdamW's 64 images, a non-finite batch skipping its whole step, DDP's no_sync, a signal stopping at a
step and an exact resume), and bench/versus.py giving Ultralytics the same warm-up and nominal batch under "Mars's
recipe". The formulas alone (warm-up length, accumulate and its ramp): test_sched.py."""
import json
import os
import subprocess
import sys
import traceback
import types

import numpy as np
import pytest
import torch
import torch.nn as nn

from engine.trainer import Trainer
from tests.helpers import requireOracle, tinyConfig, writeVocSet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class TinyNet(nn.Module):
    """conv 3 -> 4 (k3), BatchNorm (norm=True), ReLU, conv 4 -> 1: stands in for a YoloModel in the loop. Without
    BatchNorm each image's output depends on that image alone, so gradients add up over images exactly."""

    def __init__(self, norm=False):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), *([nn.BatchNorm2d(4)] if norm else []), nn.ReLU(),
                                 nn.Conv2d(4, 1, 1))

    def forward(self, images):
        return self.net(images)

    def freezeBackbone(self):
        pass

    def unfreezeBackbone(self):
        pass


class ImageSumLoss(object):
    """A loss that adds up over images, as YOLOv8's (x batch size) roughly does: sum over images of the mean squared
    distance of the output to 0.5 -> (); parts (3,) all that value."""

    def __init__(self, mcfg, model):
        self.parts, self.offset = None, 0.0  # offset: added to the loss, not to its gradient

    def __call__(self, output, targets):
        loss = (output.float() - 0.5).square().flatten(1).mean(1).sum() * 100
        self.parts = loss.detach().repeat(3)
        return loss + self.offset


def tinyTrainer(root, model=None, **fields):
    mcfg = tinyConfig(root, **dict(dict(previewBatches=0), **fields))
    return Trainer(mcfg, model or TinyNet(), ImageSumLoss)


def recordSteps(trainer):
    """Wrap the optimizer's step: -> the list it fills with the global iteration of every optimizer step."""
    steps, step, batch = [], trainer.optimizer.step, trainer.trainStep

    def trainStep(iteration, *args, **kwargs):
        trainer.iteration = iteration
        return batch(iteration, *args, **kwargs)

    def counted(*args, **kwargs):
        steps.append(trainer.iteration)
        return step(*args, **kwargs)
    trainer.trainStep, trainer.optimizer.step = trainStep, counted
    return steps


def ruleSteps(nb, epochs, nw, acc0):
    """The optimizer steps the rule takes: Ultralytics' ni - last_opt_step >= accumulate (its warm-up ramp), with
    last_opt_step reset at every epoch and a step at every epoch's last batch (Mars)."""
    steps = []
    for epoch in range(epochs):
        last = -1
        for i in range(nb):
            ni = epoch * nb + i
            accumulate = max(1, int(np.interp(ni, [0, nw], [1, acc0]).round())) if nw and ni <= nw else acc0
            if i - last >= accumulate or i == nb - 1:
                steps.append(ni)
                last = i
    return steps


def test_optimizer_steps_follow_the_accumulation_rule(tmp_path):
    """nominalBatchSize 64, batch 16: accumulate 4, ramped from 1 over a warm-up of 10 iterations (1 epoch of 10
    batches); steps after batches 0, 1, 3, 5, 8, 9 (the epoch's last) then 3, 7, 9 of epoch 2. The EMA counts every
    image once (2 x 160 / 64 updates), the weight decay counts 64 images per step."""
    trainer = tinyTrainer(tmp_path, repeat=40, batchSize=16, nominalBatchSize=64, maxEpoch=2, warmupEpochs=1.0)
    steps = recordSteps(trainer)
    trainer.run()
    assert (trainer.schedule.accumulate, trainer.schedule.warmup) == (4, 10)
    assert steps == [0, 1, 3, 5, 8, 9, 13, 17, 19] == ruleSteps(10, 2, 10, 4)
    assert trainer.ema.updates == pytest.approx(2 * 160 / 64)
    assert trainer.optimizer.param_groups[0]["weight_decay"] == pytest.approx(trainer.mcfg.optimizerWeightDecay)


def test_default_steps_every_batch_and_adamw_every_64_images(tmp_path):
    """nominalBatchSize 0: SGD steps after every batch; AdamW accumulates to 64 images (its state's step count)."""
    sgd = tinyTrainer(tmp_path / "sgd", repeat=16, batchSize=16, maxEpoch=2)
    sgdSteps = recordSteps(sgd)
    sgd.run()
    assert sgdSteps == list(range(8))
    adamw = tinyTrainer(tmp_path / "adamw", repeat=16, batchSize=16, maxEpoch=2, optimizerType="AdamW")
    adamwSteps = recordSteps(adamw)
    adamw.run()
    assert adamwSteps == [3, 7] and adamw.schedule.accumulate == 4
    assert {float(s["step"]) for s in adamw.optimizer.state_dict()["state"].values()} == {2.0}
    assert adamw.optimizer.param_groups[0]["weight_decay"] == pytest.approx(adamw.mcfg.optimizerWeightDecay)


def test_accumulated_step_equals_one_big_batch(tmp_path):
    """The same 8 images without augmentation, constant lr, no warm-up: 4 batches of 2 accumulated (nominalBatchSize 8)
    give the model and EMA of one batch of 8 after its step, to float summation order -- the gradient is clipped
    (gradientClip small enough to act) on the sum of the 4 batches, weight decay counts 8 images, the EMA one update."""
    fields = dict(repeat=2, maxEpoch=1, baseLearningRate=1.0, minLearningRate=1.0, gradientClip=0.01)
    small = tinyTrainer(tmp_path / "small", batchSize=2, nominalBatchSize=8, **fields)
    big = tinyTrainer(tmp_path / "big", batchSize=8, **fields)
    smallSteps, bigSteps = recordSteps(small), recordSteps(big)
    initial = {k: v.clone() for k, v in small.model.state_dict().items()}
    for trainer in (small, big):
        trainer.run()
    assert (smallSteps, bigSteps) == ([3], [0])
    for a, b in ((small.model, big.model), (small.ema.module, big.ema.module)):
        for k, v in a.state_dict().items():
            assert torch.allclose(v, b.state_dict()[k], rtol=0, atol=1e-7), k
    moved = max((small.model.state_dict()[k] - v).abs().max().item() for k, v in initial.items())
    assert moved > 1e-2  # lr x (1 + momentum) x the clipped gradient, 1000 times the tolerance
    assert small.ema.updates == big.ema.updates == 8 / 64
    assert small.optimizer.param_groups[0]["weight_decay"] == big.optimizer.param_groups[0]["weight_decay"]


def test_non_finite_batch_skips_its_whole_step(tmp_path, monkeypatch):
    """A step of two batches, the second NaN: no weight moves, the EMA stays, the BatchNorm statistics are those from
    before the step's first batch (bitwise), one skipped step is counted, only the finite batch's loss is in total,
    and nothing is read on the host on the way. A step whose first batch's loss alone is NaN (its gradient finite) is
    skipped too; the next finite step moves the weights."""
    import engine.trainer as base
    trainer = tinyTrainer(tmp_path, model=TinyNet(norm=True), batchSize=2, nominalBatchSize=4, maxEpoch=1)
    trainer.model.train()
    images, targets, _ = next(iter(trainer.trainLoader))
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    emaBefore = {k: v.clone() for k, v in trainer.ema.module.state_dict().items()}
    total, reads = torch.zeros(3), []
    for name in ("item", "tolist", "__bool__", "__int__", "__float__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _name=name, _original=original, **kwargs):
            caller = traceback.extract_stack(limit=2)[0]
            reads.append("{} in {}:{}".format(_name, caller.filename, caller.lineno))
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, counted)
    trainer.trainStep(0, images, targets, total, opening=True, stepping=False)
    firstParts = total.clone()
    toDevice = base.imagesToDevice
    monkeypatch.setattr(base, "imagesToDevice", lambda *a, **k: toDevice(*a, **k) * float("nan"))
    trainer.trainStep(1, images, targets, total, opening=False, stepping=True)
    monkeypatch.undo()
    assert reads == []
    assert trainer.skips.tolist() == [1.0, 1.0, 1.0]
    state = trainer.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in before.items())  # weights and BatchNorm statistics
    assert all(torch.equal(trainer.ema.module.state_dict()[k], v) for k, v in emaBefore.items())
    assert torch.isfinite(firstParts).all() and (firstParts > 0).all() and torch.equal(total, firstParts)
    trainer.loss.offset = float("nan")  # a non-finite loss with a finite gradient, in the step's first batch
    trainer.trainStep(2, images, targets, total, opening=True, stepping=False)
    trainer.loss.offset = 0.0
    trainer.trainStep(3, images, targets, total, opening=False, stepping=True)
    assert trainer.skips.tolist() == [2.0, 2.0, 2.0]
    assert torch.equal(trainer.model.state_dict()["net.0.weight"], before["net.0.weight"])
    trainer.trainStep(4, images, targets, total, opening=True, stepping=True)
    assert trainer.skips.tolist() == [2.0, 0.0, 2.0]
    assert not torch.equal(trainer.model.state_dict()["net.0.weight"], before["net.0.weight"])


@pytest.mark.slow
def test_sigterm_mid_accumulation_stops_at_the_step_and_resumes_exactly(tmp_path, monkeypatch):
    """YoloModel, nominalBatchSize 64, batch 16 (accumulate 4, ramped over the first epoch of 8 batches), 2 epochs:
    steps after batches 0, 1, 3, 6, 7, then 3, 7. SIGTERM after global batch 9 (epoch 2, batch 2, in the middle of an
    accumulation): the run trains on to the step after batch 3 and saves there (4 batches, 64 samples done); the
    resumed run ends bitwise as the uninterrupted one (model, EMA, EMA count, optimizer)."""
    from engine.signals import TrainingInterrupted
    from model.base.yolomodel import YoloModel
    from train.loss import DetectionLoss

    def trainer(root):
        mcfg = tinyConfig(root, repeat=32, batchSize=16, nominalBatchSize=64, maxEpoch=2, deterministic=True,
                          warmupEpochs=1.0, previewBatches=0)
        torch.manual_seed(0)
        return Trainer(mcfg, YoloModel(mcfg), DetectionLoss)
    monkeypatch.setenv("MARS_TEST_FAULT", "SIGTERM@9")
    interrupted = trainer(tmp_path / "a")
    steps = recordSteps(interrupted)
    with pytest.raises(TrainingInterrupted):
        interrupted.run()
    monkeypatch.delenv("MARS_TEST_FAULT")
    assert steps == [0, 1, 3, 6, 7, 11] == ruleSteps(8, 2, 8, 4)[:6]
    saved = torch.load(os.path.join(interrupted.mcfg.cacheDir(), "last_epoch_weights.pth"), weights_only=True)
    assert (saved["epoch"], saved["batchesDone"], saved["epochPosition"]) == (1, 4, 64)
    resumed = trainer(tmp_path / "a")
    resumedSteps = recordSteps(resumed)
    resumed.run()
    assert resumedSteps == [15]
    uninterrupted = trainer(tmp_path / "b")
    uninterrupted.run()
    a, b = resumed.checkpoint(2), uninterrupted.checkpoint(2)
    for part in ("model", "ema"):
        assert all(torch.equal(v, b[part][k]) for k, v in a[part].items()), part
    assert a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]
    for i, values in a["optimizer"]["state"].items():
        assert all(torch.equal(v, b["optimizer"]["state"][i][k]) for k, v in values.items()), i
    assert a["emaUpdates"] == b["emaUpdates"] == 2 * 128 / 64


DDP_WORKER = """
import json, os, sys
import torch
sys.path.insert(0, {root!r})
from torch.nn.parallel import DistributedDataParallel
from engine.trainer import Trainer
from misc.dist import initDistributed, rank
from tests.helpers import makeConfig
from tests.test_recipe_ultralytics import ImageSumLoss, TinyNet

data, out, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
torch.set_num_threads(1)
noSync, original = [], DistributedDataParallel.no_sync
DistributedDataParallel.no_sync = lambda self: noSync.append(1) or original(self)
mcfg = makeConfig("nano", nc=2, inputShape=(64, 64), imageDir=os.path.join(data, "images"),
                  annotationDir=os.path.join(data, "annotations"), classList=["red", "blue"],
                  subsetMap={{"train": os.path.join(data, "train.txt")}}, batchSize=batch, nominalBatchSize=8, dcore=0,
                  augment=False, epochValidation=False, warmupEpochs=0.0, maxEpoch=1, deterministic=True,
                  baseLearningRate=0.05, minLearningRate=0.05, previewBatches=0, root=os.path.join(out, "runs"),
                  user="u", cfgname="ddp")
mcfg = mcfg.copy(device=initDistributed(mcfg.device))
trainer = Trainer(mcfg, TinyNet(), ImageSumLoss)
trainer.run()
torch.save(trainer.model.state_dict(), os.path.join(out, "rank{{}}.pt".format(rank())))
with open(os.path.join(out, "rank{{}}.json".format(rank())), "w") as f:
    json.dump({{"noSync": len(noSync), "accumulate": trainer.schedule.accumulate, "ema": trainer.ema.updates}}, f)
"""


@pytest.mark.slow
def test_two_ranks_accumulate_with_no_sync(tmp_path):
    """torchrun, 2 CPU ranks (gloo) of 2 images = a global batch of 4, nominalBatchSize 8: accumulate 2 (the global
    batch counts, not the per-rank one as in Ultralytics); 16 images = 4 batches, 2 optimizer steps, the 2 batches
    without a step under DDP's no_sync; the weights equal a single process's with batches of 4."""
    data = str(tmp_path / "data")
    images = {"i{}".format(k): (64, 64, [("red", 4 + k, 6, 30 + k, 40), ("blue", 34, 30 - k, 60, 58)]) for k in range(8)}
    writeVocSet(data, images, ["red", "blue"], {"train": list(images) * 2})
    worker = tmp_path / "worker.py"
    worker.write_text(DDP_WORKER.format(root=ROOT))
    env = dict({k: v for k, v in os.environ.items() if k != "MARS_TEST_FAULT"}, OMP_NUM_THREADS="1")
    outputs = {}
    for ranks, batch in ((2, 2), (1, 4)):
        out = tmp_path / "out{}".format(ranks)
        out.mkdir()
        launcher = [sys.executable] + (["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
                                       if ranks > 1 else [])
        result = subprocess.run(launcher + [str(worker), data, str(out), str(batch)], capture_output=True, text=True,
                                env=env, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        outputs[ranks] = out
    ddp = [json.loads((outputs[2] / "rank{}.json".format(r)).read_text()) for r in (0, 1)]
    assert ddp[0] == ddp[1] == {"noSync": 2, "accumulate": 2, "ema": 16 / 64}
    single = json.loads((outputs[1] / "rank0.json").read_text())
    assert single == {"noSync": 0, "accumulate": 2, "ema": 16 / 64}
    rank0, rank1 = (torch.load(outputs[2] / "rank{}.pt".format(r)) for r in (0, 1))
    reference = torch.load(outputs[1] / "rank0.pt")
    for k, v in rank0.items():
        assert torch.equal(v, rank1[k]), k
        assert torch.allclose(v, reference[k], rtol=0, atol=1e-6), k


# --- bench/versus.py: Ultralytics under "Mars's recipe" ---------------------------------------------------------------
@pytest.mark.parametrize("nominal, batch, nbs", [(0, 16, 16), (64, 16, 64), (64, 8, 64)])
def test_versus_gives_ultralytics_marss_warmup_and_nominal_batch(tmp_path, nominal, batch, nbs):
    """bench/versus.py's Ultralytics arguments under "mars": its warm-up (Ultralytics' own _get_warmup_iterations on
    them) equals Mars's over the same batches per epoch (400 images; Mars's floor of 100 iterations included), nbs is Mars's nominal batch (the batch when Mars
    steps every batch) and the weight decay it gets is Mars's per step; the header line says both warm-ups."""
    requireOracle("ultralytics")
    from ultralytics.engine.trainer import BaseTrainer
    from bench.versus import recipeLines, ultralyticsArgs
    from train.sched import LearningRateSchedule
    mcfg = tinyConfig(tmp_path, maxEpoch=12, batchSize=batch, nominalBatchSize=nominal, warmupEpochs=3.0)
    train = ultralyticsArgs(mcfg, None, "data.yaml", str(tmp_path), "mars", 400)
    batches = -(-400 // train["batch"])
    stub = types.SimpleNamespace(args=types.SimpleNamespace(warmup_epochs=train["warmup_epochs"]), epochs=train["epochs"])
    schedule = LearningRateSchedule(mcfg, -(-400 // mcfg.batchSize))
    assert BaseTrainer._get_warmup_iterations(stub, batches) == schedule.warmup == max(round(3 * batches), 100)
    assert train["nbs"] == nbs and train["batch"] == batch
    accumulate = max(round(train["nbs"] / train["batch"]), 1)
    assert accumulate == schedule.accumulate
    ultralyticsDecay = train["weight_decay"] * train["batch"] * accumulate / train["nbs"]
    assert ultralyticsDecay == pytest.approx(mcfg.optimizerWeightDecay * schedule.stepImages / 64, rel=1e-12)
    lines = "\n".join(recipeLines(mcfg, 400, ("default", "mars")))
    assert "warm-up iterations: mars {}".format(schedule.warmup) in lines
    assert "ultralytics mars {}".format(schedule.warmup) in lines and "ultralytics default {}".format(
        round(3 * batches)) in lines
