"""What several test modules share (test modules import from here, never from each other or from conftest.py):
finalized configs (makeConfig, tinyConfig on the four-image TINY_IMAGES set), tiny VOC data sets written by tests
(writeVocSet, writeImage / datasetConfig for split-file lines and <difficult>), the test oracles (requireOracle:
required, never skipped) and Ultralytics' reference model (referenceModel, flatOutputs). tests/ddp_worker.py uses it
too."""
import contextlib
import importlib
import importlib.metadata
import io
import os
import re

import cv2
import numpy as np
import torch

from config.mconfig import PHASE_LETTERS, ModelConfig

XML = """<annotation><filename>{name}</filename><size><width>{w}</width><height>{h}</height><depth>3</depth></size>
{objects}</annotation>"""
OBJ = "<object><name>{c}</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
COLORS = [(40, 40, 220), (220, 80, 40), (40, 200, 40), (200, 40, 200)]  # BGR per class


def makeConfig(phase="nano", nc=20, inputShape=(160, 160), **fields):
    """A finalized ModelConfig for building models in tests: no files, no run root."""
    mcfg = ModelConfig()
    mcfg.phase, mcfg.nc, mcfg.inputShape, mcfg.device = phase, nc, inputShape, "cpu"
    for k, v in fields.items():
        setattr(mcfg, k, v)
    return mcfg.finalize()


def randomTeacherFile(directory, fileName, size, nc=20):
    """Save a nano teacher of nc classes at size x size (random weights from seed 1, BatchNorm statistics moved off
    their defaults by three train-mode forwards) as directory/fileName; returns the path."""
    from model.base.yolomodel import YoloModel
    torch.manual_seed(1)
    teacher = YoloModel(makeConfig(nc=nc, inputShape=(size, size))).train()
    with torch.no_grad():
        for _ in range(3):
            teacher(torch.rand(2, 3, size, size))
    path = str(directory / fileName)
    teacher.save(path)
    return path


def writeVocSet(root, images, classList, splits):
    """images: {stem: (h, w, [(className, x0, y0, x1, y1), ...])} drawn as filled rectangles of the class colour on
    noisy grey; splits: {name: [stems]}. Returns (imageDir, annotationDir, subsetMap)."""
    imageDir, annotationDir = os.path.join(root, "images"), os.path.join(root, "annotations")
    os.makedirs(imageDir, exist_ok=True)
    os.makedirs(annotationDir, exist_ok=True)
    rng = np.random.default_rng(0)
    for stem, (h, w, objects) in images.items():
        image = rng.integers(90, 140, (h, w, 3), dtype=np.uint8)
        for c, x0, y0, x1, y1 in objects:
            cv2.rectangle(image, (x0, y0), (x1 - 1, y1 - 1), COLORS[classList.index(c) % len(COLORS)], -1)
        cv2.imwrite(os.path.join(imageDir, stem + ".jpg"), image)
        body = "\n".join(OBJ.format(c=c, x0=x0, y0=y0, x1=x1, y1=y1) for c, x0, y0, x1, y1 in objects)
        with open(os.path.join(annotationDir, stem + ".xml"), "w") as f:
            f.write(XML.format(name=stem + ".jpg", w=w, h=h, objects=body))
    subsetMap = {}
    for name, stems in splits.items():
        subsetMap[name] = os.path.join(root, name + ".txt")
        with open(subsetMap[name], "w") as f:
            f.write("\n".join(stems) + "\n")
    return imageDir, annotationDir, subsetMap


REQUIREMENTS_DEV = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "requirements-dev.txt")


def requireOracle(name, distribution=None):
    """Import a test oracle (ultralytics, pycocotools) or fail -- never skip: a missing, broken or other-version oracle
    would otherwise turn the parity checks into silent skips. The version must be the one pinned in requirements-dev.txt
    (the parity was shown with it; another Ultralytics may change its own loss)."""
    distribution = distribution or name
    fix = "install the test oracles: pip install -r requirements-dev.txt"
    try:
        module = importlib.import_module(name)
        installed = importlib.metadata.version(distribution)
    except Exception as e:
        raise ImportError("test oracle {!r} cannot be imported ({}: {}); {}".format(name, type(e).__name__, e, fix)) from e
    with open(REQUIREMENTS_DEV) as f:
        pinned = re.search(r"^{}==(\S+)".format(re.escape(distribution)), f.read(), re.MULTILINE)
    assert pinned, "requirements-dev.txt does not pin {}".format(distribution)
    if installed != pinned.group(1):
        raise ImportError("test oracle {} is version {}, the tests are pinned to {}; {}".format(
            distribution, installed, pinned.group(1), fix))
    return module


