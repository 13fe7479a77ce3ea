"""Augmentation (dl/aug.py, and VocDataset's training samples) and letterbox geometry (misc/img.py): boxes must follow
the pixels, to a fraction of a pixel, through scale, aspect, placement, flip, HSV and mosaic; a mosaic data set keeps
only the selected classes and is reproducible."""
import os

import cv2
import numpy as np
import pytest
import torch

from dl.aug import augmentFromConfig, augmentSample, clipAndFilterBoxes, hsvJitter, mosaicCanvas
from dl.vocdataset import VocDataset
from misc.img import PAD_COLOR, boxesFromLetterbox, boxesToLetterbox, letterbox
from tests.helpers import OBJ, XML, datasetConfig, makeConfig, writeImage

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
def test_boxes_follow_colored_objects(outShape):
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


def test_no_augmentation_is_letterbox():
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


def test_clip_and_filter_boxes():
    boxes = np.array([[-50, 10, -10, 30],  # fully outside: dropped
                      [-36, 10, 4, 30],  # 10% inside: dropped
                      [-20, 10, 20, 30],  # 50% inside: kept, clipped
                      [50, 50, 51, 70],  # 1 pixel wide: dropped
                      [90, 90, 120, 130]],  # corner: 10 x 10 of 30 x 40 inside (8%): dropped
                     np.float32)
    clipped, keep = clipAndFilterBoxes(boxes, (100, 100), minBoxSize=2.0)
    assert keep.tolist() == [False, False, True, False, False]
    assert clipped.tolist() == [[0, 10, 20, 30]]


def test_objects_pushed_outside_are_dropped():
    image, boxes = coloredRectangles()
    for seed in range(10):  # scaled 3x, most of the image falls outside the canvas
        out, outBoxes, keep = augmentSample(image, boxes, (96, 96), np.random.default_rng(seed), scaleRange=(3, 3))
        assert len(outBoxes) < 4
        for box, color in zip(outBoxes, np.array(COLORS)[keep]):
            assert np.abs(meanColorInside(out, box) - color).max() < 20


def test_hsv_jitter():
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


def test_letterbox_shapes_and_round_trip():
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


def test_letterbox_pixels_match_boxes():
    image, boxes = coloredRectangles()
    out, scale, pad = letterbox(image, (256, 256))
    for box, color in zip(boxesToLetterbox(boxes, scale, pad), COLORS):
        assert np.abs(meanColorInside(out, box) - color).max() < 20


# --- Geometry to the pixel -------------------------------------------------------------------------------------------
# Solid rectangles, each with one strong colour channel, on the padding's grey go through the augmentation; for every
# returned box its painted object's extent is measured in the augmented image (measuredEdges) and compared with the box.

OBJECT_HIGH, OBJECT_LOW = 180, 76  # object colour: one BGR channel high, the other two low, on grey (paintedScene)
EDGE_TOLERANCE = 0.4  # pixels; the measurement errs by up to 0.32 (measuredEdges), so a box 1 pixel off shows >= 0.68
BIAS_TOLERANCE = 0.05  # pixels; mean signed edge error per side, over the edges away from the image border
HSV_GAINS = (0.015, 0.7, 0.4)  # the mcfg.augHsv defaults


