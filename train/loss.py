"""DetectionLoss: CIoU box loss + BCE class loss + DFL, with TaskAlignedAssigner targets (YOLOv8)."""
import contextlib

import torch
import torch.nn.functional as F

from misc.bbox import boxIou, boxToDist, distToBox, dflDecode, makeAnchors
from train.tal import TaskAlignedAssigner


def float32Region(device):
    """A context where autocast is off on device (the loss runs in float32 whatever the caller's autocast); nothing
    for device types autocast does not know (meta)."""
    available = getattr(torch.amp, "is_autocast_available", lambda deviceType: deviceType in ("cpu", "cuda"))  # torch < 2.3
    if not available(device.type):
        return contextlib.nullcontext()
    return torch.autocast(device.type, enabled=False)


def targetsToPadded(targets, batchSize, imageShape):
    """Mars collate targets (N, 6) rows (imageIndex, classIndex, x0, y0, x1, y1), coordinates normalised to the
    input size -> gtLabels (B, M, 1), gtBoxesXyxy (B, M, 4) in input pixels, gtMask (B, M, 1); M = most boxes in one image."""
    assert targets.dim() == 2 and targets.shape[1] == 6, targets.shape
    device = targets.device
    H, W = imageShape
    if targets.shape[0] == 0:
        return (torch.zeros(batchSize, 0, 1, device=device), torch.zeros(batchSize, 0, 4, device=device),
                torch.zeros(batchSize, 0, 1, device=device))
    imageIndex = targets[:, 0].long()
    counts = torch.bincount(imageIndex, minlength=batchSize)
    M = int(counts.max())
    order = torch.argsort(imageIndex, stable=True)
    imageIndex, targets = imageIndex[order], targets[order]
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(targets.shape[0], device=device) - starts[imageIndex]
    gtLabels = torch.zeros(batchSize, M, 1, device=device)
    gtBoxes = torch.zeros(batchSize, M, 4, device=device)
    gtMask = torch.zeros(batchSize, M, 1, device=device)
    gtLabels[imageIndex, slot, 0] = targets[:, 1]
    gtBoxes[imageIndex, slot] = targets[:, 2:6] * torch.tensor([W, H, W, H], device=device, dtype=targets.dtype)
    gtMask[imageIndex, slot] = 1.0
    return gtLabels, gtBoxes, gtMask


