"""Box utilities shared by the loss, the assigner and the predictor. Boxes are xyxy unless a name says otherwise."""
import math

import torch

IOU_EPS = 1e-7


def makeAnchors(featureShapes, strides, device=None, dtype=torch.float32, offset=0.5):
    """Anchor points at cell centres.

    featureShapes: [(H_i, W_i)] per level; strides: [s_i].
    Returns anchorPoints (A, 2) as (x, y) in stride units of their level, strideTensor (A, 1).
    """
    points, strideRows = [], []
    for (h, w), s in zip(featureShapes, strides):
        sx = torch.arange(w, device=device, dtype=dtype) + offset
        sy = torch.arange(h, device=device, dtype=dtype) + offset
        gy, gx = torch.meshgrid(sy, sx, indexing="ij")
        points.append(torch.stack((gx, gy), -1).view(-1, 2))  # (H*W, 2)
        strideRows.append(torch.full((h * w, 1), float(s), device=device, dtype=dtype))
    return torch.cat(points), torch.cat(strideRows)


def distToBox(distLtrb, anchorPoints):
    """(..., 4) ltrb distances + (..., 2) anchor points -> (..., 4) xyxy boxes, same units."""
    lt, rb = distLtrb.chunk(2, -1)
    return torch.cat((anchorPoints - lt, anchorPoints + rb), -1)


def boxToDist(boxesXyxy, anchorPoints, maxDist):
    """(..., 4) xyxy boxes + (..., 2) anchor points -> (..., 4) ltrb distances clamped to [0, maxDist - 0.01]."""
    x0y0, x1y1 = boxesXyxy.chunk(2, -1)
    return torch.cat((anchorPoints - x0y0, x1y1 - anchorPoints), -1).clamp_(0, maxDist - 0.01)


def dflDecode(predDist, proj):
    """DFL expectation: (..., 4 * regMax) logits, e.g. (B, A, 4 * regMax) -> (..., 4) distances in bins (stride units).

    proj: (regMax,) = [0, 1, ..., regMax-1].
    """
    *lead, C = predDist.shape
    return predDist.reshape(*lead, 4, C // 4).softmax(-1).matmul(proj.type(predDist.dtype))  # (..., 4)


def boxIou(boxes1, boxes2, kind="iou", eps=IOU_EPS):
    """Element-wise IoU of broadcastable (..., 4) xyxy boxes -> (...,).

    kind: "iou", "giou", "diou" or "ciou" (the CIoU aspect term's alpha is not differentiated, as in YOLOv8).
    """
    b1x0, b1y0, b1x1, b1y1 = boxes1.unbind(-1)
    b2x0, b2y0, b2x1, b2y1 = boxes2.unbind(-1)
    w1, h1 = b1x1 - b1x0, b1y1 - b1y0 + eps
    w2, h2 = b2x1 - b2x0, b2y1 - b2y0 + eps
    inter = (torch.minimum(b1x1, b2x1) - torch.maximum(b1x0, b2x0)).clamp(0) * \
            (torch.minimum(b1y1, b2y1) - torch.maximum(b1y0, b2y0)).clamp(0)
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    if kind == "iou":
        return iou
    cw = torch.maximum(b1x1, b2x1) - torch.minimum(b1x0, b2x0)  # enclosing box width
    ch = torch.maximum(b1y1, b2y1) - torch.minimum(b1y0, b2y0)
    if kind == "giou":
        enclosing = cw * ch + eps
        return iou - (enclosing - union) / enclosing
    diag2 = cw.pow(2) + ch.pow(2) + eps
    centre2 = ((b2x0 + b2x1 - b1x0 - b1x1).pow(2) + (b2y0 + b2y1 - b1y0 - b1y1).pow(2)) / 4
    if kind == "diou":
        return iou - centre2 / diag2
    if kind == "ciou":
        v = (4 / math.pi ** 2) * (torch.atan(w2 / h2) - torch.atan(w1 / h1)).pow(2)
        with torch.no_grad():
            alpha = v / (v - iou + (1 + eps))
        return iou - (centre2 / diag2 + v * alpha)
    raise ValueError("unknown IoU kind {!r}".format(kind))


def pairwiseIou(boxes1, boxes2):
    """(N, 4) x (M, 4) xyxy -> (N, M) plain IoU."""
    return boxIou(boxes1[:, None, :], boxes2[None, :, :])
