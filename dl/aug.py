"""Training augmentation on uint8 BGR numpy images, with the boxes transformed alongside.

One sample goes through
  1. one affine map into the network-input canvas (a single cv2.warpAffine): the letterbox scale times a
     random scale (augScale range) and an aspect jitter (augAspect), a random placement (the image may be
     smaller than the canvas, gray padding, or larger, cropped) and an optional horizontal flip (augFlip);
  2. HSV jitter (augHsv gains) through one 3-channel cv2.LUT between two colour conversions, applied before or
     after the warp, whichever image is smaller (a per-pixel colour map commutes with the geometry);
  3. boxes clipped to the canvas; boxes narrower or lower than minBoxSize pixels, or keeping less than
     MIN_VISIBLE_FRACTION of their transformed area inside the canvas, are dropped.
With mosaic (mcfg.mosaic, a probability per sample), step 1 first puts four images (the sample and three random
partners) around a random centre of a (2h, 2w) canvas, each letterbox-scaled, and the affine then takes a
network-input-sized window near the canvas centre (scaled by the same random gain): objects keep their single-image
size on average while one sample shows four scenes.
Every function takes plain numbers, numpy arrays and a numpy Generator, so tests can call them with literals.
"""
import math

import cv2
import numpy as np

from misc.img import PAD_COLOR

MIN_VISIBLE_FRACTION = 0.2  # a clipped box is kept when at least this fraction of its area stays in the canvas
MOSAIC_CENTER_JITTER = 0.1  # mosaic: the window's centre moves at most this fraction of the input size off the canvas centre