class DetectionLoss(object):
    """DetectionLoss(mcfg, model)(preds, targets) -> scalar: (lossWeights . parts) x B, as YOLOv8 scales it,
    so the SGD learning rate of 0.01 means the same as in Ultralytics.

    preds: the model's three level outputs (B, 4*regMax + nc, Hi, Wi); targets: (N, 6) Mars collate rows.
    After each call, self.parts holds the unweighted (box, cls, dfl) losses as a detached (3,) tensor.
    """

    def __init__(self, mcfg, model, dense=None):
        self.nc, self.regMax, self.strides = model.nc, model.regMax, model.strides
        self.dense = dense  # None: dense on accelerators, candidate anchors on the CPU (see computeParts)
        self.lossWeights = tuple(mcfg.lossWeights)
        self.assigner = TaskAlignedAssigner(topk=mcfg.talTopk, nc=self.nc, alpha=0.5, beta=6.0,
                                            minCandidateSize=float(self.strides[1]))
        self.parts = torch.zeros(3)
        self.cache = {}

    def cached(self, key, make):
        """Small constant tensors made once per device (a copy from host memory would wait for the device)."""
        if key not in self.cache:
            self.cache[key] = make()
        return self.cache[key]

    def anchors(self, preds):
        """Anchor points (A, 2) in stride units and strides (A, 1), cached per feature-map size."""
        shapes = tuple(p.shape[2:] for p in preds)
        return self.cached(("anchors", shapes, preds[0].device, preds[0].dtype),
                           lambda: makeAnchors(shapes, self.strides, preds[0].device, preds[0].dtype))

    def proj(self, device):
        """(regMax,) bin indexes 0 .. regMax-1, the DFL expectation's weights."""
        return self.cached(("proj", device), lambda: torch.arange(self.regMax, device=device, dtype=torch.float32))

    def __call__(self, preds, targets):
        """The loss in float32 whatever the caller's autocast: anchors, box decoding, IoU and the assigner in a
        low-precision dtype would move boxes by pixels (bf16 keeps 8 bits of mantissa)."""
        with float32Region(preds[0].device):
            parts = self.computeParts([p.float() for p in preds], targets)
        self.parts = parts.detach()
        weights = self.cached(("weights", parts.device), lambda: torch.tensor(self.lossWeights, device=parts.device))
        return (parts * weights).sum() * preds[0].shape[0]

    def flatten(self, preds):
        """list of (B, 4*regMax + nc, Hi, Wi) -> predDist (B, A, 4*regMax), predLogits (B, A, nc)."""
        B = preds[0].shape[0]
        flat = torch.cat([p.view(B, p.shape[1], -1) for p in preds], 2)  # (B, 4*regMax + nc, A)
        predDist, predLogits = flat.split((4 * self.regMax, self.nc), 1)
        return predDist.permute(0, 2, 1).contiguous(), predLogits.permute(0, 2, 1).contiguous()

    def candidateRows(self, levels, isCandidate):
        """The outputs of the candidate anchors, gathered level by level (no copy of the whole outputs).

        levels: list of (B, 4*regMax + nc, Hi*Wi); isCandidate: (B, A) bool.
        Returns candImage (K,), candAnchor (K,) (anchor index over all levels), candRows (K, 4*regMax + nc).
        """
        images, anchors, rows, start = [], [], [], 0
        for level in levels:
            b, a = isCandidate[:, start:start + level.shape[2]].nonzero(as_tuple=True)
            images.append(b)
            anchors.append(a + start)
            rows.append(level[b, :, a])  # (Ki, 4*regMax + nc)
            start += level.shape[2]
        return torch.cat(images), torch.cat(anchors), torch.cat(rows)

    def paddedTargets(self, preds, targets):
        """targets (N, 6) -> gtLabels (B, M, 1), gtBoxes (B, M, 4) pixels, gtMask (B, M, 1) on the device of preds.
        Padded where the targets are (the loader's CPU tensors: sizing M reads no device), then copied."""
        imageShape = (preds[0].shape[2] * self.strides[0], preds[0].shape[3] * self.strides[0])
        padded = targetsToPadded(targets.float(), preds[0].shape[0], imageShape)
        device = preds[0].device
        if device.type == "cuda" and not padded[0].is_cuda:
            padded = [t.pin_memory() for t in padded]  # a copy from pageable memory would wait for the device
        return [t.to(device, non_blocking=True) for t in padded]

    def computeParts(self, preds, targets):
        """Unweighted (box CIoU, class BCE, DFL) losses as a (3,) tensor with gradients.

        Two exact equivalents (tests/test_loss.py): on the CPU, only candidate anchors (inside some gt box) are decoded,
        assigned and scored, which is what makes the CPU step fast, but sizing them reads tensors on the host. On an
        accelerator, computePartsDense() keeps every tensor at a fixed size, so the step never waits for the device.
        """
        dense = self.dense if self.dense is not None else preds[0].device.type != "cpu"
        return self.computePartsDense(preds, targets) if dense else self.computePartsCandidates(preds, targets)

    def computePartsCandidates(self, preds, targets):
        """computeParts() on candidate anchors. Only the class loss needs every anchor. Boxes are decoded only for
        candidate anchors, the only ones the assigner and the box losses read; the box and DFL losses run on the
        foreground anchors."""
        B = preds[0].shape[0]
        R = 4 * self.regMax  # box channels, then nc class channels
        levels = [p.flatten(2) for p in preds]  # (B, 4*regMax + nc, Hi*Wi) views
        anchorPoints, strideTensor = self.anchors(preds)  # (A, 2) stride units, (A, 1)
        A = anchorPoints.shape[0]
        device = preds[0].device
        gtLabels, gtBoxes, gtMask = self.paddedTargets(preds, targets)
        anchorPixels = anchorPoints * strideTensor  # (A, 2) input pixels
        inside = self.assigner.anchorsInside(anchorPixels, gtBoxes, gtMask.bool())  # (B, M, A)

        candImage, candAnchor, candRows = self.candidateRows(levels, inside.any(1))  # (K,), (K,), (K, R + nc)
        candBoxes = distToBox(dflDecode(candRows[:, :R], self.proj(device)), anchorPoints[candAnchor])  # (K, 4) stride units
        predBoxesPixels = torch.zeros((B, A, 4), dtype=gtBoxes.dtype, device=device)  # read only at candidates
        predBoxesPixels[candImage, candAnchor] = (candBoxes.detach() * strideTensor[candAnchor]).type(gtBoxes.dtype)
        predLogits = torch.cat([level[:, R:].detach() for level in levels], 2).transpose(1, 2)  # (B, A, nc)
        targetLabels, targetBoxes, targetWeight, fgMask, _ = self.assigner.assign(
            predLogits, predBoxesPixels, anchorPixels, gtLabels, gtBoxes, gtMask, inside, logits=True)

        fgImage, fgAnchor = fgMask.nonzero(as_tuple=True)  # (F,) foreground anchors, all among the candidates
        candRow = torch.full((B, A), -1, dtype=torch.long, device=device)
        candRow[candImage, candAnchor] = torch.arange(candImage.shape[0], device=device)
        fgRow = candRow[fgImage, fgAnchor]  # (F,) row in candRows
        weight = targetWeight[fgImage, fgAnchor].float().unsqueeze(-1)  # (F, 1) soft class target of the foreground
        targetScoresSum = weight.sum().clamp(min=1)

        # BCE summed over every (anchor, class) = sum(softplus(logit)) - sum(target * logit), and the target is
        # non-zero only at (foreground anchor, its class)
        fgLogits = candRows[fgRow, R + targetLabels[fgImage, fgAnchor]]  # (F,)
        softplusSum = sum(F.softplus(level[:, R:]).sum(dtype=torch.float32) for level in levels)  # float32 under AMP
        clsLoss = (softplusSum - (fgLogits * weight[:, 0]).sum()) / targetScoresSum

        targetBoxes = targetBoxes[fgImage, fgAnchor] / strideTensor[fgAnchor]  # (F, 4) stride units
        iou = boxIou(candBoxes[fgRow], targetBoxes, "ciou").unsqueeze(-1)  # (F, 1)
        boxLoss = ((1.0 - iou) * weight).sum() / targetScoresSum
        targetDist = boxToDist(targetBoxes, anchorPoints[fgAnchor], self.regMax - 1)  # (F, 4) bins
        dfl = self.dflLoss(candRows[fgRow, :R].reshape(-1, self.regMax), targetDist) * weight
        dflLoss = dfl.sum() / targetScoresSum
        return torch.stack((boxLoss, clsLoss, dflLoss))

    def computePartsDense(self, preds, targets):
        """computeParts() on every anchor with fixed-size tensors (nothing read on the host)."""
        predDist, predLogits = self.flatten(preds)  # (B, A, 4*regMax), (B, A, nc)
        anchorPoints, strideTensor = self.anchors(preds)  # (A, 2) stride units, (A, 1)
        gtLabels, gtBoxes, gtMask = self.paddedTargets(preds, targets)
        predBoxes = distToBox(dflDecode(predDist, self.proj(predDist.device)), anchorPoints)  # (B, A, 4) stride units
        targetLabels, targetBoxes, targetWeight, fgMask, _ = self.assigner.assignDense(
            predLogits.detach(), (predBoxes.detach() * strideTensor).type(gtBoxes.dtype), anchorPoints * strideTensor,
            gtLabels, gtBoxes, gtMask, logits=True)
        weight = targetWeight.float()  # (B, A): soft class target of the foreground, 0 for background
        targetScoresSum = weight.sum().clamp(min=1)

        fgLogits = predLogits.gather(-1, targetLabels.clamp(max=self.nc - 1)[..., None])[..., 0]  # (B, A)
        clsLoss = (F.softplus(predLogits).sum(dtype=torch.float32) - (fgLogits * weight).sum()) / targetScoresSum

        # background anchors get their own prediction as a stand-in target: finite everywhere, and weight 0
        targetBoxes = torch.where(fgMask[..., None], targetBoxes / strideTensor, predBoxes.detach())  # (B, A, 4)
        iou = boxIou(predBoxes, targetBoxes, "ciou")  # (B, A)
        boxLoss = ((1.0 - iou) * weight).sum() / targetScoresSum
        targetDist = boxToDist(targetBoxes, anchorPoints, self.regMax - 1)  # (B, A, 4) bins
        dfl = self.dflLoss(predDist.reshape(-1, self.regMax), targetDist.reshape(-1, 4))  # (B*A, 1)
        dflLoss = (dfl[:, 0] * weight.flatten()).sum() / targetScoresSum
        return torch.stack((boxLoss, clsLoss, dflLoss))

    def dflLoss(self, predDist, targetDist):
        """Distribution focal loss: predDist (F*4, regMax) logits, targetDist (F, 4) in bins -> (F, 1), the
        cross-entropy to the two bins around the target, weighted by proximity, averaged over the 4 sides."""
        target = targetDist.clamp(0, self.regMax - 1 - 0.01)
        left = target.long()
        weightLeft = (left + 1) - target
        logp = F.log_softmax(predDist, dim=1)
        nllLeft = -logp.gather(1, left.view(-1, 1)).view(left.shape)
        nllRight = -logp.gather(1, (left + 1).view(-1, 1)).view(left.shape)
        return (nllLeft * weightLeft + nllRight * (1 - weightLeft)).mean(-1, keepdim=True)
