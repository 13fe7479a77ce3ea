"""What -inspect computes for one image: the assigner's decision (training's own call), score maps, distillation maps.

Everything is for one image (B = 1) in network-input pixels (the letterboxed image the model sees).
"""
import torch
import torch.nn.functional as F

from train.distilloss import channelWiseDivergence, localisationDivergence
from train.loss import DetectionLoss

LEVEL_NAMES = ("P3", "P4", "P5")
MAX_PEAKS = 5  # labelled local maxima per score map


class RecordingAssigner(object):
    """Stands in for a DetectionLoss's TaskAlignedAssigner during one loss call: every attribute is the assigner's,
    and the result of its assign() / assignDense() call (whichever path the loss takes) is kept in self.result."""

    def __init__(self, assigner):
        self.assigner = assigner
        self.result = None

    def __getattr__(self, name):
        return getattr(self.assigner, name)

    def assign(self, *args, **kwargs):
        self.result = self.assigner.assign(*args, **kwargs)
        return self.result

    def assignDense(self, *args, **kwargs):
        self.result = self.assigner.assignDense(*args, **kwargs)
        return self.result


@torch.no_grad()
def assignment(mcfg, model, preds, targets):
    """The positives the TaskAlignedAssigner picks, from the very call DetectionLoss makes in training.

    preds: the model's [P3, P4, P5] (1, 4*regMax + nc, Hi, Wi); targets: (N, 6) Mars collate rows (imageIndex 0).
    Returns a dict of CPU tensors: anchorPixels (A, 2) anchor centres in network-input pixels, strides (A,),
    level (A,) 0/1/2 for P3/P4/P5, fgMask (A,) bool, gtIndex (A,) long (row of targets owning each positive anchor,
    in the order of targets), alignment (A,) float (the soft class target: the alignment metric normalised per box
    so that its best anchor gets the box's best IoU; 0 for background).
    """
    loss = DetectionLoss(mcfg, model)
    recorder = RecordingAssigner(loss.assigner)
    loss.assigner = recorder
    loss(preds, targets)
    _, _, targetWeight, fgMask, targetGtIndex = recorder.result
    anchorPoints, strideTensor = loss.anchors(preds)  # (A, 2) stride units, (A, 1)
    sizes = [p.shape[2] * p.shape[3] for p in preds]
    level = torch.cat([torch.full((n,), i, dtype=torch.long) for i, n in enumerate(sizes)])
    return {"anchorPixels": (anchorPoints * strideTensor).float().cpu(), "strides": strideTensor[:, 0].float().cpu(),
            "level": level, "fgMask": fgMask[0].cpu(), "gtIndex": targetGtIndex[0].cpu(),
            "alignment": targetWeight[0].float().cpu()}


def positivesPerBox(assigned, numBoxes):
    """-> list of numBoxes dicts: anchorIndexes (list of ints, over all levels), counts {"P3": n, "P4": n, "P5": n}."""
    boxes = []
    for box in range(numBoxes):
        mine = (assigned["fgMask"] & (assigned["gtIndex"] == box)).nonzero()[:, 0]
        counts = torch.bincount(assigned["level"][mine], minlength=len(LEVEL_NAMES)).tolist()
        boxes.append({"anchorIndexes": mine.tolist(), "counts": dict(zip(LEVEL_NAMES, counts))})
    return boxes


