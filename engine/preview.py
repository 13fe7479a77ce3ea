"""Training-batch preview: the first augmented batch as the network sees it, boxes and class names drawn, in one image.

The cheapest check of a data set and its augmentation before hours of training: a box off its object, a class name
on the wrong object or a colour swap shows at a glance.
"""
import math
import os

import cv2
import numpy as np

from misc.files import atomicWrite

MAX_SIDE = 1920  # pixels; a larger grid is scaled down (16 images of 640 px: 2560 -> 1920)
GAP = 2  # pixels between tiles
BOX_COLORS = [(75, 25, 230), (75, 180, 60), (216, 99, 67), (49, 130, 245), (180, 30, 145), (244, 212, 66),
              (230, 50, 240), (69, 239, 191), (144, 153, 70), (0, 0, 128)]  # BGR, by class index


def classColor(classIndex):
    return BOX_COLORS[int(classIndex) % len(BOX_COLORS)]


def batchGrid(images, targets, classList, maxSide=MAX_SIDE):
    """Tile a batch into one BGR image and draw its boxes.

    images: uint8 (B, 3, H, W) RGB tensor (the Mars collate format, dl/vocdataset.py); targets: float (N, 6) rows
    (imageIndex, classIndex, x0, y0, x1, y1) with xyxy normalised to the network input; classList: class names.
    Returns uint8 (rows * (h + GAP) - GAP, cols * (w + GAP) - GAP, 3) BGR: cols = ceil(sqrt(B)) tiles a row, each
    H x W scaled (rounded) to h x w so that no side exceeds maxSide. Each box is drawn on the outermost pixels of its
    region in its class colour, its class name above it (inside it when the tile has no room above).
    """
    B, _, H, W = images.shape
    cols = math.ceil(math.sqrt(B))
    rows = math.ceil(B / cols)
    scale = min(1.0, (maxSide - (rows - 1) * GAP) / (rows * H), (maxSide - (cols - 1) * GAP) / (cols * W))
    tileH, tileW = round(H * scale), round(W * scale)
    stepH, stepW = tileH + GAP, tileW + GAP
    grid = np.full((rows * stepH - GAP, cols * stepW - GAP, 3), 255, dtype=np.uint8)
    batch = images.numpy()[:, ::-1].transpose(0, 2, 3, 1)  # (B, H, W, 3) BGR
    for i in range(B):
        tile = batch[i] if scale == 1.0 else cv2.resize(np.ascontiguousarray(batch[i]), (tileW, tileH),
                                                        interpolation=cv2.INTER_AREA)
        top, left = (i // cols) * stepH, (i % cols) * stepW
        grid[top:top + tileH, left:left + tileW] = tile
    rowsOfTargets = np.asarray(targets, dtype=np.float64).reshape(-1, 6)
    for imageIndex, classIndex, x0, y0, x1, y1 in rowsOfTargets:
        top, left = int(imageIndex) // cols * stepH, int(imageIndex) % cols * stepW
        box = (left + round(x0 * tileW), top + round(y0 * tileH), left + round(x1 * tileW) - 1,
               top + round(y1 * tileH) - 1)  # outermost pixels of the box's region
        color = classColor(classIndex)
        cv2.rectangle(grid, box[:2], box[2:], color, 1)
        name = classList[int(classIndex)] if int(classIndex) < len(classList) else str(int(classIndex))
        (textW, textH), base = cv2.getTextSize(name, cv2.FONT_HERSHEY_SIMPLEX, 0.35, 1)
        textTop, textLeft = box[1] - textH - base - 1, box[0]  # above the box
        if textTop < top:  # no room in the tile: inside the box, clear of its edges
            textTop, textLeft = box[1] + 2, box[0] + 2
        cv2.rectangle(grid, (textLeft, textTop), (textLeft + textW, textTop + textH + base), color, -1)
        textColor = (0, 0, 0) if sum(color) > 450 else (255, 255, 255)  # dark text on a light label
        cv2.putText(grid, name, (textLeft, textTop + textH), cv2.FONT_HERSHEY_SIMPLEX, 0.35, textColor, 1, cv2.LINE_AA)
    return grid


def writeBatchPreview(images, targets, classList, path):
    """Write batchGrid(images, targets, classList) to path (.jpg, or .png for exact pixels), atomically.

    images: uint8 (B, 3, H, W) RGB tensor; targets: (N, 6) Mars collate rows (dl/vocdataset.py); classList: names.
    """
    grid = batchGrid(images, targets, classList)
    ext = os.path.splitext(path)[1].lower() or ".jpg"
    ok, encoded = cv2.imencode(ext, grid, [cv2.IMWRITE_JPEG_QUALITY, 90] if ext in (".jpg", ".jpeg") else [])
    assert ok, path
    atomicWrite(path, lambda f: f.write(encoded.tobytes()))
