"""Mean average precision, vectorised in torch.

Tensor layouts (all boxes in original-image pixels, xyxy, no "+1" pixel convention: area = w * h):
    preds: (P, 7) float rows (imageIndex, classIndex, score, x0, y0, x1, y1)
    gts:   (G, 6) float rows (imageIndex, classIndex, x0, y0, x1, y1)
    T: number of IoU thresholds, nc: number of classes.
Boxes are expected to be well formed (x1 >= x0, y1 >= y0), as the predictor's decoded boxes are; an
inverted box counts as an ordinary detection here, while pycocotools ignores it when it is unmatched
(its negative area falls outside the "all" area range).

Matching (pycocotools semantics, also used for VOC AP): per image and class, detections in descending
score order (ties keep input order); a detection takes the still-unmatched ground truth of its image and
class with the highest IoU (on equal IoU the later ground truth, as pycocotools) and is a true positive
at threshold t when that IoU >= t. A ground truth is matched at most once per threshold, so duplicates
are false positives. (The VOC devkit instead looks at the best gt among *all* gts and counts a duplicate
as a false positive even if another unmatched gt overlaps enough; we follow pycocotools.)

Two AP flavours are reported (both fractions in [0, 1]):
    VOC  (ap50Voc):  all-point interpolation (area under the monotone precision envelope) at IoU vocIou,
                     over all detections (no per-image cap), as the VOC devkit does.
    COCO (ap50Coco, ap5095): 101-point interpolation, at most maxDetsPerImage detections per image and
                     class (as COCOeval.evaluateImg), equal to pycocotools' stats[1] / stats[0].
A class without ground truth has AP = NaN and is left out of every mean.

Ignored ground truths (VOC <difficult>, gtIgnore): pycocotools' iscrowd semantics. A detection is matched to the
ordinary ground truths first, as above; one that stays unmatched at threshold t but covers an ignored ground truth
of its image and class (intersection / detection area >= t, the crowd IoU; an ignored box can cover any number of
detections) is ignored at t: neither true nor false positive. Ignored ground truths are not counted in numGt.
confusionMatrix follows the same rule, class-agnostic and with the plain IoU (its docstring).
"""

import torch


def _numpyLinspace(start, stop, num):
    """Float64 (num,) tensor equal bit for bit to numpy.linspace(start, stop, num) (torch.linspace is not)."""
    step = (stop - start) / (num - 1)
    values = torch.arange(num, dtype=torch.float64) * step + start
    values[-1] = stop
    return values


COCO_IOU_THRESHOLDS = _numpyLinspace(0.5, 0.95, 10)  # (10,) as pycocotools' params.iouThrs
COCO_RECALL_THRESHOLDS = _numpyLinspace(0.0, 1.0, 101)  # (101,) as pycocotools' params.recThrs


def _checkInputs(preds, gts):
    """Returns preds (P, 7) and gts (G, 6) as float64 tensors; an empty tensor of any shape is accepted."""
    preds = preds.reshape(0, 7) if preds.numel() == 0 else preds
    gts = gts.reshape(0, 6) if gts.numel() == 0 else gts
    assert preds.dim() == 2 and preds.shape[1] == 7, f"preds must be (P, 7), got {tuple(preds.shape)}"
    assert gts.dim() == 2 and gts.shape[1] == 6, f"gts must be (G, 6), got {tuple(gts.shape)}"
    return preds.double(), gts.to(preds.device).double()


def _pairIou(boxesA, boxesB):
    """IoU of paired boxes: boxesA, boxesB (M, 4) xyxy -> (M,) float, pycocotools style (no +1)."""
    width = (torch.minimum(boxesA[:, 2], boxesB[:, 2]) - torch.maximum(boxesA[:, 0], boxesB[:, 0])).clamp(min=0)
    height = (torch.minimum(boxesA[:, 3], boxesB[:, 3]) - torch.maximum(boxesA[:, 1], boxesB[:, 1])).clamp(min=0)
    intersection = width * height
    areaA = (boxesA[:, 2] - boxesA[:, 0]) * (boxesA[:, 3] - boxesA[:, 1])
    areaB = (boxesB[:, 2] - boxesB[:, 0]) * (boxesB[:, 3] - boxesB[:, 1])
    union = areaA + areaB - intersection
    return torch.where(union > 0, intersection / union.clamp(min=1e-300), torch.zeros_like(union))