@torch.no_grad()
def scoreMaps(preds, strides, regMax, classList, minPeakScore):
    """Per level the highest class probability at every anchor, and its labelled peaks.

    preds: [P3, P4, P5] (1, 4*regMax + nc, Hi, Wi); strides: (8, 16, 32). Returns a list of 3 dicts: maxScore (Hi, Wi)
    float, topClass (Hi, Wi) long, stride (pixels), peaks: up to MAX_PEAKS local maxima [((x, y) anchor centre in
    network-input pixels, class name, score)], the global maximum always first, the others only when >= minPeakScore.
    """
    levels = []
    for p, stride in zip(preds, strides):
        H, W = p.shape[2:]
        probs = p[0, 4 * regMax:].float().sigmoid()  # (nc, H, W)
        maxScore, topClass = probs.max(0)  # (H, W), (H, W)
        isPeak = F.max_pool2d(maxScore[None, None], 3, 1, 1)[0, 0] == maxScore  # (H, W) local maxima
        order = torch.argsort(maxScore.flatten(), descending=True)
        peaks = []
        for rank, index in enumerate(order.tolist()):
            y, x = divmod(index, W)
            if rank > 0 and (len(peaks) >= MAX_PEAKS or float(maxScore[y, x]) < minPeakScore):
                break
            if rank == 0 or isPeak[y, x]:
                centre = ((x + 0.5) * stride, (y + 0.5) * stride)
                peaks.append((centre, classList[int(topClass[y, x])], float(maxScore[y, x])))
        levels.append({"maxScore": maxScore.cpu(), "topClass": topClass.cpu(), "stride": stride, "peaks": peaks})
    return levels


@torch.no_grad()
def cwdMaps(studentFeat, teacherFeat, temperature):
    """The channel-wise spatial attention CWD matches, for one (1, C, H, W) feature of student and teacher.

    Returns teacher (H, W) and student (H, W): softmax(map / T) over the H*W positions, averaged over the C channels
    (each sums to 1); kl (H, W): each position's share of the CWD value, KL(teacher || student) summed over channels
    / C * T^2 (kl.sum() equals channelWiseDivergence); and value: channelWiseDivergence itself (the training term).
    """
    _, C, H, W = studentFeat.shape
    logS = F.log_softmax(studentFeat.float().reshape(C, H * W) / temperature, dim=1)  # (C, H*W)
    logT = F.log_softmax(teacherFeat.float().reshape(C, H * W) / temperature, dim=1)  # (C, H*W)
    kl = (logT.exp() * (logT - logS)).mean(0) * temperature ** 2  # (H*W,)
    return {"teacher": logT.exp().mean(0).reshape(H, W).cpu(), "student": logS.exp().mean(0).reshape(H, W).cpu(),
            "kl": kl.reshape(H, W).cpu(), "value": float(channelWiseDivergence(studentFeat, teacherFeat, temperature))}


@torch.no_grad()
def ldMaps(studentPreds, teacherPreds, regMax, teacherClassIndexes, temperature):
    """Localisation distillation per anchor: KL(teacher || student) of the box distributions (mean over the 4 sides,
    times T^2) and the anchor weight LD uses (the teacher's best score over its classes), as (Hi, Wi) maps per level.

    studentPreds, teacherPreds: [P3, P4, P5] (1, 4*regMax + nc, Hi, Wi). Returns a list of 3 dicts (kl, weight) and
    value: localisationDivergence (the training term) = sum(kl * weight) / max(1, sum(weight)).
    """
    flatS = torch.cat([p.flatten(2) for p in studentPreds], 2)[0].float().T  # (A, 4*regMax + nc)
    flatT = torch.cat([p.flatten(2) for p in teacherPreds], 2)[0].float().T  # (A, 4*regMax + nc)
    A = flatS.shape[0]
    R = 4 * regMax
    weight = flatT[:, R:][:, list(teacherClassIndexes)].sigmoid().amax(1)  # (A,)
    logS = F.log_softmax(flatS[:, :R].reshape(A, 4, regMax) / temperature, dim=2)
    logT = F.log_softmax(flatT[:, :R].reshape(A, 4, regMax) / temperature, dim=2)
    kl = (logT.exp() * (logT - logS)).sum(2).mean(1) * temperature ** 2  # (A,)
    value = float(localisationDivergence(flatS[None, :, :R], flatT[None, :, :R], weight[None], regMax, temperature))
    levels, start = [], 0
    for p in studentPreds:
        H, W = p.shape[2:]
        levels.append({"kl": kl[start:start + H * W].reshape(H, W).cpu(),
                       "weight": weight[start:start + H * W].reshape(H, W).cpu()})
        start += H * W
    return levels, value
