"""The training loop (engine/trainer.py, Trainer) on the tiny four-image set: it learns (overfits four images),
resumes at the next epoch, a step reads nothing on the host and a skipped (non-finite) step puts the BatchNorm
statistics back, the frozen backbone stays bitwise unchanged, mosaic closes for the last epochs. Which checkpoint a run
keeps: test_checkpoint.py; the batch preview it writes: test_preview.py."""
import csv
import os
import traceback

import pytest
import torch

from engine.evaluator import Evaluator
from engine.trainer import Trainer
from model.base.yolomodel import YoloModel
from tests.helpers import tinyConfig
from train.loss import DetectionLoss


@pytest.mark.slow
def test_overfits_four_images(tmp_path):
    """Convergence: a nano model from scratch learns 4 tiny images to mAP50 >= 0.9 (under a minute of CPU).
    300 steps also let BatchNorm's running statistics (momentum 0.03) settle, which eval mode relies on."""
    torch.manual_seed(0)
    mcfg = tinyConfig(tmp_path, repeat=25, maxEpoch=12, baseLearningRate=0.02, minLearningRate=0.002)
    model = YoloModel(mcfg)
    trainer = Trainer(mcfg, model, DetectionLoss)
    trainer.run()
    result = Evaluator(mcfg).evaluate(trainer.ema.module, "train")
    assert result["mAP50"] >= 0.9, result["mAP50"]
    assert len(trainer.history) == 12
    first, last = trainer.history[0], trainer.history[-1]
    assert last["trainBox"] < first["trainBox"] and last["trainCls"] < first["trainCls"]


def test_resume_continues_at_next_epoch(tmp_path):
    mcfg = tinyConfig(tmp_path, maxEpoch=1)
    Trainer(mcfg, YoloModel(mcfg), DetectionLoss).run()
    cache = mcfg.cacheDir()
    assert sorted(os.listdir(cache)) == ["best_weights.pth", "info.txt", "last_epoch_weights.pth"]
    mcfg = mcfg.copy(maxEpoch=2)  # the run is started again with more epochs to go
    trainer = Trainer(mcfg, YoloModel(mcfg), DetectionLoss)
    trainer.run()
    assert [row["epoch"] for row in trainer.history] == [1, 2]
    assert torch.load(os.path.join(cache, "last_epoch_weights.pth"), weights_only=True)["epoch"] == 2
    with open(os.path.join(mcfg.runDir(), "results.csv")) as f:
        assert len(f.read().strip().splitlines()) == 3


def test_train_step_reads_nothing_on_the_host(tmp_path, monkeypatch):
    """Trainer.trainStep with the dense loss (the accelerator path) never turns a tensor into a Python value: on
    CUDA each such read would wait for the GPU. The reads are counted by patching Tensor's conversions (except in
    targetsToPadded, which reads the loader's CPU targets before they go to the device); a step with a non-finite
    loss is skipped without a read too. (The loss alone also runs on the meta device: test_loss.py.)"""
    mcfg = tinyConfig(tmp_path, maxEpoch=1)
    trainer = Trainer(mcfg, YoloModel(mcfg), DetectionLoss)
    trainer.loss.dense = True
    trainer.model.train()
    images, targets, _ = next(iter(trainer.trainLoader))
    total = torch.zeros(3)
    reads = []
    for name in ("item", "tolist", "__bool__", "__int__", "__float__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _name=name, _original=original, **kwargs):
            caller = traceback.extract_stack(limit=2)[0]
            if caller.name != "targetsToPadded":
                reads.append("{} in {}:{}".format(_name, caller.filename, caller.lineno))
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, counted)
    trainer.trainStep(0, images, targets, total)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    emaBefore = {k: v.clone() for k, v in trainer.ema.module.state_dict().items()}
    trainer.loss.lossWeights = (float("nan"), 0.5, 1.5)  # the next step's loss is NaN
    trainer.loss.cache.clear()
    trainer.trainStep(1, images, targets, total)
    monkeypatch.undo()
    assert reads == []
    assert trainer.skips.tolist() == [1.0, 1.0, 1.0]  # counted on the device
    for k, v in trainer.model.state_dict().items():  # skipped: no weight moved, the EMA stayed put
        if v.is_floating_point() and "running" not in k:
            assert torch.equal(v, before[k]), k
            assert torch.equal(trainer.ema.module.state_dict()[k], emaBefore[k]), k
    assert torch.isfinite(total).all() and (total > 0).all()


