"""Augmentation (dl/aug.py) and letterbox geometry (misc/img.py): boxes must follow the pixels."""
import numpy as np
import pytest
import torch

from dl.aug import augmentSample, clipAndFilterBoxes, hsvJitter
from misc.img import boxesFromLetterbox, boxesToLetterbox, letterbox

COLORS = ((0, 0, 255), (0, 255, 0), (255, 0, 0), (0, 255, 255))  # BGR: red, green, blue, yellow


def coloredRectangles(shape=(200, 300)):
    """Gray image (h, w, 3) with filled rectangles of COLORS; returns image and boxesXyxy (4, 4) pixel edges."""
    image = np.full(shape + (3,), 60, np.uint8)
    boxes = np.array([[10, 20, 70, 60], [150, 30, 190, 150], [220, 120, 290, 190], [100, 160, 140, 185]], np.float32)
    for (x0, y0, x1, y1), color in zip(boxes.astype(int), COLORS):
        image[y0:y1, x0:x1] = color  # pixels x0..x1-1: the box edges are x0 and x1
    return image, boxes


def meanColorInside(image, boxXyxy, margin=1.5):
    """Mean BGR colour of the pixels well inside a box (margin pixels in from each edge)."""
    x0, y0, x1, y1 = boxXyxy
    xs = slice(int(np.ceil(x0 + margin)), int(np.floor(x1 - margin)))
    ys = slice(int(np.ceil(y0 + margin)), int(np.floor(y1 - margin)))
    return image[ys, xs].reshape(-1, 3).mean(0)


def ringColor(image, boxXyxy, gap=2):
    """Mean BGR colour of the one-pixel ring `gap` pixels outside a box, or None when the ring leaves the image."""
    x0, y0, x1, y1 = int(np.floor(boxXyxy[0])) - gap, int(np.floor(boxXyxy[1])) - gap, \
        int(np.ceil(boxXyxy[2])) + gap, int(np.ceil(boxXyxy[3])) + gap
    if x0 < 0 or y0 < 0 or x1 >= image.shape[1] or y1 >= image.shape[0]:
        return None
    ring = np.concatenate((image[y0, x0:x1 + 1], image[y1, x0:x1 + 1], image[y0:y1 + 1, x0], image[y0:y1 + 1, x1]))
    return ring.astype(np.float64).mean(0)


@pytest.mark.parametrize("outShape", [(160, 160), (128, 192)])
def test_boxesFollowColoredObjects(outShape):
    image, boxes = coloredRectangles()
    numKept = 0
    for seed in range(24):
        rng = np.random.default_rng(seed)
        out, outBoxes, keep = augmentSample(image, boxes, outShape, rng, scaleRange=(0.6, 1.6), aspect=0.3,
                                            flipProb=0.5, minBoxSize=2.0)
        assert out.shape == outShape + (3,) and out.dtype == np.uint8
        assert outBoxes.shape == (int(keep.sum()), 4) and outBoxes.dtype == np.float32
        assert (outBoxes[:, 0::2] >= 0).all() and (outBoxes[:, 0::2] <= outShape[1]).all()
        assert (outBoxes[:, 1::2] >= 0).all() and (outBoxes[:, 1::2] <= outShape[0]).all()
        for box, color in zip(outBoxes, np.array(COLORS)[keep]):
            if min(box[2] - box[0], box[3] - box[1]) >= 6:
                assert np.abs(meanColorInside(out, box) - color).max() < 20, (seed, box)
                ring = ringColor(out, box)
                if ring is not None:  # the box is tight: just outside it the colour is gone
                    assert np.abs(ring - color).max() > 100, (seed, box, ring)
                numKept += 1
    assert numKept > 40


def test_noAugmentationIsLetterbox():
    image, boxes = coloredRectangles()
    out, outBoxes, keep = augmentSample(image, boxes, (160, 160), np.random.default_rng(0))
    expected, scale, pad = letterbox(image, (160, 160))
    assert keep.all() and np.allclose(outBoxes, boxesToLetterbox(boxes, scale, pad), atol=1e-4)
    assert np.abs(out.astype(int) - expected.astype(int)).mean() < 2.0