def paintedScene(shape, seed, grid, touchBorders=False):
    """PAD_COLOR grey uint8 BGR image (h, w, 3) with one solid rectangle per cell of a (rows, cols) grid over the image,
    of colour OBJECT_HIGH in BGR channel (row + col) % 3 and OBJECT_LOW in the other two (a colour repeats only in
    diagonal neighbours). Background and padding are the same grey, and the HSV jitter neither clips the object's value
    (180 x 1.4 < 255) nor its saturation (104 / 180 x 1.7 < 1), so an edge pixel keeps its colour's hue and its
    amount (primaryAmount) stays linear in the object's share of the pixel, with or without the jitter. Edges are
    whole pixels; a rectangle spans 40-70% of its cell, at least 15% of the cell from the cell's sides, except that with
    touchBorders the outer rectangles reach the image border. Returns image, boxesXyxy (n, 4) float32, channels (n,)."""
    h, w = shape
    rows, cols = grid
    rng = np.random.default_rng(seed)
    image = np.full((h, w, 3), PAD_COLOR, np.uint8)
    boxes, channels = [], []
    for r in range(rows):
        for c in range(cols):
            cx0, cx1, cy0, cy1 = c * w / cols, (c + 1) * w / cols, r * h / rows, (r + 1) * h / rows
            bw, bh = rng.uniform(0.4, 0.7) * (cx1 - cx0), rng.uniform(0.4, 0.7) * (cy1 - cy0)
            x0 = int(round(rng.uniform(cx0 + 0.15 * (cx1 - cx0), cx1 - 0.15 * (cx1 - cx0) - bw)))
            y0 = int(round(rng.uniform(cy0 + 0.15 * (cy1 - cy0), cy1 - 0.15 * (cy1 - cy0) - bh)))
            x1, y1 = x0 + int(round(bw)), y0 + int(round(bh))
            if touchBorders:
                x0, y0 = (0 if c == 0 else x0), (0 if r == 0 else y0)
                x1, y1 = (w if c == cols - 1 else x1), (h if r == rows - 1 else y1)
            image[y0:y1, x0:x1] = OBJECT_LOW
            image[y0:y1, x0:x1, (r + c) % 3] = OBJECT_HIGH
            boxes.append((x0, y0, x1, y1))
            channels.append((r + c) % 3)
    return image, np.array(boxes, np.float32), np.array(channels)


def primaryAmount(image, channel):
    """Per pixel of a uint8 (h, w, 3) image: channel minus the larger of the other two channels (int32 (h, w)). Zero
    on grey, negative on the objects of the other channels, linear in the object's share of a pixel that mixes it with
    grey; the HSV jitter multiplies it by the saturation and value gains (paintedScene)."""
    image = image.astype(np.int32)
    others = [k for k in range(3) if k != channel]
    return image[..., channel] - np.maximum(image[..., others[0]], image[..., others[1]])


def measuredEdges(image, channel, box, margin=3):
    """Edges (x0, y0, x1, y1) in pixels of the object of channel `channel` near `box`, measured from its coverage.

    In the window box +- margin pixels (clipped to the image), the column sums of primaryAmount (negatives set to 0)
    over the median sum of the object's full columns (those at >= 90% of the largest) give the fraction of each column
    the object covers: the object's height cancels, the axis-aligned warp being separable. With M0 and M1 the first
    and the last full column, x0 = M0 + 1 - sum(fraction[:M0 + 1]) and x1 = M1 + sum(fraction[M1:]); likewise for rows.
    Only the edge columns enter the sums, so a colour that varies by a unit inside the object (cv2's vectorised and
    scalar HSV conversion may round a pixel differently) moves an edge by a few hundredths at most. This is exact for
    area-averaged pixels (cv2 INTER_AREA) and within a few hundredths of a pixel for a bilinear upscale away from the
    image border. Two limits of the pixel samples, not of the augmentation, remain: a bilinear downscale by s < 1
    leaves an edge uncertain by up to (1 - s) / 2 (0.25 at s = 0.5, the smallest scale the tests use), and at the
    image border an upscaled, hence blurred, edge loses the part of its blur beyond the border (up to 0.26 after an
    upscale by 2.3, 0.32 after a mosaic window's upscale by 1.5 of an INTER_AREA piece). Over 1000 seeds of each test
    below the worst errors are 0.25 away from the image border and 0.32 at it (0.25 over the seeds they use). The
    margin keeps the object's edges in the window for a box up to 3 pixels off; objects of the same channel are
    further apart (paintedScene)."""
    h, w = image.shape[:2]
    wx0, wy0 = max(0, int(np.floor(box[0])) - margin), max(0, int(np.floor(box[1])) - margin)
    wx1, wy1 = min(w, int(np.ceil(box[2])) + margin), min(h, int(np.ceil(box[3])) + margin)
    amount = np.maximum(primaryAmount(image[wy0:wy1, wx0:wx1], channel), 0)
    assert amount.max() >= 8, "no object of channel {} near box {}".format(channel, box)  # HSV: 104 x 0.3 x 0.6 = 19
    edges = []
    for axis, start in ((0, wx0), (1, wy0)):
        sums = amount.sum(axis=axis).astype(np.float64)
        full = sums >= 0.9 * sums.max()
        fraction = sums / np.median(sums[full])
        m0, m1 = np.flatnonzero(full)[[0, -1]]
        edges.append((start + m0 + 1 - fraction[:m0 + 1].sum(), start + m1 + fraction[m1:].sum()))
    (x0, x1), (y0, y1) = edges
    return np.array([x0, y0, x1, y1])


