"""The training recipe on real data layouts (issue 9): split-file forms, VOC difficult, mosaic, fp32 loss under
autocast, best checkpoint by fitness, the pretrained tag."""
import os

import cv2
import numpy as np
import pytest
import torch

from cfgops import c1, demo
from config.tags import pretrainedBackbonePath
from dl.aug import augmentSample, mosaicCanvas
from dl.vocdataset import VocDataset, makeDataLoader
from engine.checkpoint import BEST_FILE
from engine.trainer import Trainer, fitness
from misc.errors import MarsError
from model.base.yolomodel import YoloModel
from tests.conftest import makeConfig
from tests.test_aug import COLORS, coloredRectangles, meanColorInside, ringColor
from tests.test_train import tinyConfig
from train.distilloss import DistillationDetectionLoss, channelWiseDivergence
from train.loss import DetectionLoss


def writeImage(root, fileName, objects, shape=(48, 64), difficult=()):
    """A grey image root/images/<fileName> and root/annotations/<stem>.xml; objects: [(name, x0, y0, x1, y1)];
    difficult: indexes of objects flagged <difficult>1</difficult>."""
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    cv2.imwrite(os.path.join(root, "images", fileName), np.full(shape + (3,), 100, np.uint8))
    body = "".join("<object><name>{}</name><difficult>{}</difficult><bndbox><xmin>{}</xmin><ymin>{}</ymin>"
                   "<xmax>{}</xmax><ymax>{}</ymax></bndbox></object>".format(n, int(i in difficult), x0, y0, x1, y1)
                   for i, (n, x0, y0, x1, y1) in enumerate(objects))
    with open(os.path.join(root, "annotations", os.path.splitext(fileName)[0] + ".xml"), "w") as f:
        f.write("<annotation><size><width>{}</width><height>{}</height></size>{}</annotation>".format(
            shape[1], shape[0], body))


def datasetConfig(root, lines, **fields):
    os.makedirs(os.path.join(root, "splits", "v5"), exist_ok=True)
    split = os.path.join(root, "splits", "v5", "train.txt")
    with open(split, "w") as f:
        f.write("\n".join(lines) + "\n")
    fields = dict(dict(imageDir=os.path.join(root, "images"), annotationDir=os.path.join(root, "annotations"),
                       classList=["A", "B"], subsetMap={"train": split}, dcore=0, batchSize=2, augment=False), **fields)
    return makeConfig("nano", nc=2, inputShape=(64, 64), **fields)


# ---------------------------------------------------------------- split files as the course writes them


def test_splitFileLinesMayNameFilesWithTheirSuffix(tmp_path):
    root = str(tmp_path)
    writeImage(root, "1.jpg", [("A", 1, 1, 20, 20)])
    writeImage(root, "2.jpg", [("B", 5, 5, 30, 30)])
    writeImage(root, "3.PNG", [("A", 2, 2, 10, 10)])
    writeImage(root, "000004.png", [("B", 2, 2, 10, 12)])
    dataset = VocDataset(datasetConfig(root, ["1.jpg", "2", "3.PNG", "000004"]), "train", train=False)
    assert [os.path.basename(p) for p in dataset.imagePaths] == ["1.jpg", "2.jpg", "3.PNG", "000004.png"]
    assert [c.tolist() for c in dataset.classIndexes] == [[0], [1], [0], [1]]


def test_splitFileCourseFormEveryLineASuffix(tmp_path):
    root = str(tmp_path)
    for i in range(1, 4):
        writeImage(root, "{}.jpg".format(i), [("A", 1, 1, 20, 20)])
    loader = makeDataLoader(datasetConfig(root, ["1.jpg", "2.jpg", "3.jpg"]), "train", train=False)
    images, targets, metas = next(iter(loader))
    assert images.shape == (2, 3, 64, 64) and [os.path.basename(m["path"]) for m in metas] == ["1.jpg", "2.jpg"]


@pytest.mark.parametrize("line", ["../1.jpg", "/etc/1.jpg", "a/../../1.jpg"])
def test_splitFileEntryLeavingTheFolderIsRefused(tmp_path, line):
    root = str(tmp_path)
    writeImage(root, "1.jpg", [("A", 1, 1, 20, 20)])
    with pytest.raises(MarsError, match="leaves the image folder"):
        VocDataset(datasetConfig(root, [line]), "train", train=False)