def _greedyMatch(preds, gts, iouThresholds):
    """Greedy matching of detections to ground truths per (image, class) group, all thresholds at once.

    Args:
        preds: (P, 7) float64, gts: (G, 6) float64 (layouts in the module docstring).
        iouThresholds: (T,) float64.
    Returns:
        matchedGt: (P, T) long, index into gts of the matched ground truth, -1 for a false positive.
        rank: (P,) long, position of each detection within its (image, class) group by descending score.

    The Python loop runs over "rank within group": step r matches the r-th best detection of every group
    at once against all ground truths of its group (flat det x gt pairs, no padding).
    """
    device = preds.device
    numPreds, numGts, numThresholds = preds.shape[0], gts.shape[0], iouThresholds.shape[0]
    matchedGt = torch.full((numPreds, numThresholds), -1, dtype=torch.long, device=device)
    rank = torch.zeros(numPreds, dtype=torch.long, device=device)
    if numPreds == 0:
        return matchedGt, rank

    # one group id per (image, class) pair, shared by preds and gts
    imageClass = torch.cat([preds[:, :2], gts[:, :2]]).long()  # (P + G, 2)
    assert int(imageClass[:, 1].min()) >= 0, f"negative class index {int(imageClass[:, 1].min())}"
    numClassKeys = int(imageClass[:, 1].max()) + 1
    _, groupIds = torch.unique(imageClass[:, 0] * numClassKeys + imageClass[:, 1], return_inverse=True)
    predGroup, gtGroup = groupIds[:numPreds], groupIds[numPreds:]
    numGroups = int(groupIds.max()) + 1

    # preds ordered by (group, -score, input order)
    byScore = torch.sort(-preds[:, 2], stable=True).indices
    predOrder = byScore[torch.sort(predGroup[byScore], stable=True).indices]  # (P,)
    predCount = torch.bincount(predGroup, minlength=numGroups)  # (numGroups,)
    predStart = torch.cumsum(predCount, 0) - predCount
    sortedGroup = predGroup[predOrder]
    rank[predOrder] = torch.arange(numPreds, device=device) - predStart[sortedGroup]

    # gts ordered by (group, input order)
    gtOrder = torch.sort(gtGroup, stable=True).indices  # (G,)
    gtBoxesSorted = gts[gtOrder, 2:]  # (G, 4) xyxy
    gtCount = torch.bincount(gtGroup, minlength=numGroups)  # (numGroups,)
    gtStart = torch.cumsum(gtCount, 0) - gtCount
    taken = torch.zeros((numGts, numThresholds), dtype=torch.bool, device=device)  # sorted gt order

    byRank = torch.sort(rank, stable=True).indices  # (P,) preds grouped by rank
    rankCount = torch.bincount(rank).tolist()
    thresholds = iouThresholds.to(device)[None, :]  # (1, T)
    offset = 0
    for count in rankCount:
        detIndex = byRank[offset:offset + count]  # (n,) one detection per group, all of rank r
        offset += count
        detGroup = predGroup[detIndex]
        pairsPerDet = gtCount[detGroup]  # (n,)
        numPairs = int(pairsPerDet.sum())
        if numPairs == 0:
            continue
        pairDet = torch.repeat_interleave(torch.arange(count, device=device), pairsPerDet)  # (m,)
        pairFirst = torch.cumsum(pairsPerDet, 0) - pairsPerDet
        pairGt = gtStart[detGroup][pairDet] + torch.arange(numPairs, device=device) - pairFirst[pairDet]  # (m,)
        iou = _pairIou(preds[detIndex[pairDet], 3:], gtBoxesSorted[pairGt])  # (m,)

        candidateIou = torch.where(taken[pairGt], -1.0, iou[:, None].expand(-1, numThresholds))  # (m, T)
        scatterIndex = pairDet[:, None].expand(-1, numThresholds)
        bestIou = torch.full((count, numThresholds), -1.0, dtype=iou.dtype, device=device)
        bestIou = bestIou.scatter_reduce(0, scatterIndex, candidateIou, "amax")  # (n, T)
        isChoice = (candidateIou == bestIou[pairDet]) & (candidateIou >= thresholds)  # (m, T)
        choice = torch.where(isChoice, pairGt[:, None], -1)  # (m, T); the later gt wins a tie
        chosenGt = torch.full((count, numThresholds), -1, dtype=torch.long, device=device)
        chosenGt = chosenGt.scatter_reduce(0, scatterIndex, choice, "amax")  # (n, T) sorted gt index or -1

        isMatch = chosenGt >= 0
        thresholdIndex = torch.nonzero(isMatch)[:, 1]
        taken[chosenGt[isMatch], thresholdIndex] = True
        matchedGt[detIndex] = torch.where(isMatch, gtOrder[chosenGt.clamp(min=0)], -1)
    return matchedGt, rank


