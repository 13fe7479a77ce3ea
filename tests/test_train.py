import os

import torch

from engine.evaluator import Evaluator
from engine.trainer.base import BaseTrainer
from model.base.yolomodel import YoloModel
from tests.conftest import makeConfig
from tests.helpers import writeVocSet
from train.loss import DetectionLoss

IMAGES = {
    "a": (64, 64, [("red", 6, 8, 30, 40)]),
    "b": (64, 64, [("blue", 30, 20, 58, 44), ("red", 4, 44, 24, 62)]),
    "c": (64, 64, [("blue", 10, 10, 40, 30)]),
    "d": (64, 64, [("red", 34, 6, 60, 34), ("blue", 4, 36, 30, 60)]),
}


def tinyConfig(root, repeat=1, **fields):
    imageDir, annotationDir, subsetMap = writeVocSet(str(root), IMAGES, ["red", "blue"], {"train": list(IMAGES) * repeat})
    fields = dict(dict(imageDir=imageDir, annotationDir=annotationDir, classList=["red", "blue"], subsetMap=subsetMap,
                       trainSplitName="train", validationSplitName="train", testSplitName="train", dcore=0, batchSize=4,
                       augment=False, epochValidation=False, warmupEpochs=0.0, root=str(root), user="u", cfgname="tiny"),
                  **fields)
    return makeConfig("nano", nc=2, inputShape=(64, 64), **fields)


def test_overfits_four_images(tmp_path):
    """Convergence: a nano model from scratch learns 4 tiny images to mAP50 >= 0.9 (under a minute of CPU).
    300 steps also let BatchNorm's running statistics (momentum 0.03) settle, which eval mode relies on."""
    torch.manual_seed(0)
    mcfg = tinyConfig(tmp_path, repeat=25, maxEpoch=12, baseLearningRate=0.02, minLearningRate=0.002)
    model = YoloModel(mcfg)
    trainer = BaseTrainer(mcfg, model, DetectionLoss)
    trainer.run()
    result = Evaluator(mcfg).evaluate(trainer.ema.module, "train")
    assert result["mAP50"] >= 0.9, result["mAP50"]
    assert len(trainer.history) == 12
    first, last = trainer.history[0], trainer.history[-1]
    assert last["trainBox"] < first["trainBox"] and last["trainCls"] < first["trainCls"]


def test_resume_continues_at_next_epoch(tmp_path):
    mcfg = tinyConfig(tmp_path, maxEpoch=1)
    BaseTrainer(mcfg, YoloModel(mcfg), DetectionLoss).run()
    cache = mcfg.cacheDir()
    assert sorted(os.listdir(cache)) == ["best_weights.pth", "info.txt", "last_epoch_weights.pth"]
    mcfg.maxEpoch = 2  # the run is started again with more epochs to go
    trainer = BaseTrainer(mcfg, YoloModel(mcfg), DetectionLoss)
    trainer.run()
    assert [row["epoch"] for row in trainer.history] == [1, 2]
    assert torch.load(os.path.join(cache, "last_epoch_weights.pth"), weights_only=True)["epoch"] == 2
    with open(os.path.join(mcfg.runDir(), "results.csv")) as f:
        assert len(f.read().strip().splitlines()) == 3