def test_missingImageNamedWithSuffixSaysWhichFile(tmp_path):
    root = str(tmp_path)
    writeImage(root, "1.jpg", [("A", 1, 1, 20, 20)])
    with pytest.raises(MarsError, match=r"images/7\.jpg listed in split file"):
        VocDataset(datasetConfig(root, ["1.jpg", "7.jpg"]), "train", train=False)


# ---------------------------------------------------------------- VOC difficult


@pytest.mark.parametrize("train", [True, False])
def test_difficultObjectsAreNotTargetsButIgnoredGroundTruth(tmp_path, train):
    root = str(tmp_path)
    writeImage(root, "1.jpg", [("A", 2, 2, 20, 20), ("B", 30, 10, 60, 40)], difficult=(1,))
    dataset = VocDataset(datasetConfig(root, ["1.jpg"]), "train", train=train)
    _, labels, meta = dataset[0]
    assert labels[:, 0].tolist() == [0.0]  # the difficult B is no target (training and validation loss)
    assert meta["gt"][:, 0].tolist() == [0.0, 1.0] and meta["gtIgnore"].tolist() == [False, True]
    assert dataset.numObjects() == 1
    everything = VocDataset(datasetConfig(root, ["1.jpg"], useDifficult=True), "train", train=train)
    _, labels, meta = everything[0]
    assert labels[:, 0].tolist() == [0.0, 1.0] and meta["gtIgnore"].tolist() == [False, False]


# ---------------------------------------------------------------- mosaic


def test_mosaicBoxesFollowTheirPixels():
    """Four images with coloured rectangles on a 2x canvas, then the window: every kept box sits on its colour and
    the colour is gone just outside it (the ring check of test_aug.py)."""
    image, boxes = coloredRectangles()
    outShape, numChecked = (128, 160), 0
    for seed in range(12):
        rng = np.random.default_rng(seed)
        images = [image, image[:, ::-1].copy(), image[::-1].copy(), image]
        flipped = [boxes, np.stack([300 - boxes[:, 2], boxes[:, 1], 300 - boxes[:, 0], boxes[:, 3]], 1),
                   np.stack([boxes[:, 0], 200 - boxes[:, 3], boxes[:, 2], 200 - boxes[:, 1]], 1), boxes]
        canvas, canvasBoxes, keeps = mosaicCanvas(images, flipped, outShape, rng)
        assert canvas.shape == (256, 320, 3) and sum(int(k.sum()) for k in keeps) == len(canvasBoxes)
        colors = np.concatenate([np.array(COLORS)[k] for k in keeps])
        out, outBoxes, keep = augmentSample(canvas, canvasBoxes, outShape, rng, scaleRange=(0.6, 1.4), flipProb=0.5,
                                            baseScale=1.0, centerJitter=0.1)
        assert out.shape == outShape + (3,)
        for box, color in zip(outBoxes, colors[keep]):
            if min(box[2] - box[0], box[3] - box[1]) >= 6:
                assert np.abs(meanColorInside(out, box) - color).max() < 25, (seed, box)
                ring = ringColor(out, box)
                if ring is not None and min(box[2] - box[0], box[3] - box[1]) >= 10:
                    assert np.abs(ring - color).max() > 60, (seed, box, ring)
                numChecked += 1
    assert numChecked > 30


def test_mosaicDatasetRespectsClassSelectionAndIsReproducible(tmp_path):
    root = str(tmp_path)
    stems = []
    for i in range(6):
        writeImage(root, "{}.jpg".format(i), [("A", 2, 2, 30, 30), ("B", 34, 10, 60, 40)])
        stems.append(str(i))
    mcfg = datasetConfig(root, stems, augment=True, mosaic=1.0, trainSelectedClasses=["A"])
    dataset = VocDataset(mcfg, "train", train=True)
    seen = []
    for trial in range(2):
        dataset.rng = np.random.default_rng(7)
        samples = [dataset[i] for i in range(6)]
        seen.append([(s[0].clone(), s[1].clone()) for s in samples])
        assert all(set(s[1][:, 0].tolist()) <= {0.0} for s in samples)  # B is never a target of a teacher
        assert sum(len(s[1]) for s in samples) > 6  # mosaics bring more objects than one image has
    for (imageA, labelsA), (imageB, labelsB) in zip(*seen):
        assert torch.equal(imageA, imageB) and torch.equal(labelsA, labelsB)


