"""Decode head outputs into boxes and apply class-aware NMS."""
import torch

from misc.bbox import distToBox, dflDecode, makeAnchors

MAX_NMS_CANDIDATES = 30000  # (anchor, class) pairs kept before NMS, highest scores first


def decodeOutputs(levels, strides, regMax):
    """[(B, 4*regMax + nc, Hi, Wi)] -> boxesXyxy (B, A, 4) in network-input pixels, scores (B, A, nc) sigmoid."""
    B = levels[0].shape[0]
    flat = torch.cat([x.view(B, x.shape[1], -1) for x in levels], 2)  # (B, 4*regMax + nc, A)
    predDist, logits = flat.split((4 * regMax, flat.shape[1] - 4 * regMax), 1)
    points, strideTensor = makeAnchors([x.shape[2:] for x in levels], strides, flat.device, flat.dtype)
    proj = torch.arange(regMax, device=flat.device, dtype=flat.dtype)
    dist = dflDecode(predDist.permute(0, 2, 1).contiguous(), proj)  # (B, A, 4) stride units
    return distToBox(dist, points) * strideTensor, logits.permute(0, 2, 1).sigmoid()


def nonMaxSuppression(boxesXyxy, scores, scoreThreshold=0.001, iouThreshold=0.7, maxDetections=300):
    """Class-aware NMS over every (anchor, class) pair above scoreThreshold (an anchor may give several classes).

    boxesXyxy (B, A, 4), scores (B, A, nc) -> list of B tensors (n, 6): x0, y0, x1, y1, score, classIndex,
    sorted by descending score, n <= maxDetections.
    """
    from torchvision.ops import batched_nms  # here, not at start-up: torchvision's import takes seconds
    results = []
    for boxes, score in zip(boxesXyxy, scores):
        anchor, cls = (score > scoreThreshold).nonzero(as_tuple=True)
        value = score[anchor, cls]
        if value.numel() > MAX_NMS_CANDIDATES:
            value, order = value.topk(MAX_NMS_CANDIDATES)
            anchor, cls = anchor[order], cls[order]
        keep = batched_nms(boxes[anchor].float(), value.float(), cls, iouThreshold)[:maxDetections]
        results.append(torch.cat([boxes[anchor[keep]], value[keep, None], cls[keep, None].to(boxes.dtype)], 1))
    return results


class Predictor(object):
    """Runs a model on a batch and returns per-image detections in network-input pixels."""

    def __init__(self, mcfg, model):
        self.model = model
        self.scoreThreshold, self.nmsIou, self.maxDetections = mcfg.scoreThreshold, mcfg.nmsIou, mcfg.maxDetections

    @torch.no_grad()
    def __call__(self, images):
        """images (B, 3, H, W) float in [0, 1] on the model's device -> list of B (n, 6) tensors (see nonMaxSuppression)."""
        levels = self.model(images)
        boxes, scores = decodeOutputs(levels, self.model.strides, self.model.regMax)
        return nonMaxSuppression(boxes, scores, self.scoreThreshold, self.nmsIou, self.maxDetections)