def referenceModel(phase, nc):
    """Ultralytics' DetectionModel of the phase (yolov8n/s/m/l/x.yaml) with nc classes and its default args."""
    requireOracle("ultralytics")
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel
    with contextlib.redirect_stdout(io.StringIO()):
        model = DetectionModel("yolov8{}.yaml".format(PHASE_LETTERS[phase]), nc=nc, verbose=False)
    model.args = get_cfg()
    return model


def flatOutputs(levels, regMax):
    """Mars levels -> (boxes (B, 4*regMax, A), scores (B, nc, A)) as Ultralytics' Detect dict lays them out."""
    flat = torch.cat([x.flatten(2) for x in levels], 2)
    return flat[:, :4 * regMax], flat[:, 4 * regMax:]


# ---------------------------------------------------------------- the tiny training set: four 64 x 64 images, 2 classes

TINY_IMAGES = {
    "a": (64, 64, [("red", 6, 8, 30, 40)]),
    "b": (64, 64, [("blue", 30, 20, 58, 44), ("red", 4, 44, 24, 62)]),
    "c": (64, 64, [("blue", 10, 10, 40, 30)]),
    "d": (64, 64, [("red", 34, 6, 60, 34), ("blue", 4, 36, 30, 60)]),
}


def tinyConfig(root, repeat=1, **fields):
    """A finalized nano 64 x 64 config training on TINY_IMAGES (written under root, the split `train` lists them
    `repeat` times) with root as run root: batch 4, no augmentation, no validation, no warm-up, dcore 0."""
    imageDir, annotationDir, subsetMap = writeVocSet(str(root), TINY_IMAGES, ["red", "blue"],
                                                     {"train": list(TINY_IMAGES) * repeat})
    fields = dict(dict(imageDir=imageDir, annotationDir=annotationDir, classList=["red", "blue"], subsetMap=subsetMap,
                       trainSplitName="train", validationSplitName="train", testSplitName="train", dcore=0, batchSize=4,
                       augment=False, epochValidation=False, warmupEpochs=0.0, root=str(root), user="u", cfgname="tiny"),
                  **fields)
    return makeConfig("nano", nc=2, inputShape=(64, 64), **fields)


# ---------------------------------------------------------------- split files and <difficult>, image by image


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
    """A finalized nano 64 x 64 config over root (writeImage's folders), classes A and B, whose split `train` is
    root/splits/v5/train.txt holding `lines` as written; batch 2, no augmentation, dcore 0."""
    os.makedirs(os.path.join(root, "splits", "v5"), exist_ok=True)
    split = os.path.join(root, "splits", "v5", "train.txt")
    with open(split, "w") as f:
        f.write("\n".join(lines) + "\n")
    fields = dict(dict(imageDir=os.path.join(root, "images"), annotationDir=os.path.join(root, "annotations"),
                       classList=["A", "B"], subsetMap={"train": split}, dcore=0, batchSize=2, augment=False), **fields)
    return makeConfig("nano", nc=2, inputShape=(64, 64), **fields)


# ---------------------------------------------------------------- a detector with a fixed, image-independent output


class FixedOutputModel(torch.nn.Module):
    """Stands in for a YoloModel where only the predictor's decoding, NMS and what follows are under test: forward
    returns the same seeded random levels [(B, 4 * regMax + nc, H / s, W / s)] for every image. Box logits decay with
    the DFL bin (distances of about one or two strides, boxes of varied sizes), class logits spread over scores from
    ~0.001 to ~0.9 (no ties)."""

    def __init__(self, mcfg, seed=0):
        super().__init__()
        from model.base.yolomodel import STRIDES
        self.nc, self.regMax, self.strides = mcfg.nc, mcfg.regMax, STRIDES
        generator = torch.Generator().manual_seed(seed)
        height, width = mcfg.inputShape
        self.levels = []
        for stride in self.strides:
            cells = (height // stride, width // stride)
            box = torch.randn((4, self.regMax) + cells, generator=generator) * 1.5
            box -= 0.8 * torch.arange(self.regMax, dtype=torch.float32)[None, :, None, None]
            cls = torch.randn((self.nc,) + cells, generator=generator) * 2.0 - 3.0
            self.levels.append(torch.cat([box.reshape((4 * self.regMax,) + cells), cls]))

    def forward(self, images):
        return [level[None].expand(images.shape[0], -1, -1, -1).to(images.device) for level in self.levels]
