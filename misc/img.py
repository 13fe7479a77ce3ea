"""Image geometry: letterbox an image into the network input and move boxes between the two spaces.

Coordinates are continuous pixel coordinates: pixel (i, j) covers [j, j+1) x [i, i+1), so a box (x0, y0, x1, y1)
spans x0 <= x < x1. A letterbox maps original-image pixels to network-input pixels as

    xInput = xOriginal * scale + padLeft,   yInput = yOriginal * scale + padTop

with one scale for both axes (aspect ratio kept) and the resized image centred in a gray canvas.
"""
import cv2
import numpy as np
import torch

from misc.errors import MarsError

PAD_COLOR = 114  # gray value of letterbox padding (as YOLOv8)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")  # what OpenCV decodes that Mars looks for
AREA_SHRINK = 0.5  # resize with INTER_AREA (anti-aliased) when shrinking below this scale


def letterboxGeometry(origShape, outShape):
    """(h0, w0), (h, w) -> scale, (newW, newH), (padLeft, padTop): where the resized image sits in the canvas."""
    h0, w0 = origShape
    h, w = outShape
    scale = min(h / h0, w / w0)
    newW, newH = min(w, int(round(w0 * scale))), min(h, int(round(h0 * scale)))
    return scale, (newW, newH), ((w - newW) // 2, (h - newH) // 2)


def letterbox(imageBgr, outShape, color=PAD_COLOR):
    """Resize keeping the aspect ratio and centre in a padded canvas.

    imageBgr: uint8 (H0, W0, 3); outShape: (h, w) network-input pixels.
    Returns image uint8 (h, w, 3), scale (float, input pixels per original pixel), (padLeft, padTop) in pixels.
    """
    h, w = outShape
    scale, (newW, newH), (padLeft, padTop) = letterboxGeometry(imageBgr.shape[:2], outShape)
    if (newW, newH) != (imageBgr.shape[1], imageBgr.shape[0]):
        interpolation = cv2.INTER_AREA if scale < AREA_SHRINK else cv2.INTER_LINEAR
        imageBgr = cv2.resize(imageBgr, (newW, newH), interpolation=interpolation)
    image = cv2.copyMakeBorder(imageBgr, padTop, h - newH - padTop, padLeft, w - newW - padLeft,
                               cv2.BORDER_CONSTANT, value=(color, color, color))
    return image, scale, (padLeft, padTop)


def imreadBgr(path):
    """cv2.imread as uint8 (H, W, 3) BGR (grey, 16-bit and RGBA files converted); MarsError naming the file when it
    cannot be decoded."""
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise MarsError("image {} cannot be decoded (missing, truncated or not an image); replace it, or remove it "
                        "(and its line in the split file)".format(path))
    return image


def networkInput(imageBgr, inputShape):
    """The one path from a decoded image to a network input (evaluation, -predict, -inspect).

    imageBgr: uint8 (H0, W0, 3) BGR as imreadBgr returns it; inputShape: (h, w) network-input pixels.
    Returns image uint8 tensor (3, h, w) RGB (letterboxed; imagesToDevice makes it float in [0, 1]),
    scale (float) and pad (padLeft, padTop) of the letterbox (boxesFromLetterbox maps detections back).
    """
    image, scale, pad = letterbox(imageBgr, inputShape)
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)[::-1])), scale, pad  # BGR -> RGB, (3, h, w)


def imagesToDevice(images, device, channelsLast=False):
    """uint8 (B, 3, H, W) as networkInput and the loader give them -> float (B, 3, H, W) in [0, 1] on device (the
    network's input). (Targets stay where the loader put them: the loss pads them on the host and copies them.)"""
    images = images.to(device, non_blocking=True)
    if channelsLast:
        images = images.contiguous(memory_format=torch.channels_last)
    return images.float().div_(255)


def _offset(boxesXyxy, pad):
    """(padLeft, padTop, padLeft, padTop) as an array/tensor matching boxesXyxy's type, dtype and device."""
    values = [pad[0], pad[1], pad[0], pad[1]]
    if isinstance(boxesXyxy, torch.Tensor):
        return boxesXyxy.new_tensor(values)
    return np.asarray(values, dtype=boxesXyxy.dtype)


def boxesToLetterbox(boxesXyxy, scale, pad):
    """Original-image pixels -> network-input pixels. boxesXyxy: (N, 4) float numpy array or tensor; returns a new one."""
    return boxesXyxy * scale + _offset(boxesXyxy, pad)


def boxesFromLetterbox(boxesXyxy, scale, pad, origShape):
    """Network-input pixels -> original-image pixels, clipped to the original image (h0, w0).

    boxesXyxy: (N, 4) float numpy array or tensor; returns a new one of the same kind.
    """
    h0, w0 = origShape
    boxes = (boxesXyxy - _offset(boxesXyxy, pad)) / scale
    if isinstance(boxes, torch.Tensor):
        boxes[..., 0::2] = boxes[..., 0::2].clamp(0, w0)
        boxes[..., 1::2] = boxes[..., 1::2].clamp(0, h0)
    else:
        np.clip(boxes[..., 0::2], 0, w0, out=boxes[..., 0::2])
        np.clip(boxes[..., 1::2], 0, h0, out=boxes[..., 1::2])
    return boxes