def boxErrors(image, boxes, channels, what, sourceBoxes=None):
    """Assert that every box is within EDGE_TOLERANCE of its object's measured edges. Returns the signed errors
    measured - box (n, 4), a (n, 4) bool mask of the box edges on the image border (clipped ones included) and the
    sample's geometry (n, 3) as seen from sourceBoxes, the boxes before this step (NaN without them): the median width
    and height ratio of the boxes to them, and 1 when the sample is flipped (the order of the boxes' centres from left
    to right reversed), 0 when not."""
    h, w = image.shape[:2]
    errors = np.zeros((len(boxes), 4))
    for i, (box, channel) in enumerate(zip(boxes, channels)):
        errors[i] = measuredEdges(image, channel, box) - box
        assert np.abs(errors[i]).max() <= EDGE_TOLERANCE, (what, box.tolist(), errors[i].round(3).tolist())
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    onBorder = np.stack((boxes[:, 0] <= 0, boxes[:, 1] <= 0, boxes[:, 2] >= w, boxes[:, 3] >= h), axis=1)
    geometry = np.full((len(boxes), 3), np.nan)
    if sourceBoxes is not None and len(boxes) > 1:
        sourceBoxes = np.asarray(sourceBoxes, np.float64).reshape(-1, 4)
        geometry[:, :2] = np.median((boxes[:, 2:] - boxes[:, :2]) / (sourceBoxes[:, 2:] - sourceBoxes[:, :2]), axis=0)
        covariance = np.cov(sourceBoxes[:, 0] + sourceBoxes[:, 2], boxes[:, 0] + boxes[:, 2])[0, 1]
        geometry[:, 2] = np.nan if covariance == 0 else float(covariance < 0)
    return errors, onBorder, geometry


def assertNoBias(records, what):
    """records: boxErrors results. The mean signed error of each side (x0, y0, x1, y1) over its edges away from the
    image border is within BIAS_TOLERANCE, over all samples and, where at least 20 such edges tell, over the
    downscaled (< 0.95) and the upscaled (> 1.05) samples and, for x0 and x1, over the flipped and the unflipped ones:
    the measurement's own errors average out, while a systematic shift of a fraction of a pixel does not, nor one that
    grows with the scale (a missing half-pixel term: (s - 1) / 2) or changes sign with the flip."""
    errors, onBorder, geometry = (np.concatenate(r) for r in zip(*records))
    for side in range(4):
        inner, s, flipped = ~onBorder[:, side], geometry[:, side % 2], geometry[:, 2]
        assert inner.sum() >= 20, (what, side, inner.sum())
        groups = [inner, inner & (s < 0.95), inner & (s > 1.05)]
        if side % 2 == 0:
            groups += [inner & (flipped == 1), inner & (flipped == 0)]
        for group in groups:
            if group.sum() >= 20:
                bias = errors[group, side].mean()
                assert abs(bias) <= BIAS_TOLERANCE, (what, side, group.sum(), bias)


PLAIN_CASES = {  # name: (source shape, grid, canvas shape, scaleRange, aspect); the warp's scale s = letterbox x gain
    #               x aspect factor stays >= 0.5 (see measuredEdges)
    "identity": ((96, 128), (2, 3), (96, 128), (1.0, 1.0), 0.0),  # scale 1, no offset: flip only, pixel-exact
    "mixed": ((96, 128), (2, 3), (96, 128), (0.6, 1.4), 0.2),  # scale 0.54-1.57 (the mcfg defaults)
    "upscale": ((48, 64), (2, 2), (96, 128), (0.55, 1.05), 0.2),  # letterbox 2, scale 0.98-2.3
    "downscale": ((192, 256), (3, 4), (96, 128), (1.1, 1.8), 0.2),  # letterbox 0.5, scale 0.5-0.99 (cropped)
    "wide": ((120, 100), (3, 2), (64, 160), (1.05, 2.5), 0.2),  # letterbox 0.53, scale 0.5-1.46, another aspect
}