def randomAffine(rng, origShape, outShape, scaleRange=(1.0, 1.0), aspect=0.0, flipProb=0.0, baseScale=None,
                 centerJitter=None):
    """Draw the random geometry of one sample.

    origShape (h0, w0) and outShape (h, w) in pixels. Returns (sx, sy, tx, ty, flip): the continuous map
    from original-image pixels to canvas pixels is  x' = sx * x + tx,  y' = sy * y + ty,  then x' -> w - x'
    when flip. sx, sy are the letterbox scale times a random scale in scaleRange, with sx / sy = r, where
    r is drawn in [1 - aspect, 1 + aspect] (area kept); tx, ty place the scaled image uniformly at random so
    that it covers as much of the canvas as it can; with scaleRange = (1, 1) and aspect = 0 it is the letterbox
    (misc/img.py) placement. baseScale replaces the letterbox scale (a mosaic canvas is already at network scale);
    centerJitter places the scaled image's centre at the canvas centre moved by U(-j, j) x (w, h) instead.
    """
    h0, w0 = origShape
    h, w = outShape
    scaleRange = (float(scaleRange[0]), float(scaleRange[1]))
    letterboxScale = min(h / h0, w / w0) if baseScale is None else baseScale
    gain = rng.uniform(scaleRange[0], scaleRange[1]) if scaleRange[1] > scaleRange[0] else float(scaleRange[0])
    ratio = rng.uniform(1.0 - aspect, 1.0 + aspect) if aspect > 0 else 1.0
    sx = letterboxScale * gain * math.sqrt(ratio)
    sy = letterboxScale * gain / math.sqrt(ratio)
    freeX, freeY = w - w0 * sx, h - h0 * sy  # room left (> 0) or overhang (< 0) of the scaled image
    if centerJitter is not None:
        tx = freeX / 2 + rng.uniform(-centerJitter, centerJitter) * w
        ty = freeY / 2 + rng.uniform(-centerJitter, centerJitter) * h
    elif scaleRange == (1.0, 1.0) and aspect == 0:  # no jitter: exactly the letterbox placement (integer padding)
        tx, ty = float((w - round(w0 * sx)) // 2), float((h - round(h0 * sy)) // 2)
    else:
        tx = rng.uniform(min(0.0, freeX), max(0.0, freeX))
        ty = rng.uniform(min(0.0, freeY), max(0.0, freeY))
    flip = bool(flipProb > 0 and rng.random() < flipProb)
    return sx, sy, tx, ty, flip


def affineMatrix(sx, sy, tx, ty, flip, outWidth):
    """(2, 3) float64 cv2.warpAffine matrix of the continuous map of randomAffine.

    cv2 addresses pixel centres by integer indexes while boxes use continuous coordinates (centre of pixel i at
    i + 0.5); a continuous map x' = a x + b is x'_index = a x_index + b + (a - 1) / 2 on indexes.
    """
    a, b = (-sx, outWidth - tx) if flip else (sx, tx)
    return np.array([[a, 0.0, b + (a - 1.0) / 2.0],
                     [0.0, sy, ty + (sy - 1.0) / 2.0]], dtype=np.float64)


def transformBoxes(boxesXyxy, sx, sy, tx, ty, flip, outWidth):
    """(N, 4) original-image pixels -> (N, 4) float32 canvas pixels, unclipped, x0 <= x1 kept after a flip."""
    boxes = np.asarray(boxesXyxy, dtype=np.float32).reshape(-1, 4)
    x0, y0, x1, y1 = boxes[:, 0] * sx + tx, boxes[:, 1] * sy + ty, boxes[:, 2] * sx + tx, boxes[:, 3] * sy + ty
    if flip:
        x0, x1 = outWidth - x1, outWidth - x0
    return np.stack((x0, y0, x1, y1), axis=1).astype(np.float32)


def clipAndFilterBoxes(boxesXyxy, outShape, minBoxSize, minVisibleFraction=MIN_VISIBLE_FRACTION):
    """Clip (N, 4) canvas-pixel boxes to the canvas (h, w) and choose the ones to keep.

    Returns (clipped (K, 4) float32, keep (N,) bool): a box is kept when its clipped width and height are both
    >= minBoxSize pixels and its clipped area is >= minVisibleFraction of its unclipped area.
    """
    h, w = outShape
    boxes = np.asarray(boxesXyxy, dtype=np.float32).reshape(-1, 4)
    clipped = boxes.copy()
    np.clip(clipped[:, 0::2], 0, w, out=clipped[:, 0::2])
    np.clip(clipped[:, 1::2], 0, h, out=clipped[:, 1::2])
    widths, heights = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = (widths >= minBoxSize) & (heights >= minBoxSize) & (widths * heights >= minVisibleFraction * area)
    return clipped[keep], keep


def hsvJitter(imageBgr, rng, gains):
    """Random hue shift and saturation/value gains on a uint8 (H, W, 3) BGR image; returns a new image.

    gains (hueGain, saturationGain, valueGain): the hue moves by U(-1, 1) * hueGain of a full turn; saturation
    and value are multiplied by 1 + U(-1, 1) * gain, clipped to [0, 255].
    """
    if not any(gains):
        return imageBgr
    r = rng.uniform(-1.0, 1.0, 3) * np.asarray(gains, dtype=np.float64)
    x = np.arange(256, dtype=np.float64)
    lut = np.stack((np.mod(x + r[0] * 180.0, 180.0),  # OpenCV 8-bit hue is 0..179
                    np.clip(x * (1.0 + r[1]), 0, 255),
                    np.clip(x * (1.0 + r[2]), 0, 255)), axis=1).astype(np.uint8).reshape(1, 256, 3)
    hsv = cv2.LUT(cv2.cvtColor(imageBgr, cv2.COLOR_BGR2HSV), lut)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)


def augmentSample(imageBgr, boxesXyxy, outShape, rng, scaleRange=(1.0, 1.0), aspect=0.0, flipProb=0.0,
                  hsvGains=(0.0, 0.0, 0.0), minBoxSize=2.0, color=PAD_COLOR, baseScale=None, centerJitter=None):
    """Augment one training sample into the network-input canvas.

    imageBgr: uint8 (H0, W0, 3); boxesXyxy: (N, 4) original-image pixels; outShape: (h, w); rng: np.random.Generator.
    Returns image uint8 (h, w, 3) BGR, boxesXyxy (K, 4) float32 in network-input pixels (clipped),
    keep (N,) bool telling which input boxes survived (so the caller can keep their class ids).
    baseScale, centerJitter: see randomAffine (a mosaic canvas passes 1.0 and MOSAIC_CENTER_JITTER).
    """
    h, w = outShape
    sx, sy, tx, ty, flip = randomAffine(rng, imageBgr.shape[:2], outShape, scaleRange, aspect, flipProb, baseScale,
                                        centerJitter)
    matrix = affineMatrix(sx, sy, tx, ty, flip, w)
    hsvBeforeWarp = imageBgr.shape[0] * imageBgr.shape[1] < h * w  # colour work on the smaller of the two images
    if hsvBeforeWarp:
        imageBgr = hsvJitter(imageBgr, rng, hsvGains)
    image = cv2.warpAffine(imageBgr, matrix, (w, h), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=(color, color, color))
    if not hsvBeforeWarp:
        image = hsvJitter(image, rng, hsvGains)
    boxes, keep = clipAndFilterBoxes(transformBoxes(boxesXyxy, sx, sy, tx, ty, flip, w), outShape, minBoxSize)
    return image, boxes, keep