def test_flip():
    image, boxes = coloredRectangles()
    plain, plainBoxes, _ = augmentSample(image, boxes, (160, 160), np.random.default_rng(0))
    flipped, flippedBoxes, keep = augmentSample(image, boxes, (160, 160), np.random.default_rng(0), flipProb=1.0)
    assert keep.all()
    assert np.allclose(flippedBoxes[:, [0, 2]], 160 - plainBoxes[:, [2, 0]], atol=1e-4)
    assert np.allclose(flippedBoxes[:, [1, 3]], plainBoxes[:, [1, 3]])
    assert np.abs(flipped.astype(int) - plain[:, ::-1].astype(int)).max() <= 1
    for box, color in zip(flippedBoxes, COLORS):
        assert np.abs(meanColorInside(flipped, box) - color).max() < 20


def test_clipAndFilterBoxes():
    boxes = np.array([[-50, 10, -10, 30],  # fully outside: dropped
                      [-36, 10, 4, 30],  # 10% inside: dropped
                      [-20, 10, 20, 30],  # 50% inside: kept, clipped
                      [50, 50, 51, 70],  # 1 pixel wide: dropped
                      [90, 90, 120, 130]],  # corner: 10 x 10 of 30 x 40 inside (8%): dropped
                     np.float32)
    clipped, keep = clipAndFilterBoxes(boxes, (100, 100), minBoxSize=2.0)
    assert keep.tolist() == [False, False, True, False, False]
    assert clipped.tolist() == [[0, 10, 20, 30]]


def test_objectsPushedOutsideAreDropped():
    image, boxes = coloredRectangles()
    for seed in range(10):  # scaled 3x, most of the image falls outside the canvas
        out, outBoxes, keep = augmentSample(image, boxes, (96, 96), np.random.default_rng(seed), scaleRange=(3, 3))
        assert len(outBoxes) < 4
        for box, color in zip(outBoxes, np.array(COLORS)[keep]):
            assert np.abs(meanColorInside(out, box) - color).max() < 20


def test_hsvJitter():
    image, _ = coloredRectangles()
    rng = np.random.default_rng(0)
    assert hsvJitter(image, rng, (0, 0, 0)) is image
    out = hsvJitter(image, np.random.default_rng(3), (0.0, 0.0, 0.4))
    assert out.shape == image.shape and out.dtype == np.uint8
    gray = out[0, 0].astype(int)
    assert gray[0] == gray[1] == gray[2] and gray[0] != 60  # gray stays gray, brightness changes
    hueOnly = hsvJitter(image, np.random.default_rng(1), (0.5, 0.0, 0.0))
    assert (hueOnly[0, 0] == image[0, 0]).all()  # no saturation: hue has no effect on gray
    assert not (hueOnly[30, 30] == image[30, 30]).all()  # red moved to another hue


def test_letterboxShapesAndRoundTrip():
    image = np.zeros((123, 457, 3), np.uint8)
    out, scale, pad = letterbox(image, (160, 160))
    assert out.shape == (160, 160, 3) and scale == pytest.approx(160 / 457)
    assert pad[0] == 0 and pad[1] == (160 - round(123 * scale)) // 2
    assert (out[0, 0] == 114).all() and (out[80, 80] == 0).all()
    rng = np.random.default_rng(0)
    xy0 = rng.uniform(0, (457, 123), (20, 2))
    boxes = np.concatenate((xy0, xy0 + rng.uniform(1, 60, (20, 2))), axis=1).astype(np.float32)
    boxes = np.minimum(boxes, [457, 123, 457, 123]).astype(np.float32)
    back = boxesFromLetterbox(boxesToLetterbox(boxes, scale, pad), scale, pad, (123, 457))
    assert np.abs(back - boxes).max() < 1.0
    backTorch = boxesFromLetterbox(boxesToLetterbox(torch.from_numpy(boxes), scale, pad), scale, pad, (123, 457))
    assert isinstance(backTorch, torch.Tensor) and torch.allclose(backTorch, torch.from_numpy(boxes), atol=1e-3)
    outside = boxesFromLetterbox(np.array([[-20, -20, 500, 500]], np.float32), scale, pad, (123, 457))
    assert outside.tolist() == [[0, 0, 457, 123]]


def test_letterboxPixelsMatchBoxes():
    image, boxes = coloredRectangles()
    out, scale, pad = letterbox(image, (256, 256))
    for box, color in zip(boxesToLetterbox(boxes, scale, pad), COLORS):
        assert np.abs(meanColorInside(out, box) - color).max() < 20