def test_mosaicClosesForTheLastEpochs(tmp_path):
    mcfg = tinyConfig(tmp_path, maxEpoch=3, augment=True, mosaic=1.0, closeMosaicEpochs=1)
    trainer = Trainer(mcfg, YoloModel(mcfg), DetectionLoss)
    seen = []
    trainer.trainEpoch = lambda epoch, frozen: (seen.append(trainer.trainLoader.dataset.mosaic) or ([0.0] * 3, 0.0, 0.0))
    trainer.run()
    assert seen == [1.0, 1.0, 0.0]


# ---------------------------------------------------------------- loss in float32 under autocast


def test_lossIsFloat32UnderAutocast():
    mcfg = makeConfig("nano", nc=3, inputShape=(128, 128))
    model = YoloModel(mcfg).train()
    preds = [p.detach() for p in model(torch.rand(2, 3, 128, 128))]
    targets = torch.tensor([[0, 1, 0.1, 0.1, 0.5, 0.6], [1, 2, 0.3, 0.2, 0.9, 0.7], [1, 0, 0.05, 0.5, 0.3, 0.95]])
    loss = DetectionLoss(mcfg, model)
    plain, plainParts = loss(preds, targets), loss.parts
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast, autocastParts = loss(preds, targets), loss.parts
    assert autocast.dtype == torch.float32 and torch.equal(autocast, plain) and torch.equal(autocastParts, plainParts)


def test_distillationTermsAreFloat32UnderAutocast():
    student, teacher = torch.randn(2, 8, 12, 12), torch.randn(2, 8, 12, 12)
    plain = channelWiseDivergence(student, teacher, 2.0)

    class Stub(DistillationDetectionLoss):
        def compute(self, outputs, targets):  # what runs inside __call__'s autocast guard
            return channelWiseDivergence(outputs["preds"][0], outputs["teacherPreds"][0], 2.0)

    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = Stub.__call__(object.__new__(Stub), {"preds": [student], "teacherPreds": [teacher]}, None)
    assert value.dtype == torch.float32 and torch.equal(value, plain)


# ---------------------------------------------------------------- best checkpoint by fitness


class ScriptedEvaluator(object):
    """Returns the given fitness values epoch by epoch and keeps a copy of the EMA weights it was shown."""

    def __init__(self, values):
        self.values, self.seen = list(values), []

    def evaluate(self, model, splitName):
        self.seen.append({k: v.clone() for k, v in model.state_dict().items()})
        value = self.values.pop(0)
        return {"mAP50": value, "mAP50Coco": value, "mAP5095": value}


def test_bestCheckpointIsTheEpochOfHighestFitness(tmp_path):
    mcfg = tinyConfig(tmp_path, maxEpoch=3, evalEveryEpochs=1, epochValidation=True)
    evaluator = ScriptedEvaluator([0.2, 0.5, 0.3])
    trainer = Trainer(mcfg, YoloModel(mcfg), DetectionLoss, evaluator)
    trainer.run()
    best = torch.load(os.path.join(mcfg.cacheDir(), BEST_FILE), weights_only=True)
    assert all(torch.equal(best[k], evaluator.seen[1][k]) for k in best)  # epoch 2, not the last one
    assert trainer.bestMetric == pytest.approx(0.5)
    assert [round(r["fitness"], 6) for r in trainer.history] == [0.2, 0.5, 0.3]
    with open(os.path.join(mcfg.runDir(), "results.csv")) as f:
        header = f.readline().strip().split(",")
    assert {"fitness", "mAP50", "mAP5095", "dataSeconds", "validationSeconds"} <= set(header)