@pytest.mark.parametrize("case", sorted(PLAIN_CASES))
def test_augment_sample_boxes_match_painted_objects(case):
    """augmentSample (random scale, aspect, placement, flip and the HSV jitter, before the warp in "upscale", after it
    in the others): over 100 seeds, every returned box is within EDGE_TOLERANCE pixels of the measured extent of its
    painted object, clipped edges included (objects that reach the source image's border in half the scenes, objects
    cut by the canvas), with no mean bias."""
    sourceShape, grid, outShape, scaleRange, aspect = PLAIN_CASES[case]
    scenes = [paintedScene(sourceShape, seed, grid, touchBorders=seed % 2 == 1) for seed in range(4)]
    records = []
    for seed in range(100):
        image, boxes, channels = scenes[seed % len(scenes)]
        out, outBoxes, keep = augmentSample(image, boxes, outShape, np.random.default_rng(seed), scaleRange=scaleRange,
                                            aspect=aspect, flipProb=0.5, hsvGains=HSV_GAINS)
        records.append(boxErrors(out, outBoxes, channels[keep], (case, seed), boxes[keep]))
    assert sum(len(r[0]) for r in records) >= 100 * len(scenes[0][1]) // 2
    assert sum(len(r[2]) > 0 and r[2][0, 2] == 1 for r in records) >= 20  # flipped samples were tested
    if scaleRange[1] * min(outShape[0] / sourceShape[0], outShape[1] / sourceShape[1]) > 1.1:
        assert sum(r[1].sum() for r in records) >= 20  # objects cut by the canvas were tested
    assertNoBias(records, case)


# (shape, grid) of the mosaic pieces; their letterbox scales into a (96, 128) input: 1 (no resize), 1.14 and 1.12
# (linear upscale; the second one rounds to 78 x 96 pixels, 1.114 x 1.116), 0.8 (linear downscale), 0.4 (INTER_AREA)
MOSAIC_PIECES = (((96, 128), (2, 3)), ((84, 112), (2, 2)), ((86, 70), (2, 2)), ((120, 150), (2, 3)),
                 ((240, 300), (3, 3)))


def augmentationConfig(**fields):
    """A ModelConfig with a (96, 128) input and the augmentation knobs at their defaults, written out here."""
    return makeConfig(nc=3, inputShape=(96, 128), augment=True, augScale=(0.6, 1.4), augAspect=0.2, augFlip=0.5,
                      augHsv=HSV_GAINS, minBoxSize=2.0, **fields)


def test_mosaic_boxes_match_painted_objects():
    """mosaicCanvas, then the mosaic window's affine (augmentFromConfig with mosaic=True), as in training: over 100
    seeds of four of five pieces (no resize, linear upscale and downscale, INTER_AREA), every box of the (2h, 2w)
    canvas is within EDGE_TOLERANCE pixels of the measured extent of its object, pieces cut by the canvas border
    included (a cut box ends where the visible object ends), and so is every box of the window, with no mean bias."""
    mcfg = augmentationConfig()
    outShape = tuple(mcfg.inputShape)
    scenes = [paintedScene(shape, seed, grid) for seed, (shape, grid) in enumerate(MOSAIC_PIECES)]
    canvasRecords, windowRecords = [], []
    for seed in range(100):
        rng = np.random.default_rng(seed)
        pieces = [scenes[i] for i in rng.permutation(len(scenes))[:4]]
        canvas, boxes, keeps = mosaicCanvas([p[0] for p in pieces], [p[1] for p in pieces], outShape, rng)
        channels = np.concatenate([p[2][k] for p, k in zip(pieces, keeps)])
        canvasRecords.append(boxErrors(canvas, boxes, channels, ("canvas", seed)))
        out, outBoxes, keep = augmentFromConfig(mcfg, canvas, boxes, rng, mosaic=True)
        windowRecords.append(boxErrors(out, outBoxes, channels[keep], ("window", seed), boxes[keep]))
    for records in (canvasRecords, windowRecords):
        assert sum(r[1].sum() for r in records) >= 20  # boxes cut by the canvas (pieces) and by the window tested
    assert sum(len(r[0]) for r in windowRecords) >= 500
    assertNoBias(canvasRecords, "canvas")
    assertNoBias(windowRecords, "window")


