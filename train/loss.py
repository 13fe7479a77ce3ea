"""DetectionLoss: CIoU box loss + BCE class loss + DFL, with TaskAlignedAssigner targets (YOLOv8)."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from misc.bbox import boxIou, boxToDist, distToBox, dflDecode, makeAnchors
from train.tal import TaskAlignedAssigner


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

    def __init__(self, mcfg, model):
        self.nc, self.regMax, self.strides = model.nc, model.regMax, model.strides
        self.lossWeights = tuple(mcfg.lossWeights)
        self.assigner = TaskAlignedAssigner(topk=mcfg.talTopk, nc=self.nc, alpha=0.5, beta=6.0,
                                            minCandidateSize=float(self.strides[1]))
        self.bce = nn.BCEWithLogitsLoss(reduction="none")
        self.parts = torch.zeros(3)
        self.anchorCache = {}

    def anchors(self, preds):
        """Anchor points (A, 2) in stride units and strides (A, 1), cached per feature-map size."""
        shapes = tuple(p.shape[2:] for p in preds)
        key = (shapes, preds[0].device, preds[0].dtype)
        if key not in self.anchorCache:
            self.anchorCache[key] = makeAnchors(shapes, self.strides, preds[0].device, preds[0].dtype)
        return self.anchorCache[key]

    def __call__(self, preds, targets):
        parts = self.computeParts(preds, targets)
        self.parts = parts.detach()
        return (parts * parts.new_tensor(self.lossWeights)).sum() * preds[0].shape[0]

    def flatten(self, preds):
        """list of (B, 4*regMax + nc, Hi, Wi) -> predDist (B, A, 4*regMax), predLogits (B, A, nc)."""
        B = preds[0].shape[0]
        flat = torch.cat([p.view(B, p.shape[1], -1) for p in preds], 2)  # (B, 4*regMax + nc, A)
        predDist, predLogits = flat.split((4 * self.regMax, self.nc), 1)
        return predDist.permute(0, 2, 1).contiguous(), predLogits.permute(0, 2, 1).contiguous()

    def computeParts(self, preds, targets):
        """Unweighted (box CIoU, class BCE, DFL) losses as a (3,) tensor with gradients."""
        predDist, predLogits = self.flatten(preds)  # (B, A, 4*regMax), (B, A, nc)
        B = predLogits.shape[0]
        anchorPoints, strideTensor = self.anchors(preds)  # (A, 2), (A, 1)
        imageShape = (preds[0].shape[2] * self.strides[0], preds[0].shape[3] * self.strides[0])
        gtLabels, gtBoxes, gtMask = targetsToPadded(targets.to(predLogits.device).float(), B, imageShape)

        proj = torch.arange(self.regMax, device=predDist.device, dtype=torch.float32)
        predBoxes = distToBox(dflDecode(predDist, proj), anchorPoints)  # (B, A, 4) stride units
        _, targetBoxes, targetScores, fgMask, _ = self.assigner(
            predLogits.detach().sigmoid(), (predBoxes.detach() * strideTensor).type(gtBoxes.dtype),
            anchorPoints * strideTensor, gtLabels, gtBoxes, gtMask)
        targetScoresSum = targetScores.sum().clamp(min=1)

        clsLoss = self.bce(predLogits, targetScores.to(predLogits.dtype)).sum() / targetScoresSum
        fg = fgMask.nonzero(as_tuple=True)
        weight = targetScores[fg].sum(-1, keepdim=True)  # (F, 1)
        targetBoxes = targetBoxes / strideTensor  # stride units
        iou = boxIou(predBoxes[fg], targetBoxes[fg], "ciou").unsqueeze(-1)  # (F, 1)
        boxLoss = ((1.0 - iou) * weight).sum() / targetScoresSum
        targetDist = boxToDist(targetBoxes, anchorPoints, self.regMax - 1)  # (B, A, 4) bins
        dfl = self.dflLoss(predDist[fg].view(-1, self.regMax), targetDist[fg]) * weight
        dflLoss = dfl.sum() / targetScoresSum
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
