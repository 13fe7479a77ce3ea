"""Which weights a run keeps and how they are written (engine/checkpoint.py): best_weights.pth holds the EMA weights of
the epoch of highest fitness (the validation mAP50-95 alone, COCO-style, as Ultralytics 8.4.190), epochs without a
measurement keep the best, and without an evaluator the lowest validation loss or the last epoch; results.csv has the
columns, its fitness column its mAP5095; the Checkpointer's save / load round trip restores every part of the training
state."""
import csv
import os
import types

import pytest
import torch

from engine.checkpoint import BEST_FILE, INFO_FILE, LAST_FILE, Checkpointer
from engine.trainer import Trainer, fitness
from model.base.yolomodel import YoloModel
from tests.helpers import makeConfig, requireOracle, tinyConfig
from train.ema import ModelEma
from train.loss import DetectionLoss
from train.opt import makeOptimizer


class ScriptedEvaluator(object):
    """Returns the given results epoch by epoch (a number: mAP50, COCO AP50 and mAP50-95 all that value; a tuple: (VOC
    mAP50, COCO AP50, mAP50-95)) and keeps a copy of the EMA weights it was shown."""

    def __init__(self, values):
        self.values, self.seen = list(values), []

    def evaluate(self, model, splitName):
        self.seen.append({k: v.clone() for k, v in model.state_dict().items()})
        value = self.values.pop(0)
        mAP50, mAP50Coco, mAP5095 = value if isinstance(value, tuple) else (value,) * 3
        return {"mAP50": mAP50, "mAP50Coco": mAP50Coco, "mAP5095": mAP5095}

    def paintedImages(self, model, splitName, count):
        return []  # the TensorBoard pictures: none here


def test_best_checkpoint_is_the_epoch_of_highest_map5095(tmp_path):
    """(VOC mAP50, COCO AP50, mAP50-95) per epoch chosen so that the old fitness 0.1 AP50 + 0.9 AP50:95 (0.45, 0.398,
    0.419) and mAP50 (0.95, 0.3, 0.6) would keep epoch 1: mAP50-95 alone (0.40, 0.42, 0.41) keeps epoch 2. results.csv's
    fitness column equals its mAP5095 column in every row."""
    mcfg = tinyConfig(tmp_path, maxEpoch=3, evalEveryEpochs=1, epochValidation=True)
    evaluator = ScriptedEvaluator([(0.95, 0.9, 0.40), (0.3, 0.2, 0.42), (0.6, 0.5, 0.41)])
    trainer = Trainer(mcfg, YoloModel(mcfg), DetectionLoss, evaluator)
    trainer.run()
    best = torch.load(os.path.join(mcfg.cacheDir(), BEST_FILE), weights_only=True)
    assert all(torch.equal(best[k], evaluator.seen[1][k]) for k in best)  # epoch 2, not the first nor the last one
    assert not all(torch.equal(best[k], evaluator.seen[0][k]) for k in best)
    assert trainer.bestMetric == 0.42
    assert [r["fitness"] for r in trainer.history] == [0.40, 0.42, 0.41]
    with open(os.path.join(mcfg.runDir(), "results.csv")) as f:
        rows = list(csv.DictReader(f))
    assert {"fitness", "mAP50", "mAP5095", "dataSeconds", "validationSeconds"} <= set(rows[0])
    assert [row["fitness"] for row in rows] == [row["mAP5095"] for row in rows] == ["0.4", "0.42", "0.41"]


def test_epochs_without_measurement_keep_the_best(tmp_path):
    mcfg = tinyConfig(tmp_path, maxEpoch=5, evalEveryEpochs=2)
    evaluator = ScriptedEvaluator([0.4, 0.1, 0.2])  # measured after epochs 2, 4 and 5 (the last epoch always)
    trainer = Trainer(mcfg, YoloModel(mcfg), DetectionLoss, evaluator)
    trainer.run()
    best = torch.load(os.path.join(mcfg.cacheDir(), BEST_FILE), weights_only=True)
    assert all(torch.equal(best[k], evaluator.seen[0][k]) for k in best)
    assert ["fitness" in r for r in trainer.history] == [False, True, False, True, True]


def test_fitness_is_map5095_alone():
    """Ultralytics 8.4.190's Metric.fitness, called on a stub of its mean results (P, R, mAP50, mAP50-95): mAP50-95."""
    requireOracle("ultralytics")
    from ultralytics.utils import metrics
    stub = types.SimpleNamespace(mean_results=lambda: [0.7, 0.6, 0.9, 0.5])
    assert metrics.Metric.fitness(stub) == 0.5
    assert fitness({"mAP50Coco": 0.8, "mAP5095": 0.5, "mAP50": 0.9}) == 0.5


