"""TaskAlignedAssigner (TOOD, Feng et al. 2021) as YOLOv8 uses it."""
import torch
import torch.nn as nn

from misc.bbox import boxIou

EPS = 1e-9


class TaskAlignedAssigner(nn.Module):
    """Assign ground-truth boxes to anchors by the alignment metric score^alpha * CIoU^beta.

    For each ground truth, the topk anchors (by metric) whose centres lie inside the box are candidates;
    an anchor claimed by several ground truths keeps the one it overlaps most. Ground-truth sides smaller
    than minCandidateSize pixels are widened to it (about the box centre) for the inside test only, so
    tiny objects still get candidates.
    """

    def __init__(self, topk=10, nc=80, alpha=0.5, beta=6.0, minCandidateSize=16.0):
        super().__init__()
        self.topk, self.nc, self.alpha, self.beta = topk, nc, alpha, beta
        self.minCandidateSize = minCandidateSize

    @torch.no_grad()
    def forward(self, predScores, predBoxesXyxy, anchorPoints, gtLabels, gtBoxesXyxy, gtMask):
        """
        predScores: (B, A, nc) sigmoid scores; predBoxesXyxy: (B, A, 4) input pixels; anchorPoints: (A, 2) input pixels;
        gtLabels: (B, M, 1) class ids; gtBoxesXyxy: (B, M, 4) input pixels; gtMask: (B, M, 1) 1 for real boxes, 0 for padding.
        Returns targetLabels (B, A) long, targetBoxesXyxy (B, A, 4), targetScores (B, A, nc) float,
        fgMask (B, A) bool, targetGtIndex (B, A) long.
        """
        B, A, nc = predScores.shape
        M = gtBoxesXyxy.shape[1]
        if M == 0:
            return (torch.full((B, A), nc, dtype=torch.long, device=predScores.device), torch.zeros_like(predBoxesXyxy),
                    torch.zeros_like(predScores), torch.zeros((B, A), dtype=torch.bool, device=predScores.device),
                    torch.zeros((B, A), dtype=torch.long, device=predScores.device))
        valid = gtMask.bool()  # (B, M, 1)
        inside = self.anchorsInside(anchorPoints, gtBoxesXyxy, valid) & valid  # (B, M, A)

        # alignment metric and CIoU on (gt, anchor) pairs whose anchor lies inside the gt
        b, m, a = inside.nonzero(as_tuple=True)
        pairScores = predScores[b, a, gtLabels[b, m, 0].long()]
        pairIou = boxIou(gtBoxesXyxy[b, m], predBoxesXyxy[b, a], "ciou").clamp_(0)
        overlaps = torch.zeros((B, M, A), dtype=predBoxesXyxy.dtype, device=predBoxesXyxy.device)
        metric = torch.zeros((B, M, A), dtype=pairScores.dtype, device=predScores.device)
        overlaps[b, m, a] = pairIou
        metric[b, m, a] = pairScores.pow(self.alpha) * pairIou.pow(self.beta)

        # topk candidates per gt (padding rows select nothing)
        topkIndex = metric.topk(self.topk, dim=-1).indices  # (B, M, topk)
        isTopk = torch.zeros_like(inside).scatter_(-1, topkIndex, True)
        positive = isTopk & inside & valid  # (B, M, A)

        # an anchor positive for several gts keeps the gt of highest overlap
        multi = positive.sum(1, keepdim=True) > 1  # (B, 1, A)
        best = torch.zeros_like(positive).scatter_(1, overlaps.argmax(1, keepdim=True), True)
        positive = torch.where(multi, best, positive)
        fgMask, targetGtIndex = positive.max(1)  # (B, A)

        flatIndex = targetGtIndex + torch.arange(B, device=gtLabels.device)[:, None] * M  # (B, A)
        targetLabels = gtLabels.long().flatten()[flatIndex].clamp_(0)  # (B, A)
        targetBoxes = gtBoxesXyxy.reshape(-1, 4)[flatIndex]  # (B, A, 4)
        targetScores = torch.zeros((B, A, nc), dtype=predScores.dtype, device=predScores.device)
        targetScores.scatter_(2, targetLabels.unsqueeze(-1), 1.0)
        targetScores *= fgMask.unsqueeze(-1)

        # soft targets: metric normalised per gt so its best anchor gets that gt's best IoU
        metric = metric * positive
        overlaps = overlaps * positive
        normMetric = metric * overlaps.amax(-1, keepdim=True) / (metric.amax(-1, keepdim=True) + EPS)
        targetScores = targetScores * normMetric.amax(1).unsqueeze(-1)  # (B, A, nc)
        return targetLabels, targetBoxes, targetScores, fgMask, targetGtIndex

    def anchorsInside(self, anchorPoints, gtBoxesXyxy, valid):
        """(A, 2) anchor centres, (B, M, 4) boxes, (B, M, 1) valid -> (B, M, A) bool: centre strictly inside the box
        (sides below minCandidateSize widened to it about the centre)."""
        centre = (gtBoxesXyxy[..., :2] + gtBoxesXyxy[..., 2:]) / 2
        size = gtBoxesXyxy[..., 2:] - gtBoxesXyxy[..., :2]
        size = torch.where((size < self.minCandidateSize) & valid, torch.full_like(size, self.minCandidateSize), size)
        lt = (centre - size / 2).unsqueeze(2)  # (B, M, 1, 2)
        rb = (centre + size / 2).unsqueeze(2)
        deltas = torch.cat((anchorPoints - lt, rb - anchorPoints), -1)  # (B, M, A, 4)
        return deltas.amin(-1) > EPS