def _coversIgnored(preds, ignoredGts, iouThresholds, crowd=True):
    """(P, T) bool: detection p overlaps an ignored ground truth of its image and class by >= threshold t.
    preds (P, 7), ignoredGts (I, 6) float64 on one device, iouThresholds (T,). The overlap is the crowd IoU
    (intersection / detection area, pycocotools' iscrowd IoU) when crowd, else the plain IoU."""
    device = preds.device
    numPreds, numThresholds = preds.shape[0], iouThresholds.shape[0]
    covered = torch.zeros((numPreds, numThresholds), dtype=torch.bool, device=device)
    if numPreds == 0 or ignoredGts.shape[0] == 0:
        return covered
    numClassKeys = int(max(preds[:, 1].max(), ignoredGts[:, 1].max())) + 1
    predKey = (preds[:, 0] * numClassKeys + preds[:, 1]).long()
    gtKey = (ignoredGts[:, 0] * numClassKeys + ignoredGts[:, 1]).long()
    predOrder = torch.sort(predKey, stable=True).indices
    sortedKey = predKey[predOrder]
    first = torch.searchsorted(sortedKey, gtKey)  # (I,) range of each ignored gt's group in predOrder
    count = torch.searchsorted(sortedKey, gtKey, right=True) - first
    pairGt = torch.repeat_interleave(torch.arange(ignoredGts.shape[0], device=device), count)  # (m,)
    pairStart = torch.cumsum(count, 0) - count
    pairPred = predOrder[first[pairGt] + torch.arange(pairGt.shape[0], device=device) - pairStart[pairGt]]  # (m,)
    det, gt = preds[pairPred, 3:], ignoredGts[pairGt, 2:]
    if crowd:
        width = (torch.minimum(det[:, 2], gt[:, 2]) - torch.maximum(det[:, 0], gt[:, 0])).clamp(min=0)
        height = (torch.minimum(det[:, 3], gt[:, 3]) - torch.maximum(det[:, 1], gt[:, 1])).clamp(min=0)
        detArea = (det[:, 2] - det[:, 0]) * (det[:, 3] - det[:, 1])
        overlap = torch.where(detArea > 0, width * height / detArea.clamp(min=1e-300), torch.zeros_like(detArea))
    else:
        overlap = _pairIou(det, gt)  # (m,)
    pair, threshold = torch.nonzero(overlap[:, None] >= iouThresholds.to(device)[None, :], as_tuple=True)
    covered[pairPred[pair], threshold] = True
    return covered


def _matchWithIgnored(preds, gts, gtIgnore, iouThresholds):
    """Greedy matching against the ordinary ground truths, then ignored detections (module docstring).
    Returns matchedGt (P, T) index into gts or -1, rank (P,), ignored (P, T) bool."""
    if gtIgnore is None or not bool(gtIgnore.any()):
        matchedGt, rank = _greedyMatch(preds, gts, iouThresholds)
        return matchedGt, rank, torch.zeros_like(matchedGt, dtype=torch.bool)
    regular = torch.nonzero(~gtIgnore)[:, 0]
    matchedRegular, rank = _greedyMatch(preds, gts[regular], iouThresholds)
    matchedGt = torch.where(matchedRegular >= 0, regular[matchedRegular.clamp(min=0)], -1)
    ignored = (matchedGt < 0) & _coversIgnored(preds, gts[gtIgnore], iouThresholds)
    return matchedGt, rank, ignored


def _checkIgnore(gtIgnore, gts):
    """None or a (G,) bool tensor on the CPU."""
    if gtIgnore is None:
        return None
    gtIgnore = torch.as_tensor(gtIgnore, dtype=torch.bool).reshape(-1).cpu()
    assert gtIgnore.shape[0] == gts.shape[0], (gtIgnore.shape, gts.shape)
    return gtIgnore