# (shape, grid) of the data set's images; their letterbox scales into a (96, 128) input: 1, 1.12, 0.91 and 1.14
DATASET_IMAGES = (((96, 128), (2, 3)), ((86, 105), (2, 2)), ((104, 140), (2, 3)), ((84, 112), (2, 2)))


def writePaintedVocSet(root, classList):
    """DATASET_IMAGES as paintedScene PNGs (lossless) with their VOC files under root, class k painted in BGR channel k,
    and a "train" split of all of them; returns (imageDir, annotationDir, subsetMap)."""
    imageDir, annotationDir = os.path.join(root, "images"), os.path.join(root, "annotations")
    os.makedirs(imageDir)
    os.makedirs(annotationDir)
    stems = []
    for seed, (shape, grid) in enumerate(DATASET_IMAGES):
        image, boxes, channels = paintedScene(shape, seed, grid)
        stem = "s{}".format(seed)
        cv2.imwrite(os.path.join(imageDir, stem + ".png"), image)
        objects = "\n".join(OBJ.format(c=classList[k], x0=int(x0), y0=int(y0), x1=int(x1), y1=int(y1))
                            for (x0, y0, x1, y1), k in zip(boxes, channels))
        with open(os.path.join(annotationDir, stem + ".xml"), "w") as f:
            f.write(XML.format(name=stem + ".png", w=shape[1], h=shape[0], objects=objects))
        stems.append(stem)
    with open(os.path.join(root, "train.txt"), "w") as f:
        f.write("\n".join(stems) + "\n")
    return imageDir, annotationDir, {"train": os.path.join(root, "train.txt")}


@pytest.mark.parametrize("mosaic", [0.0, 1.0], ids=["single", "mosaic"])
def test_voc_dataset_training_boxes_match_painted_objects(tmp_path, mosaic):
    """VocDataset(mcfg, "train", train=True) end to end, mosaic off and always on: PNGs read from disk, the
    augmentation, the BGR -> RGB tensor. Over 48 samples, every label box (class, x0, y0, x1, y1 in network pixels) is
    within EDGE_TOLERANCE pixels of the measured extent of its object of the label's class in the returned image,
    boxes cut by the input border included, with no mean bias."""
    classList = ["blue", "green", "red"]  # class k painted in BGR channel k: RGB channel 2 - k in the tensor
    imageDir, annotationDir, subsetMap = writePaintedVocSet(str(tmp_path), classList)
    mcfg = augmentationConfig(imageDir=imageDir, annotationDir=annotationDir, classList=classList, subsetMap=subsetMap,
                              suffix=".png", mosaic=mosaic)
    dataset = VocDataset(mcfg, "train", train=True)
    records = []
    for key in range(48):
        image, labels, _ = dataset[(key % len(dataset), key)]  # (index, key): key seeds the sample's generator
        assert image.shape == (3, 96, 128) and image.dtype == torch.uint8
        labels = labels.numpy()
        records.append(boxErrors(image.permute(1, 2, 0).numpy(), labels[:, 1:], 2 - labels[:, 0].astype(int),
                                 (mosaic, key)))
    assert sum(len(r[0]) for r in records) >= 48 * 3
    assert sum(r[1].sum() for r in records) >= 10  # boxes cut by the input border were tested
    assertNoBias(records, mosaic)


# ---------------------------------------------------------------- mosaic: coloured rectangles, class selection


def test_mosaic_boxes_follow_their_pixels():
    """Four images with coloured rectangles on a 2x canvas, then the window: every kept box sits on its colour and
    the colour is gone just outside it (the ring check of
    test_boxes_follow_colored_objects)."""
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


def test_mosaic_dataset_respects_class_selection_and_is_reproducible(tmp_path):
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