def test_backbone_freezing_in_the_trainer(tmp_path):
    """backboneFreezeEpochs=[0] with the real optimizer: after epoch 0 every backbone parameter and BatchNorm buffer is
    bitwise unchanged (the neck and head moved); after epoch 1 they changed; results.csv's `frozen` column says 1, 0.
    Also what the loop hands the schedule, the optimizer and the EMA: the global step, images per step, images."""
    mcfg = tinyConfig(tmp_path, repeat=2, maxEpoch=2, backboneFreezeEpochs=[0])  # 2 steps of 4 images per epoch
    model = YoloModel(mcfg)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = Trainer(mcfg, model, DetectionLoss)
    snapshots = []
    saveEpoch = trainer.saveEpoch

    def snapshot(epochsDone, metric):
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        saveEpoch(epochsDone, metric)
    trainer.saveEpoch = snapshot
    trainer.run()
    assert len(snapshots) == 2
    backbone = [k for k in initial if k.startswith("backbone.")]
    assert any("running_mean" in k for k in backbone) and any("num_batches_tracked" in k for k in backbone)
    for k in backbone:
        assert torch.equal(snapshots[0][k], initial[k]), k  # frozen: weights and BatchNorm statistics
    moved = [k for k in backbone if not torch.equal(snapshots[1][k], snapshots[0][k])]
    assert all(k in moved for k in backbone if k.endswith((".weight", ".running_mean", ".running_var")))
    assert not torch.equal(snapshots[0]["head.clsBranches.0.2.weight"], initial["head.clsBranches.0.2.weight"])
    with open(os.path.join(mcfg.runDir(), "results.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [row["frozen"] for row in rows] == ["1", "0"]
    # the lr of each row is the schedule's at the epoch's last global step (1, then 3); weight decay per 4 images;
    # the EMA counted 4 steps of 4 images
    assert [float(row["lr"]) for row in rows] == [pytest.approx(trainer.schedule.decayed(s), rel=1e-5) for s in (1, 3)]
    assert trainer.optimizer.param_groups[0]["weight_decay"] == pytest.approx(mcfg.optimizerWeightDecay * 4 / 64)
    assert trainer.ema.updates == pytest.approx(16 / 64)


def test_mosaic_closes_for_the_last_epochs(tmp_path):
    mcfg = tinyConfig(tmp_path, maxEpoch=3, augment=True, mosaic=1.0, closeMosaicEpochs=1)
    trainer = Trainer(mcfg, YoloModel(mcfg), DetectionLoss)
    seen = []
    trainer.trainEpoch = lambda epoch, frozen: (seen.append(trainer.trainLoader.dataset.mosaic) or ([0.0] * 3, 0.0, 0.0))
    trainer.run()
    assert seen == [1.0, 1.0, 0.0]


def test_skipped_step_restores_batch_norm_statistics(tmp_path, monkeypatch):
    """A NaN batch: the forward poisons every BatchNorm running mean/var, the step is skipped on the device, and the
    statistics from before the step are put back (bitwise); a finite step after it moves them as usual."""
    import engine.trainer as base
    mcfg = tinyConfig(tmp_path, maxEpoch=1)
    trainer = Trainer(mcfg, YoloModel(mcfg), DetectionLoss)
    trainer.model.train()
    images, targets, _ = next(iter(trainer.trainLoader))
    norms = {k: v.clone() for k, v in trainer.model.state_dict().items() if "running" in k or "num_batches" in k}
    assert len(norms) > 100
    toDevice = base.imagesToDevice
    monkeypatch.setattr(base, "imagesToDevice", lambda *a, **k: toDevice(*a, **k) * float("nan"))
    trainer.trainStep(0, images, targets, torch.zeros(3))
    assert trainer.skips.tolist()[0] == 1.0
    state = trainer.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in norms.items())
    monkeypatch.setattr(base, "imagesToDevice", toDevice)
    trainer.trainStep(1, images, targets, torch.zeros(3))
    assert trainer.skips.tolist()[0] == 1.0
    state = trainer.model.state_dict()
    assert all(torch.isfinite(state[k]).all() for k in norms)
    assert not torch.equal(state["backbone.stem.bn.running_mean"], norms["backbone.stem.bn.running_mean"])