def matchDetections(preds, gts, iouThresholds):
    """Greedy pycocotools-style matching (see module docstring).

    Args:
        preds: (P, 7) float (imageIndex, classIndex, score, x0, y0, x1, y1), pixels xyxy.
        gts: (G, 6) float (imageIndex, classIndex, x0, y0, x1, y1), pixels xyxy.
        iouThresholds: (T,) IoU thresholds (tensor or sequence of floats).
    Returns:
        tp: (P, T) bool, in the input order of preds; True where the detection is a true positive.
    """
    preds, gts = _checkInputs(preds, gts)
    iouThresholds = torch.as_tensor(iouThresholds, dtype=torch.float64).reshape(-1)
    matchedGt, _ = _greedyMatch(preds, gts, iouThresholds)
    return matchedGt >= 0


def _vocAp(tpSorted, numGt):
    """All-point interpolated AP: tpSorted (n,) bool by descending score, numGt > 0 -> (AP, precision, recall)."""
    truePositives = torch.cumsum(tpSorted.double(), 0)  # (n,)
    precision = truePositives / torch.arange(1, tpSorted.shape[0] + 1, dtype=torch.float64, device=tpSorted.device)
    recall = truePositives / numGt
    envelope = torch.flip(torch.cummax(torch.flip(precision, [0]), 0).values, [0])  # (n,)
    ap = envelope[tpSorted].sum() / numGt  # each true positive adds 1/numGt of recall
    return ap, precision, recall


def _cocoAp(tpSorted, numGt, fpSorted=None):
    """101-point interpolated AP as COCOeval.accumulate: tpSorted (n, T) bool -> (T,) float64. fpSorted (n, T) bool:
    the false positives (default: every detection that is not a true positive; ignored detections are neither)."""
    numDets, numThresholds = tpSorted.shape
    if numDets == 0:
        return torch.zeros(numThresholds, dtype=torch.float64, device=tpSorted.device)
    fpSorted = ~tpSorted if fpSorted is None else fpSorted
    truePositives = torch.cumsum(tpSorted.double(), 0).T.contiguous()  # (T, n)
    falsePositives = torch.cumsum(fpSorted.double(), 0).T
    recall = truePositives / numGt
    precision = truePositives / (falsePositives + truePositives + torch.finfo(torch.float64).eps)
    envelope = torch.flip(torch.cummax(torch.flip(precision, [1]), 1).values, [1])  # (T, n)
    recallThresholds = COCO_RECALL_THRESHOLDS.to(tpSorted.device).expand(numThresholds, -1).contiguous()
    index = torch.searchsorted(recall, recallThresholds)  # (T, 101), side "left" as np.searchsorted
    sampled = torch.where(index < numDets, envelope.gather(1, index.clamp(max=numDets - 1)), 0.0)
    return sampled.mean(1)


