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

    The inside test, the metric and its topk search run on dense (B, M, A) tensors (so topk breaks ties among
    equal metrics as the reference does); everything after works on the few positive (image, gt, anchor) pairs.
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
        Returns targetLabels (B, A) long, targetBoxesXyxy (B, A, 4), targetScores (B, A, nc) float (the soft target of
        the assigned class, 0 elsewhere), fgMask (B, A) bool, targetGtIndex (B, A) long.
        """
        B, A, nc = predScores.shape
        targetLabels, targetBoxes, targetWeight, fgMask, targetGtIndex = self.assign(
            predScores, predBoxesXyxy, anchorPoints, gtLabels, gtBoxesXyxy, gtMask)
        targetScores = torch.zeros((B, A, nc), dtype=targetWeight.dtype, device=predScores.device)
        fgImage, fgAnchor = fgMask.nonzero(as_tuple=True)
        targetScores[fgImage, fgAnchor, targetLabels[fgImage, fgAnchor]] = targetWeight[fgImage, fgAnchor]
        return targetLabels, targetBoxes, targetScores, fgMask, targetGtIndex

    @torch.no_grad()
    def assign(self, predScores, predBoxesXyxy, anchorPoints, gtLabels, gtBoxesXyxy, gtMask, inside=None, logits=False):
        """forward() without the dense (B, A, nc) target: the same inputs (predBoxesXyxy is read only where an anchor
        lies inside a gt), plus inside, the (B, M, A) bool of anchorsInside() if the caller has it, and logits: True
        when predScores holds class logits (the sigmoid is then taken of the (gt, inside anchor) pairs only).
        Returns targetLabels (B, A) long, targetBoxesXyxy (B, A, 4), targetWeight (B, A) float (the soft target of
        the assigned class: the alignment metric normalised per gt so its best anchor gets that gt's best IoU; 0 for
        background), fgMask (B, A) bool, targetGtIndex (B, A) long (0 for background).
        """
        B, A, _ = predScores.shape
        M = gtBoxesXyxy.shape[1]
        device = predScores.device
        if M == 0:
            return self.noTargets(predScores, predBoxesXyxy)
        if inside is None:
            inside = self.anchorsInside(anchorPoints, gtBoxesXyxy, gtMask.bool())  # (B, M, A)

        # alignment metric and CIoU on (gt, anchor) pairs whose anchor lies inside the gt
        b, m, a = inside.nonzero(as_tuple=True)
        pairScores = predScores[b, a, gtLabels[b, m, 0].long()]
        if logits:
            pairScores = pairScores.sigmoid()
        pairIou = boxIou(gtBoxesXyxy[b, m], predBoxesXyxy[b, a], "ciou").clamp_(0)
        pairMetric = pairScores.pow(self.alpha) * pairIou.pow(self.beta)  # float32 with float32 boxes, even under AMP
        overlaps = torch.zeros((B, M, A), dtype=pairIou.dtype, device=device)
        metric = torch.zeros((B, M, A), dtype=pairMetric.dtype, device=device)
        overlaps[b, m, a] = pairIou
        metric[b, m, a] = pairMetric

        # topk candidates per gt that lie inside it: the positive pairs (padding rows have no inside anchors)
        topkIndex = metric.topk(self.topk, dim=-1).indices  # (B, M, topk)
        pb, pm, pk = inside.gather(-1, topkIndex).nonzero(as_tuple=True)
        pa = topkIndex[pb, pm, pk]  # (P,) positive pairs (pb, pm, pa)

        # an anchor positive for several gts keeps the gt it overlaps most (over all gts; first on a tie)
        anchorKey = pb * A + pa
        claims = torch.bincount(anchorKey, minlength=B * A)  # (B*A,)
        single = claims[anchorKey] == 1
        multiKey = torch.nonzero(claims > 1)[:, 0]  # (K,) anchors claimed several times
        multiImage, multiAnchor = multiKey // A, multiKey % A
        multiGt = overlaps[multiImage, :, multiAnchor].argmax(1)  # (K,)
        pb = torch.cat((pb[single], multiImage))
        pm = torch.cat((pm[single], multiGt))
        pa = torch.cat((pa[single], multiAnchor))  # now one pair per foreground anchor

        fgMask = torch.zeros((B, A), dtype=torch.bool, device=device)
        fgMask[pb, pa] = True
        targetGtIndex = torch.zeros((B, A), dtype=torch.long, device=device)
        targetGtIndex[pb, pa] = pm
        flatIndex = targetGtIndex + torch.arange(B, device=device)[:, None] * M  # (B, A)
        targetLabels = gtLabels.long().flatten()[flatIndex].clamp_(0)  # (B, A)
        targetBoxes = gtBoxesXyxy.reshape(-1, 4)[flatIndex]  # (B, A, 4)

        # soft targets: metric normalised per gt so its best anchor gets that gt's best IoU
        pairMetric, pairOverlap = metric[pb, pm, pa], overlaps[pb, pm, pa]
        gtKey = pb * M + pm
        gtMaxMetric = metric.new_zeros(B * M).scatter_reduce_(0, gtKey, pairMetric, "amax")
        gtMaxOverlap = overlaps.new_zeros(B * M).scatter_reduce_(0, gtKey, pairOverlap, "amax")
        targetWeight = torch.zeros((B, A), dtype=metric.dtype, device=device)
        targetWeight[pb, pa] = pairMetric * gtMaxOverlap[gtKey] / (gtMaxMetric[gtKey] + EPS)
        return targetLabels, targetBoxes, targetWeight, fgMask, targetGtIndex

    @torch.no_grad()
    def assignDense(self, predScores, predBoxesXyxy, anchorPoints, gtLabels, gtBoxesXyxy, gtMask, inside=None,
                    logits=False):
        """assign() on fixed-size (B, M, A) tensors from start to end: no tensor's size depends on the data (no nonzero,
        no bincount), so on a GPU the host never waits for the device. Same arguments and results as assign(); it
        computes the metric for every (gt, anchor) pair, which a GPU does cheaply and a CPU does not.
        """
        B, A, _ = predScores.shape
        M = gtBoxesXyxy.shape[1]
        if M == 0:
            return self.noTargets(predScores, predBoxesXyxy)
        if inside is None:
            inside = self.anchorsInside(anchorPoints, gtBoxesXyxy, gtMask.bool())  # (B, M, A)
        labels = gtLabels.long().clamp(0, self.nc - 1)[..., 0]  # (B, M) (padding rows read class 0, masked below)
        scores = predScores.transpose(1, 2).gather(1, labels[..., None].expand(B, M, A))  # (B, M, A)
        if logits:
            scores = scores.sigmoid()
        iou = boxIou(gtBoxesXyxy[:, :, None], predBoxesXyxy[:, None], "ciou").clamp_(0)  # (B, M, A)
        overlaps = torch.where(inside, iou, torch.zeros_like(iou))
        metric = scores.pow(self.alpha) * iou.pow(self.beta)
        metric = torch.where(inside, metric, torch.zeros_like(metric))

        # topk per gt among its inside anchors; an anchor claimed by several gts keeps the one it overlaps most
        topkIndex = metric.topk(self.topk, dim=-1).indices  # (B, M, topk)
        positive = torch.zeros_like(inside).scatter_(-1, topkIndex, True) & inside  # (B, M, A)
        bestGt = overlaps.argmax(1, keepdim=True)  # (B, 1, A) first on a tie
        isBest = torch.arange(M, device=inside.device)[None, :, None] == bestGt  # (B, M, A)
        positive = torch.where(positive.sum(1, keepdim=True) > 1, isBest, positive)  # one gt per foreground anchor

        fgMask = positive.any(1)  # (B, A)
        targetGtIndex = positive.byte().argmax(1)  # (B, A), 0 for background
        flatIndex = targetGtIndex + torch.arange(B, device=inside.device)[:, None] * M  # (B, A)
        targetLabels = gtLabels.long().flatten()[flatIndex].clamp_(0)  # (B, A)
        targetBoxes = gtBoxesXyxy.reshape(-1, 4)[flatIndex]  # (B, A, 4)

        # soft targets: metric normalised per gt so its best anchor gets that gt's best IoU
        metric = torch.where(positive, metric, torch.zeros_like(metric))
        gtMaxMetric = metric.amax(-1, keepdim=True)  # (B, M, 1)
        gtMaxOverlap = torch.where(positive, overlaps, torch.zeros_like(overlaps)).amax(-1, keepdim=True)
        targetWeight = (metric * gtMaxOverlap / (gtMaxMetric + EPS)).amax(1)  # (B, A): one non-zero per fg anchor
        return targetLabels, targetBoxes, targetWeight, fgMask, targetGtIndex

    def noTargets(self, predScores, predBoxesXyxy):
        """assign()'s result when no image has a box: everything background."""
        B, A, _ = predScores.shape
        device = predScores.device
        return (torch.full((B, A), self.nc, dtype=torch.long, device=device), torch.zeros_like(predBoxesXyxy),
                torch.zeros((B, A), dtype=torch.promote_types(predScores.dtype, predBoxesXyxy.dtype), device=device),
                torch.zeros((B, A), dtype=torch.bool, device=device), torch.zeros((B, A), dtype=torch.long, device=device))

    def anchorsInside(self, anchorPoints, gtBoxesXyxy, valid):
        """(A, 2) anchor centres, (B, M, 4) boxes, (B, M, 1) valid -> (B, M, A) bool: True where the box is valid and
        the anchor centre lies strictly inside it (sides below minCandidateSize widened to it about the centre)."""
        centre = (gtBoxesXyxy[..., :2] + gtBoxesXyxy[..., 2:]) / 2
        size = gtBoxesXyxy[..., 2:] - gtBoxesXyxy[..., :2]
        size = torch.where((size < self.minCandidateSize) & valid, torch.full_like(size, self.minCandidateSize), size)
        lt, rb = centre - size / 2, centre + size / 2  # (B, M, 2)
        x, y = anchorPoints[:, 0], anchorPoints[:, 1]  # (A,)
        inside = (x - lt[..., 0:1]) > EPS  # (B, M, A)
        inside &= (y - lt[..., 1:2]) > EPS
        inside &= (rb[..., 0:1] - x) > EPS
        inside &= (rb[..., 1:2] - y) > EPS
        return inside & valid
