"""Training-batch preview (engine/preview.py): the drawn boxes sit on the objects of the augmented batch; the trainer
writes train_batch.jpg when mcfg.previewBatches asks for it."""
import math
import os

import cv2
import numpy as np
import pytest
import torch

from dl.vocdataset import makeDataLoader
from engine.preview import GAP, classColor, writeBatchPreview
from engine.trainer import Trainer
from model.base.yolomodel import YoloModel
from tests.helpers import makeConfig, tinyConfig, writeVocSet
from train.loss import DetectionLoss

CLASSES = ["red", "blue"]
IMAGES = {
    "a": (96, 96, [("red", 10, 12, 44, 60)]),
    "b": (96, 96, [("blue", 46, 30, 86, 66), ("red", 8, 62, 36, 90)]),
    "c": (96, 96, [("blue", 16, 16, 60, 46)]),
    "d": (96, 96, [("red", 50, 8, 90, 50), ("blue", 8, 52, 44, 88)]),
    "e": (96, 96, [("red", 30, 30, 70, 70)]),
}


def spread(pixels):
    """Mean over pixels of (largest - smallest channel): ~180 on the coloured objects, ~30 on the noisy grey ground."""
    pixels = pixels.reshape(-1, 3).astype(np.int64)
    return float((pixels.max(1) - pixels.min(1)).mean())


def augmentedBatch(root, seed):
    imageDir, annotationDir, subsetMap = writeVocSet(str(root), IMAGES, CLASSES, {"train": list(IMAGES)})
    mcfg = makeConfig("nano", nc=2, inputShape=(96, 96), imageDir=imageDir, annotationDir=annotationDir,
                      classList=CLASSES, subsetMap=subsetMap, dcore=0, batchSize=5, augHsv=(0.0, 0.0, 0.0), seed=seed)
    images, targets, _ = next(iter(makeDataLoader(mcfg, "train", train=True)))
    return images, targets


def test_boxes_line_up_with_the_objects(tmp_path):
    """Ring check: each drawn outline has its class colour; 2 pixels inside it the preview shows the object's colour
    (the network's pixels, unchanged), 2 pixels outside the ground (the top side is left out: the label is there)."""
    numChecked = 0
    for seed in range(3):
        images, targets = augmentedBatch(tmp_path / str(seed), seed)
        path = str(tmp_path / "batch{}.png".format(seed))
        writeBatchPreview(images, targets, CLASSES, path)
        preview = cv2.imread(path)  # BGR
        B, _, H, W = images.shape
        cols = math.ceil(math.sqrt(B))
        assert preview.shape == (math.ceil(B / cols) * (H + GAP) - GAP, cols * (W + GAP) - GAP, 3)
        batchBgr = images.numpy()[:, ::-1].transpose(0, 2, 3, 1)
        for imageIndex, classIndex, x0, y0, x1, y1 in targets.tolist():
            top, left = int(imageIndex) // cols * (H + GAP), int(imageIndex) % cols * (W + GAP)
            bx0, by0, bx1, by1 = round(x0 * W), round(y0 * H), round(x1 * W) - 1, round(y1 * H) - 1  # in the tile
            if min(bx1 - bx0, by1 - by0) < 10 or bx0 < 3 or by0 < 3 or bx1 > W - 4 or by1 > H - 4:
                continue  # too small, or its ring leaves the tile
            tile = preview[top:top + H, left:left + W]
            color = np.array(classColor(classIndex))
            assert (tile[by1, bx0:bx1 + 1] == color).all(1).mean() > 0.9  # bottom side of the outline
            assert (tile[by0 + 16:by1 + 1, bx1] == color).all(1).mean() > 0.9  # right side, below any label (at most 15 pixels high)
            inside = tile[by0 + 16:by1 - 1, bx0 + 2:bx1 - 1]
            assert np.array_equal(inside, batchBgr[int(imageIndex)][by0 + 16:by1 - 1, bx0 + 2:bx1 - 1])
            innerRing = np.concatenate((tile[by1 - 2, bx0 + 2:bx1 - 1], tile[by0 + 16:by1 - 1, bx0 + 2],
                                        tile[by0 + 16:by1 - 1, bx1 - 2]))
            outerRing = np.concatenate((tile[by1 + 2, bx0 - 2:bx1 + 3], tile[by0 + 16:by1 + 3, bx0 - 2],
                                        tile[by0 + 16:by1 + 3, bx1 + 2]))
            assert spread(innerRing) > 120 and spread(outerRing) < 80, (seed, imageIndex, spread(innerRing),
                                                                       spread(outerRing))
            numChecked += 1
    assert numChecked >= 6


def test_jpeg_of_a_batch_of_16_at_640_is_capped(tmp_path):
    """A batch of 16 at 640 px: one JPEG whose larger side is capped (its time is measured by hand, not asserted:
    speed is a benchmark's business, README gives the figure)."""
    images = torch.randint(0, 256, (16, 3, 640, 640), dtype=torch.uint8)
    targets = torch.tensor([[i, i % 20, 0.1, 0.2, 0.5, 0.6] for i in range(16)])
    path = str(tmp_path / "train_batch.jpg")
    writeBatchPreview(images, targets, ["A{}".format(i) for i in range(1, 21)], path)
    preview = cv2.imread(path)
    assert preview is not None and max(preview.shape[:2]) <= 1920


def test_empty_targets(tmp_path):
    path = str(tmp_path / "empty.png")
    writeBatchPreview(torch.zeros((3, 3, 32, 64), dtype=torch.uint8), torch.zeros((0, 6)), CLASSES, path)
    assert cv2.imread(path).shape == (2 * (32 + GAP) - GAP, 2 * (64 + GAP) - GAP, 3)


@pytest.mark.parametrize("previews", [0, 1, 2])
def test_trainer_writes_the_batch_preview(tmp_path, previews):
    mcfg = tinyConfig(tmp_path, maxEpoch=1, previewBatches=previews)  # one batch an epoch
    Trainer(mcfg, YoloModel(mcfg), DetectionLoss).run()
    written = sorted(f for f in os.listdir(mcfg.runDir()) if f.startswith("train_batch"))
    assert written == (["train_batch.jpg"] if previews else [])
    assert cv2.imread(os.path.join(mcfg.runDir(), written[0])) is not None if written else True