def computeMap(preds, gts, nc, iouThresholds=None, maxDetsPerImage=100, vocIou=0.5, scoreThreshold=0.25,
               gtIgnore=None):
    """Per-class and mean AP, VOC and COCO style (definitions in the module docstring).

    Args:
        preds: (P, 7) float (imageIndex, classIndex, score, x0, y0, x1, y1), pixels xyxy.
        gts: (G, 6) float (imageIndex, classIndex, x0, y0, x1, y1), pixels xyxy.
        nc: number of classes; class indexes are in [0, nc).
        iouThresholds: (T,) COCO IoU thresholds; None = 0.50:0.05:0.95.
        maxDetsPerImage: COCO cap on detections per image and class (highest scores kept).
        vocIou: IoU threshold of the VOC AP, the curves and prAtThreshold.
        scoreThreshold: confidence threshold of prAtThreshold.
        gtIgnore: optional (G,) bool, True for ground truths to ignore (VOC difficult; see the module docstring).
    Returns a dict (tensors float64 on CPU; AP of a class without gt is NaN):
        "ap50Voc", "ap50Coco", "ap5095": (nc,) AP; "apCoco": (nc, T) COCO AP per IoU threshold;
        "iouThresholds": (T,); "numGt": (nc,) long; "hasGt": (nc,) bool;
        "mAP50" (VOC), "mAP50Coco", "mAP5095": floats, means over classes with gt (0.0 if none);
        "precision", "recall": lists of nc (n_c,) tensors, the raw curves at vocIou over the class's
            detections sorted by descending score (empty for a class without detections);
        "prAtThreshold": {"precision": (nc,), "recall": (nc,), "scoreThreshold": float} at vocIou over
            detections with score >= scoreThreshold (precision 0 without such detections, recall NaN
            without gt).
    """
    preds, gts = _checkInputs(preds, gts)
    preds, gts = preds.cpu(), gts.cpu()
    gtIgnore = _checkIgnore(gtIgnore, gts)
    if iouThresholds is None:
        iouThresholds = COCO_IOU_THRESHOLDS
    iouThresholds = torch.as_tensor(iouThresholds, dtype=torch.float64).reshape(-1)
    for name, tensor in (("preds", preds), ("gts", gts)):
        classes = tensor[:, 1]
        if tensor.shape[0] and (classes.min() < 0 or classes.max() >= nc):
            raise ValueError(f"{name} has class indexes in [{classes.min():.0f}, {classes.max():.0f}], expected [0, {nc})")

    matchedGt, rank, ignored = _matchWithIgnored(preds, gts, gtIgnore,
                                                 torch.cat([iouThresholds, iouThresholds.new_tensor([vocIou])]))
    tp = matchedGt >= 0  # (P, T + 1), last column at vocIou
    fp = ~tp & ~ignored
    counted = gts[:, 1] if gtIgnore is None else gts[~gtIgnore, 1]
    numGt = torch.bincount(counted.long(), minlength=nc)  # (nc,)
    hasGt = numGt > 0

    # detections ordered by (class, -score, image, input order), as COCOeval.accumulate and VOC sort them
    order = torch.sort(preds[:, 0], stable=True).indices
    order = order[torch.sort(-preds[order, 2], stable=True).indices]
    order = order[torch.sort(preds[order, 1], stable=True).indices]
    classCount = torch.bincount(preds[:, 1].long(), minlength=nc).tolist()

    nan = float("nan")
    ap50Voc = torch.full((nc,), nan, dtype=torch.float64)
    apCoco = torch.full((nc, iouThresholds.shape[0]), nan, dtype=torch.float64)
    thresholdPrecision = torch.zeros(nc, dtype=torch.float64)
    thresholdRecall = torch.full((nc,), nan, dtype=torch.float64)
    precisionCurves, recallCurves = [], []
    start = 0
    for classIndex in range(nc):
        classOrder = order[start:start + classCount[classIndex]]  # (n,) this class, descending score
        start += classCount[classIndex]
        classOrderAll = classOrder
        classOrder = classOrder[~ignored[classOrder, -1]]  # VOC: detections ignored at vocIou leave the list
        tpVoc = tp[classOrder, -1]
        aboveThreshold = preds[classOrder, 2] >= scoreThreshold
        numTpAbove = int(tpVoc[aboveThreshold].sum())
        thresholdPrecision[classIndex] = numTpAbove / max(int(aboveThreshold.sum()), 1)
        if not hasGt[classIndex]:
            precisionCurves.append(torch.zeros(0, dtype=torch.float64))
            recallCurves.append(torch.zeros(0, dtype=torch.float64))
            continue
        classGt = int(numGt[classIndex])
        ap50Voc[classIndex], precision, recall = _vocAp(tpVoc, classGt)
        precisionCurves.append(precision)
        recallCurves.append(recall)
        thresholdRecall[classIndex] = numTpAbove / classGt
        keep = classOrderAll[rank[classOrderAll] < maxDetsPerImage]  # the cap counts ignored detections too
        apCoco[classIndex] = _cocoAp(tp[keep, :-1], classGt, fp[keep, :-1])

    def meanOverGt(values):
        return float(values[hasGt].mean()) if bool(hasGt.any()) else 0.0

    isAp50 = torch.isclose(iouThresholds, iouThresholds.new_tensor(0.5))
    ap50Coco = apCoco[:, isAp50][:, 0] if bool(isAp50.any()) else torch.full((nc,), nan, dtype=torch.float64)
    ap5095 = apCoco.mean(1)
    return {
        "ap50Voc": ap50Voc,
        "ap50Coco": ap50Coco,
        "ap5095": ap5095,
        "apCoco": apCoco,
        "iouThresholds": iouThresholds,
        "numGt": numGt,
        "hasGt": hasGt,
        "mAP50": meanOverGt(ap50Voc),
        "mAP50Coco": meanOverGt(ap50Coco),
        "mAP5095": meanOverGt(ap5095),
        "precision": precisionCurves,
        "recall": recallCurves,
        "prAtThreshold": {"precision": thresholdPrecision, "recall": thresholdRecall, "scoreThreshold": scoreThreshold},
    }