def test_epochsWithoutMeasurementKeepTheBest(tmp_path):
    mcfg = tinyConfig(tmp_path, maxEpoch=5, evalEveryEpochs=2)
    evaluator = ScriptedEvaluator([0.4, 0.1, 0.2])  # measured after epochs 2, 4 and 5 (the last epoch always)
    trainer = Trainer(mcfg, YoloModel(mcfg), DetectionLoss, evaluator)
    trainer.run()
    best = torch.load(os.path.join(mcfg.cacheDir(), BEST_FILE), weights_only=True)
    assert all(torch.equal(best[k], evaluator.seen[0][k]) for k in best)
    assert ["fitness" in r for r in trainer.history] == [False, True, False, True, True]


def test_fitnessWeights():
    assert fitness({"mAP50Coco": 0.8, "mAP5095": 0.5, "mAP50": 0.9}) == pytest.approx(0.1 * 0.8 + 0.9 * 0.5)


# ---------------------------------------------------------------- stage 2: pretrained backbone tag


def test_pretrainedTagPointsAtResourcesAndSaysHowToMakeTheFile(tmp_path):
    from cfgops import makeConfig as makeNamedConfig
    mcfg = makeNamedConfig("demo.nano.tiny.pretrained", str(tmp_path), "u")
    assert mcfg.pretrainedBackboneUrl == pretrainedBackbonePath("nano")
    assert mcfg.pretrainedBackboneUrl.endswith(os.path.join("resources", "pretrained", "backbone", "backbone_nano.pth"))
    assert mcfg.backboneFreezeEpochs == [0, 1, 2]
    mcfg = mcfg.copy(pretrainedBackboneUrl=str(tmp_path / "missing" / "backbone_nano.pth"))
    with pytest.raises(MarsError, match=r"tools/convert\.py yolov8n\.pt .*missing/backbone_nano\.pth --backbone-only"):
        YoloModel(mcfg)
    mcfg = mcfg.copy(pretrainedBackboneUrl=str(tmp_path / "backbone_nano.pth"))
    torch.save({k: v for k, v in YoloModel(makeConfig("nano", nc=20)).state_dict().items() if k.startswith("backbone.")},
               mcfg.pretrainedBackboneUrl)
    model = YoloModel(mcfg)
    saved = torch.load(mcfg.pretrainedBackboneUrl, weights_only=True)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())


# ---------------------------------------------------------------- a skipped step leaves BatchNorm statistics alone


def test_skippedStepRestoresBatchNormStatistics(tmp_path, monkeypatch):
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


@pytest.mark.parametrize("previews", [0, 1, 2])
def test_trainerWritesTheBatchPreview(tmp_path, previews):
    mcfg = tinyConfig(tmp_path, maxEpoch=1, previewBatches=previews)  # one batch an epoch
    Trainer(mcfg, YoloModel(mcfg), DetectionLoss).run()
    written = sorted(f for f in os.listdir(mcfg.runDir()) if f.startswith("train_batch"))
    assert written == (["train_batch.jpg"] if previews else [])
    assert cv2.imread(os.path.join(mcfg.runDir(), written[0])) is not None if written else True


@pytest.mark.parametrize("validation", [False, True])
def test_withoutEvaluatorTheBestIsByValidationLossOrTheLastEpoch(tmp_path, validation):
    mcfg = tinyConfig(tmp_path, maxEpoch=2, evalEveryEpochs=1, epochValidation=validation)
    trainer = Trainer(mcfg, YoloModel(mcfg), DetectionLoss)  # no evaluator: nothing measures mAP
    trainer.run()
    assert os.path.isfile(os.path.join(mcfg.cacheDir(), BEST_FILE))
    assert (trainer.bestMetric is not None) == validation


def test_epochTagWinsOverTheFileEpochs():
    """epoch@N sets the epochs of every stage (the file's 200 / 100 are only defaults), and the student's frozen
    backbone is the first quarter of its epochs."""
    assert c1.mcfg(["nano", "teacher", "epoch@30"]).maxEpoch == 30
    assert c1.mcfg(["nano", "full", "epoch@7"]).maxEpoch == 7
    assert c1.mcfg(["nano", "teacher"]).maxEpoch == 200
    student = c1.mcfg(["nano", "distillation", "epoch@30"])
    assert student.maxEpoch == 30 and student.backboneFreezeEpochs == list(range(7))
    assert c1.mcfg(["nano", "distillation"]).backboneFreezeEpochs == list(range(25))
    assert demo.mcfg(["nano", "distillation", "epoch@20"]).backboneFreezeEpochs == list(range(5))