def mosaicCanvas(imagesBgr, boxesList, outShape, rng, color=PAD_COLOR):
    """Four images around a random centre of a (2h, 2w) canvas, each resized by its letterbox scale into (h, w).

    imagesBgr: 4 uint8 (Hi, Wi, 3); boxesList: 4 (ni, 4) original-image pixels; outShape (h, w); rng: np.random.Generator.
    Image k touches the centre (cx, cy) with its bottom-right (k=0), bottom-left (1), top-right (2) or top-left (3)
    corner; what falls outside the canvas is cut. Returns canvas uint8 (2h, 2w, 3), boxes (K, 4) float32 in canvas
    pixels (clipped to their image's piece) and keeps: 4 (ni,) bool arrays telling which boxes of each image are in
    boxes (in order); a box keeps less than MIN_VISIBLE_FRACTION of its area in its piece is dropped.
    """
    h, w = outShape
    cx, cy = int(rng.uniform(0.5 * w, 1.5 * w)), int(rng.uniform(0.5 * h, 1.5 * h))
    canvas = np.full((2 * h, 2 * w, 3), color, dtype=np.uint8)
    allBoxes, keeps = [], []
    for k, (imageBgr, boxesXyxy) in enumerate(zip(imagesBgr, boxesList)):
        h0, w0 = imageBgr.shape[:2]
        scale = min(h / h0, w / w0)
        newW, newH = max(1, min(w, int(round(w0 * scale)))), max(1, min(h, int(round(h0 * scale))))
        interpolation = cv2.INTER_AREA if scale < 0.5 else cv2.INTER_LINEAR
        resized = cv2.resize(imageBgr, (newW, newH), interpolation=interpolation) if (newW, newH) != (w0, h0) else imageBgr
        x0, y0 = (cx - newW if k in (0, 2) else cx), (cy - newH if k in (0, 1) else cy)  # piece's top-left corner
        px0, py0, px1, py1 = max(x0, 0), max(y0, 0), min(x0 + newW, 2 * w), min(y0 + newH, 2 * h)  # piece on canvas
        canvas[py0:py1, px0:px1] = resized[py0 - y0:py1 - y0, px0 - x0:px1 - x0]
        boxes = transformBoxes(boxesXyxy, newW / w0, newH / h0, x0, y0, False, 2 * w)
        clipped = boxes.copy()
        np.clip(clipped[:, 0::2], px0, px1, out=clipped[:, 0::2])
        np.clip(clipped[:, 1::2], py0, py1, out=clipped[:, 1::2])
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        clippedArea = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
        keep = (clippedArea > 0) & (clippedArea >= MIN_VISIBLE_FRACTION * area)
        allBoxes.append(clipped[keep])
        keeps.append(keep)
    return canvas, np.concatenate(allBoxes).astype(np.float32).reshape(-1, 4), keeps


def augmentFromConfig(mcfg, imageBgr, boxesXyxy, rng, mosaic=False):
    """augmentSample with the augmentation knobs of mcfg (augScale, augAspect, augFlip, augHsv, minBoxSize, inputShape).
    mosaic: imageBgr is a mosaicCanvas (already at network scale): the window is taken near its centre."""
    return augmentSample(imageBgr, boxesXyxy, tuple(mcfg.inputShape), rng, scaleRange=tuple(mcfg.augScale),
                         aspect=mcfg.augAspect, flipProb=mcfg.augFlip, hsvGains=tuple(mcfg.augHsv),
                         minBoxSize=mcfg.minBoxSize, baseScale=1.0 if mosaic else None,
                         centerJitter=MOSAIC_CENTER_JITTER if mosaic else None)