def confusionMatrix(preds, gts, nc, iouThreshold=0.5, scoreThreshold=0.25, gtIgnore=None):
    """Detection confusion matrix with class-agnostic greedy matching.

    Detections with score >= scoreThreshold are matched per image, ignoring classes, in descending score
    order, each to the still-unmatched ground truth of highest IoU when that IoU >= iouThreshold (the
    same greedy rule as matchDetections).

    Ignored (VOC difficult) ground truths, gtIgnore, are treated as computeMap treats them (module docstring):
    detections are matched to the ordinary ground truths first, as above; a detection left unmatched whose
    IoU with an ignored ground truth of its image (any class, the matching being class-agnostic) is
    >= iouThreshold is dropped: neither a match nor a background false positive. As in the AP, an ignored
    ground truth can absorb any number of detections, and it is never counted as missed (no entry in the
    last row). Two differences from the AP remain: the matrix matches across classes, and it measures the
    plain IoU where the AP measures the crowd IoU (intersection / detection area), so a small detection
    inside a large ignored box that the AP ignores is a background false positive here.

    Args:
        preds: (P, 7) float (imageIndex, classIndex, score, x0, y0, x1, y1), pixels xyxy.
        gts: (G, 6) float (imageIndex, classIndex, x0, y0, x1, y1), pixels xyxy.
        nc: number of classes.
        iouThreshold: IoU of a match (and of a detection dropped on an ignored ground truth).
        scoreThreshold: detections below it are left out.
        gtIgnore: optional (G,) bool, True for ground truths to ignore (VOC difficult).
    Returns:
        (nc + 1, nc + 1) long tensor; rows = predicted class, columns = true class.
        [p, t]: a detection of class p matched a gt of class t (p == t correct, else confused);
        [p, nc] (last column, "background"): a detection of class p matched no gt and was not dropped
            on an ignored gt (false positive);
        [nc, t] (last row, "background"): an ordinary gt of class t matched by no detection (missed).
        So rows 0..nc-1 sum to the detections kept (score >= scoreThreshold, not dropped), and column t
        (t < nc) sums to the number of ordinary gts of class t (computeMap's numGt); [nc, nc] is 0.
    """
    preds, gts = _checkInputs(preds, gts)
    gtIgnore = _checkIgnore(gtIgnore, gts)
    preds = preds[preds[:, 2] >= scoreThreshold]
    if gtIgnore is not None:
        gtIgnore = gtIgnore.to(gts.device)
        ignoredGts, gts = gts[gtIgnore], gts[~gtIgnore]
    agnosticPreds, agnosticGts = preds.clone(), gts.clone()
    agnosticPreds[:, 1] = 0
    agnosticGts[:, 1] = 0
    thresholds = torch.tensor([iouThreshold], dtype=torch.float64, device=preds.device)
    matchedGt, _ = _greedyMatch(agnosticPreds, agnosticGts, thresholds)
    matchedGt = matchedGt[:, 0]  # (P,)
    if gtIgnore is not None:
        agnosticIgnored = ignoredGts.clone()
        agnosticIgnored[:, 1] = 0
        dropped = (matchedGt < 0) & _coversIgnored(agnosticPreds, agnosticIgnored, thresholds, crowd=False)[:, 0]
        preds, matchedGt = preds[~dropped], matchedGt[~dropped]
    predClass = preds[:, 1].long()
    gtClass = gts[:, 1].long()
    gtClassOrBackground = torch.cat([gtClass, gtClass.new_tensor([nc])])  # index -1 reads "background"
    trueClass = gtClassOrBackground[matchedGt]  # (P,)
    isMissed = torch.ones(gts.shape[0], dtype=torch.bool, device=gts.device)
    isMissed[matchedGt[matchedGt >= 0]] = False
    rows = torch.cat([predClass, torch.full_like(gtClass[isMissed], nc)])
    columns = torch.cat([trueClass, gtClass[isMissed]])
    counts = torch.bincount(rows * (nc + 1) + columns, minlength=(nc + 1) ** 2)
    return counts.reshape(nc + 1, nc + 1).cpu()