@pytest.mark.parametrize("validation", [False, True])
def test_without_evaluator_the_best_is_by_validation_loss_or_the_last_epoch(tmp_path, validation):
    mcfg = tinyConfig(tmp_path, maxEpoch=2, evalEveryEpochs=1, epochValidation=validation)
    trainer = Trainer(mcfg, YoloModel(mcfg), DetectionLoss)  # no evaluator: nothing measures mAP
    trainer.run()
    assert os.path.isfile(os.path.join(mcfg.cacheDir(), BEST_FILE))
    assert (trainer.bestMetric is not None) == validation


def trainingParts(mcfg, seed):
    """A model, its EMA, optimizer and (enabled, CPU) grad scaler after one optimizer step from seed's weights: every
    part has state of its own (momentum buffers, an EMA count, a scale)."""
    torch.manual_seed(seed)
    model = YoloModel(mcfg).train()
    ema = ModelEma(model)
    optimizer = makeOptimizer(mcfg, model)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** (10 + seed))
    sum(level.square().mean() for level in model(torch.rand(2, 3, 64, 64))).backward()
    optimizer.step()
    ema.update(model, numImages=2 + seed)
    return model, ema, optimizer, scaler


def test_checkpointer_save_load_round_trip(tmp_path):
    """Checkpointer.save then load into other objects (other weights, EMA count, optimizer state, scale): the model,
    EMA, EMA count, optimizer state, scaler and the loop's position come back exactly; best=True writes the EMA
    weights as best_weights.pth; info.txt says where the run stands; nothing to load (no file, or mcfg.nobuf): None."""
    mcfg = makeConfig("nano", nc=2, inputShape=(64, 64), root=str(tmp_path), user="u", cfgname="roundtrip",
                      maxEpoch=5)
    saved = trainingParts(mcfg, seed=1)
    position = {"epoch": 2, "batchesDone": 3, "epochPosition": 12, "partialParts": [0.5, 0.25, 1.5], "worldSize": 1,
                "bestMetric": 0.375, "history": [{"epoch": 1, "fitness": 0.375}, {"epoch": 2}]}
    other = trainingParts(mcfg, seed=2)
    assert Checkpointer(mcfg, *other).load() is None  # nothing saved yet
    Checkpointer(mcfg, *saved).save(position, best=True)
    assert sorted(os.listdir(mcfg.cacheDir())) == sorted([BEST_FILE, INFO_FILE, LAST_FILE])
    best = torch.load(os.path.join(mcfg.cacheDir(), BEST_FILE), weights_only=True)
    assert best.keys() == saved[1].module.state_dict().keys()
    assert all(torch.equal(v, saved[1].module.state_dict()[k]) for k, v in best.items())
    with open(os.path.join(mcfg.cacheDir(), INFO_FILE)) as f:
        info = f.read()
    assert "cfgname=roundtrip\n" in info and "epochsDone=2/5\n" in info and "batchesDone=3\n" in info

    model, ema, optimizer, scaler = other
    assert not torch.equal(model.state_dict()["head.clsBranches.0.2.weight"],
                           saved[0].state_dict()["head.clsBranches.0.2.weight"])
    loaded = Checkpointer(mcfg, *other).load()
    assert loaded == position
    for restored, original in ((model, saved[0]), (ema.module, saved[1].module)):
        state = original.state_dict()
        assert all(torch.equal(v, state[k]) for k, v in restored.state_dict().items())
    assert ema.updates == saved[1].updates
    restoredOptimizer, savedOptimizer = optimizer.state_dict(), saved[2].state_dict()
    assert restoredOptimizer["param_groups"] == savedOptimizer["param_groups"]
    assert restoredOptimizer["state"].keys() == savedOptimizer["state"].keys() and len(savedOptimizer["state"]) > 0
    for i, values in savedOptimizer["state"].items():
        for k, v in values.items():
            assert torch.equal(restoredOptimizer["state"][i][k], v) if torch.is_tensor(v) else \
                restoredOptimizer["state"][i][k] == v, (i, k)
    assert scaler.state_dict() == saved[3].state_dict() and scaler.get_scale() == 2.0 ** 11
    assert Checkpointer(mcfg.copy(nobuf=True), *other).load() is None
