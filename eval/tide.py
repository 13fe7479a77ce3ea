"""TIDE error breakdown (Bolya et al., "TIDE: A General Toolbox for Identifying Object Detection Errors", ECCV 2020),
vectorised in numpy; numbers equal those of the `tidecv` package 1.0.1 (TIDE().evaluate(gt, preds, mode=TIDE.BOX),
get_all_errors()) when it is fed the same boxes (see "Feeding tidecv" below). Written for Mars, no code from tidecv.

Inputs as eval/map.py's computeMap (original-image pixels, xyxy):
    preds: (P, 7) rows (imageIndex, classIndex, score, x0, y0, x1, y1)
    gts:   (G, 6) rows (imageIndex, classIndex, x0, y0, x1, y1)
    gtIgnore: optional (G,) bool, VOC <difficult> boxes (tidecv's ignore regions, Data.add_ignore_region)
Torch tensors or numpy arrays.

Units: every AP and dAP is in AP points (0..100), as tidecv reports them (Mars's computeMap reports fractions).

What TIDE does, step by step (fg = posThreshold 0.5, bg = bgThreshold 0.1; IoU as pycocotools' bbIou on xywh boxes,
w = x1 - x0, no "+1"):
  1. Per image, detections sorted by descending score (ties keep row order); only the first maxDets (100) of the
     image, over all classes together (pycocotools caps per image *and class*), take part; the rest are dropped.
  2. Matching, per image in that order: a detection takes the still-unused ordinary gt of its class with the highest
     IoU (equal IoU: the earlier gt row) when that IoU >= fg.
  3. Ignored gts (difficult, tidecv's ignore regions): an unmatched detection whose crowd IoU (intersection /
     detection area) with an ignored gt of its image and class is > fg (strictly; pycocotools uses >=) is ignored: it is
     not an AP data point. It still gets an error kind below (tidecv classifies ignored detections too), and can still
     be "fixed" into a true positive by a Cls / Loc fix. Ignored gts are no positives and take no part otherwise.
  4. Each unmatched detection (ignored ones included) gets exactly one error kind, the first that applies:
       the image has no ordinary gt                              -> Bkg
       bg <= max IoU with a same-class gt (used or not) <= fg    -> Loc  (target: that gt, earliest on ties)
       max IoU with an other-class gt >= fg                      -> Cls  (target: that gt)
       max IoU with a used same-class gt >= fg                   -> Dupe
       max IoU with any gt <= bg                                 -> Bkg
       otherwise                                                 -> Both (wrong class and 0.1 < IoU < 0.5)
     A Cls / Loc whose target is unused competes for it: of all Cls and Loc detections targeting one gt, only the
     highest scored (first in score order on ties) is the one its fix turns into a true positive; the target is
     "usable". An unused ordinary gt that is not usable is a Miss.
  5. dAP of a main error = max(mAP with all errors of that kind fixed - mAP, 0), each kind fixed alone:
       Cls: the best detection of its target becomes a true positive of the target's class, every other Cls detection
            is removed; Loc: the same in the detection's own class; Dupe, Bkg, Both: the detections are removed;
       Miss: the number of positives of the class drops by its missed gts.
     Special errors (not clamped): FalsePos: true positives get score 1, false positives score 0 (perfect precision);
     FalseNeg: the number of positives drops by all unmatched ordinary gts (perfect recall).
  6. AP per class (tidecv's ap.py): precision tp / (tp + fp) along descending score (a stable sort over tidecv's
     insertion order: images in order, detections by score; in a fixed set the error detections come before the true
     positives), monotone envelope, sampled at recall k / 100 (k = 0..100, numpy searchsorted "left", 0 past the end),
     mean * 100. A class with no positives has AP 0. mAP averages the classes that have at least one AP data point or
     one positive: a class with detections but no gt counts as 0 (COCO and computeMap leave it out); a class that a fix
     empties (no data point, no positive) leaves the mean.

Feeding tidecv (what this module equals): gt = Data(...); gt.add_image(i, ...) for every image of preds or gts in
ascending order first (tidecv evaluates only images its gt Data knows: detections on images it never saw are
dropped, while here they are background errors as in computeMap); then the gt rows in order, add_ground_truth(image,
class, xywh) or add_ignore_region(image, class, xywh) for difficult ones; detections add_detection(image, class,
score, xywh) in row order. Image and detection order only matter for equal scores.

Per class: tidecv's public API reports overall numbers only; its internals (TIDERun.ap_data, and the
ClassedAPDataObject that TIDERun.fix_errors returns) hold each class's AP, which perClassAp / perClassDAp report:
perClassDAp[kind][c] = AP of c with that kind fixed - AP of c (not clamped), NaN for classes outside the mean.
"""
import numpy as np

MAIN_ERRORS = ("Cls", "Loc", "Both", "Dupe", "Bkg", "Miss")
SPECIAL_ERRORS = ("FalsePos", "FalseNeg")
_TP, _CLS, _LOC, _BOTH, _DUPE, _BKG = range(6)
_CODE_NAMES = np.array(["TP", "Cls", "Loc", "Both", "Dupe", "Bkg", ""])  # index 6: dropped by maxDets
_RECALL_STEPS = np.arange(101) / 100  # as tidecv's [x / 100 for x in range(101)] (not numpy.linspace)


def _asArray(x, columns):
    if hasattr(x, "detach"):
        x = x.detach().cpu().double().numpy()
    x = np.asarray(x, dtype=np.float64)
    return x.reshape(0, columns) if x.size == 0 else x


def _bbIou(det, gt, crowd=False):
    """Paired IoU of xywh boxes (M, 4), (M, 4) -> (M,), pycocotools' bbIou arithmetic; crowd: intersection / det area."""
    width = np.minimum(det[:, 2] + det[:, 0], gt[:, 2] + gt[:, 0]) - np.maximum(det[:, 0], gt[:, 0])
    height = np.minimum(det[:, 3] + det[:, 1], gt[:, 3] + gt[:, 1]) - np.maximum(det[:, 1], gt[:, 1])
    intersection = width * height
    detArea = det[:, 2] * det[:, 3]
    union = detArea if crowd else detArea + gt[:, 2] * gt[:, 3] - intersection
    valid = (width > 0) & (height > 0)
    iou = np.zeros(det.shape[0])
    iou[valid] = intersection[valid] / union[valid]
    return iou


def _pairs(predKey, gtKey):
    """All (pred, gt) pairs with equal key, pred-major, gts in ascending index within a pred.
    Returns pairPred (m,), pairGt (m,), count (P,) pairs per pred."""
    gtOrder = np.argsort(gtKey, kind="stable")
    sortedKey = gtKey[gtOrder]
    first = np.searchsorted(sortedKey, predKey, "left")
    count = np.searchsorted(sortedKey, predKey, "right") - first
    pairPred = np.repeat(np.arange(predKey.shape[0]), count)
    start = np.cumsum(count) - count
    pairGt = gtOrder[first[pairPred] + np.arange(pairPred.shape[0]) - start[pairPred]]
    return pairPred, pairGt, count


def _segmentMax(values, count):
    """Per-pred maximum of pred-major pair values (0 for a pred without pairs) and the pair index of its first
    occurrence (numpy argmax; -1 without pairs). count (P,) pairs per pred."""
    numPreds = count.shape[0]
    best, where = np.zeros(numPreds), np.full(numPreds, -1)
    has = count > 0
    if not has.any():
        return best, where
    starts = (np.cumsum(count) - count)[has]
    best[has] = np.maximum.reduceat(values, starts)
    segment = np.repeat(np.arange(numPreds), count)
    position = np.where(values == best[segment], np.arange(values.shape[0]), values.shape[0])
    where[has] = np.minimum.reduceat(position, starts)
    return best, where


def _match(rows, predImage, gtRows, gtImage, classKey, posThreshold):
    """Greedy matching (step 2). rows (P, 7) in processing order, gtRows (g, 6) ordinary gts.
    Returns matchedGt (P,) index into gtRows or -1, and the all-pairs data (pairPred, pairGt, count, iou)."""
    numPreds = rows.shape[0]
    pairPred, pairGt, count = _pairs(predImage, gtImage)
    iou = _bbIou(rows[pairPred, 3:], gtRows[pairGt, 2:])
    sameClass = rows[pairPred, 1] == gtRows[pairGt, 1]
    matchedGt = np.full(numPreds, -1)
    taken = np.zeros(gtRows.shape[0], dtype=bool)
    candidate = np.nonzero(sameClass & (iou >= posThreshold))[0]
    if candidate.size:
        cPred, cGt, cIou = pairPred[candidate], pairGt[candidate], iou[candidate]
        # rank of each candidate pred within its (image, class) group: all groups step forward together
        preds = np.unique(cPred)  # ascending = processing order
        group = predImage[preds] * classKey + rows[preds, 1].astype(np.int64)
        order = np.argsort(group, kind="stable")
        groupStart = np.searchsorted(group[order], group[order], "left")
        rank = np.empty(preds.shape[0], dtype=np.int64)
        rank[order] = np.arange(preds.shape[0]) - groupStart
        pairRank = rank[np.searchsorted(preds, cPred)]
        byRank = np.argsort(pairRank, kind="stable")  # keeps pred-major, gt-ascending order inside a rank
        cPred, cGt, cIou, pairRank = cPred[byRank], cGt[byRank], cIou[byRank], pairRank[byRank]
        bounds = np.searchsorted(pairRank, np.arange(pairRank[-1] + 2))
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            p, g = cPred[lo:hi], cGt[lo:hi]
            value = np.where(taken[g], -1.0, cIou[lo:hi])
            newPred = np.ones(p.shape[0], dtype=bool)
            newPred[1:] = p[1:] != p[:-1]
            starts = np.nonzero(newPred)[0]
            best = np.maximum.reduceat(value, starts)
            segment = np.cumsum(newPred) - 1
            position = np.where(value == best[segment], np.arange(p.shape[0]), p.shape[0])
            first = np.minimum.reduceat(position, starts)
            ok = best >= posThreshold
            taken[g[first[ok]]] = True
            matchedGt[p[starts[ok]]] = g[first[ok]]
    return matchedGt, (pairPred, pairGt, count, iou, sameClass)


def _apPerClass(cls, score, isTrue, key, numGt, nc):
    """tidecv's APDataObject.get_ap for every class: entries (n,) -> (nc,) AP points (0 where numGt == 0)."""
    ap = np.zeros(nc)
    order = np.lexsort((key, -score, cls))
    cls, isTrue = cls[order], isTrue[order]
    bounds = np.searchsorted(cls, np.arange(nc + 1))
    for c in range(nc):
        if numGt[c] <= 0 or bounds[c] == bounds[c + 1]:
            continue
        hits = isTrue[bounds[c]:bounds[c + 1]]
        truePositives = np.cumsum(hits)
        precision = truePositives / np.arange(1, hits.shape[0] + 1)
        recall = truePositives / numGt[c]
        envelope = np.maximum.accumulate(precision[::-1])[::-1]
        index = np.searchsorted(recall, _RECALL_STEPS, "left")
        sampled = np.where(index < hits.shape[0], envelope[np.minimum(index, hits.shape[0] - 1)], 0.0)
        ap[c] = sum(sampled.tolist()) / 101 * 100
    return ap


def _evaluate(entries, numGt, allowed, nc):
    """(perClassAp (nc,) with NaN outside the mean, mAP) of a set of AP data points."""
    cls, score, isTrue, key = (np.concatenate(x) for x in zip(*entries))
    ap = _apPerClass(cls, score, isTrue, key, numGt, nc)
    inMean = allowed & ((np.bincount(cls, minlength=nc) > 0) | (numGt > 0))
    ap[~inMean] = np.nan
    return ap, (sum(ap[inMean].tolist()) / int(inMean.sum()) if inMean.any() else float("nan"))


def _imageLoss(numKept, predImage, predClass, rows, code, isError, ignored, isBest, target, gtClass, gtImage, missed,
               matched, numGt, allowed, baseMap, nc):
    """AP lost to each main kind in each image (tideBreakdown's perImage): {kind: (images (n,) int, loss (n,) float)}.
    loss = mAP with only that image's errors of that kind fixed (step 5's fix, the same AP data set as the kind's
    overall fix) - mAP; not clamped. Only the classes the fix touches are recomputed."""
    seq = np.arange(numKept)
    errorKept = isError & ~ignored
    # the AP data set with nothing fixed, laid out as the fixed sets lay it out (errors: key seq; TPs: seq + numKept)
    refMask = errorKept | matched
    refClass, refScore = predClass[refMask], rows[refMask, 2]
    refTrue, refKey = matched[refMask], seq[refMask] + numKept * matched[refMask]
    byClass = np.argsort(refClass, kind="stable")
    bounds = np.searchsorted(refClass[byClass], np.arange(nc + 1))
    classRows = [byClass[bounds[c]:bounds[c + 1]] for c in range(nc)]
    refAp = _apPerClass(refClass, refScore, refTrue, refKey, numGt, nc)
    count = np.bincount(refClass, minlength=nc)
    inMean = allowed & ((count > 0) | (numGt > 0))
    refSum, refN = float(np.nansum(refAp[inMean])), int(inMean.sum())

    def lossOf(removed, addClass, addScore, addKey, gtDrop):
        """mAP change when the detections seq `removed` leave and (addClass, addScore, addKey) join as TPs."""
        total, n = refSum, refN
        for c in np.unique(np.concatenate([predClass[removed], addClass, gtDrop])).tolist():
            rowsC = classRows[c]
            keep = rowsC[~np.isin(refKey[rowsC], removed)]
            mine = addClass == c
            score = np.concatenate([refScore[keep], addScore[mine]])
            isTrue = np.concatenate([refTrue[keep], np.ones(int(mine.sum()), bool)])
            key = np.concatenate([refKey[keep], addKey[mine]])
            gtCount = numGt[c] - int((gtDrop == c).sum())
            ap = _apPerClass(np.zeros(score.shape[0], np.int64), score, isTrue, key, np.array([gtCount]), 1)[0]
            was = bool(inMean[c])
            now = bool(allowed[c]) and (score.shape[0] > 0 or gtCount > 0)
            total += (ap if now else 0.0) - (refAp[c] if was else 0.0)
            n += int(now) - int(was)
        return (total / n if n else float("nan")) - baseMap

    result = {}
    empty = np.zeros(0, np.int64)
    for name, kind in (("Cls", _CLS), ("Loc", _LOC), ("Both", _BOTH), ("Dupe", _DUPE), ("Bkg", _BKG)):
        fixes = np.nonzero((code == kind) & isError)[0]
        images = np.unique(predImage[fixes])
        losses = []
        for image in images.tolist():
            mine = fixes[predImage[fixes] == image]
            turned = mine[isBest[mine]]
            turnedClass = gtClass[target[turned]] if kind == _CLS else predClass[turned]
            removed = mine[errorKept[mine]]
            losses.append(lossOf(removed, turnedClass, rows[turned, 2], turned, empty))
        result[name] = (images, np.array(losses, dtype=np.float64))
    images = np.unique(gtImage[missed])
    losses = [lossOf(empty, empty, np.zeros(0), empty, gtClass[missed & (gtImage == image)]) for image in images.tolist()]
    result["Miss"] = (images, np.array(losses, dtype=np.float64))
    return result


def tideBreakdown(preds, gts, nc, gtIgnore=None, maxDets=100, posThreshold=0.5, bgThreshold=0.1, perImage=False):
    """TIDE's error breakdown of detections against ground truths (module docstring: rules and units).

    Args:
        preds: (P, 7) (imageIndex, classIndex, score, x0, y0, x1, y1); gts: (G, 6) (imageIndex, classIndex, x0, y0,
            x1, y1); pixels, xyxy; classes 0..nc-1. gtIgnore: None or (G,) bool, difficult (ignored) gts.
        maxDets: detections per image (all classes together) that take part; posThreshold, bgThreshold: TIDE's
            foreground and background IoU.
    Returns: dict
        mAP: float, TIDE's mAP at IoU posThreshold, AP points (0..100); NaN when no class has data.
        dAP: {"Cls", "Loc", "Both", "Dupe", "Bkg", "Miss", "FalsePos", "FalseNeg": float} dAP points.
        counts: {"Cls", ..., "Miss": int} errors of each main kind (ignored detections included, as tidecv).
        perClassAp: (nc,) float AP points, NaN for classes left out of the mean.
        perClassDAp: {kind: (nc,) float} per-class AP change when that kind is fixed (not clamped), NaN as above.
        predError: (P,) str per detection in input order: "TP", one of the five detection error kinds, or "" when
            past maxDets. predIgnored: (P,) bool, detections ignored through a difficult gt.
        gtMissed: (G,) bool, the gts counted as Miss errors.
        predTarget: (P,) int, the gt row (input order) a Cls or Loc detection targets (step 4), -1 for the others.
        imageLoss (only with perImage): {kind: (images (n,) int, loss (n,) float)} for the six main kinds, the
            images with at least one error of that kind (ascending) and the AP points lost to it there: mAP with only
            that image's errors of that kind fixed (step 5's fix restricted to the image) - mAP, not clamped. When
            all of a kind's errors lie in one image its loss equals that kind's unclamped dAP. Cost: one AP per
            touched class per (image, kind).
    """
    preds, gts = _asArray(preds, 7), _asArray(gts, 6)
    numPreds, numGts = preds.shape[0], gts.shape[0]
    ignore = np.zeros(numGts, dtype=bool) if gtIgnore is None else np.asarray(
        gtIgnore.detach().cpu() if hasattr(gtIgnore, "detach") else gtIgnore, dtype=bool).reshape(-1)
    assert ignore.shape[0] == numGts, (ignore.shape, numGts)
    classes = np.concatenate([preds[:, 1], gts[:, 1]]).astype(np.int64)
    assert classes.size == 0 or (classes.min() >= 0 and classes.max() < nc), "class index outside 0..nc-1"
    # xywh as tidecv is fed (w = x1 - x0)
    preds = np.concatenate([preds[:, :5], preds[:, 5:7] - preds[:, 3:5]], 1)
    gts = np.concatenate([gts[:, :4], gts[:, 4:6] - gts[:, 2:4]], 1)

    # step 1: processing order (image, -score, row) and the maxDets cap
    image = preds[:, 0].astype(np.int64)
    order = np.lexsort((np.arange(numPreds), -preds[:, 2], image))
    imageStart = np.searchsorted(image[order], image[order], "left")
    order = order[np.arange(numPreds) - imageStart < maxDets]
    rows, predImage = preds[order], image[order]
    numKept = rows.shape[0]
    predClass = rows[:, 1].astype(np.int64)
    ordinary = np.nonzero(~ignore)[0]
    gtRows, gtImage = gts[ordinary], gts[ordinary, 0].astype(np.int64)
    gtClass = gtRows[:, 1].astype(np.int64)

    # step 2: matching
    matchedGt, (pairPred, pairGt, count, iou, sameClass) = _match(rows, predImage, gtRows, gtImage, nc, posThreshold)
    matched = matchedGt >= 0
    gtUsed = np.zeros(gtRows.shape[0], dtype=bool)
    gtUsed[matchedGt[matched]] = True

    # step 3: ignored detections
    ignored = np.zeros(numKept, dtype=bool)
    if ignore.any() and numKept:
        crowd = gts[ignore]
        crowdKey = crowd[:, 0].astype(np.int64) * nc + crowd[:, 1].astype(np.int64)
        cPred, cGt, _ = _pairs(predImage * nc + predClass, crowdKey)
        hit = _bbIou(rows[cPred, 3:], crowd[cGt, 2:], crowd=True) > posThreshold
        ignored = (np.bincount(cPred[hit], minlength=numKept) > 0) & ~matched

    # step 4: error kinds
    sameIou, sameAt = _segmentMax(iou * sameClass, count)
    otherIou, otherAt = _segmentMax(iou * ~sameClass, count)
    usedIou, _ = _segmentMax(iou * (sameClass & gtUsed[pairGt]), count)
    anyIou, _ = _segmentMax(iou, count)
    code = np.full(numKept, _TP)
    code[~matched] = np.select(
        [count == 0, (bgThreshold <= sameIou) & (sameIou <= posThreshold), otherIou >= posThreshold,
         usedIou >= posThreshold, anyIou <= bgThreshold], [_BKG, _LOC, _CLS, _DUPE, _BKG], _BOTH)[~matched]
    target = np.full(numKept, -1)
    target[code == _LOC] = pairGt[sameAt[code == _LOC]]
    target[code == _CLS] = pairGt[otherAt[code == _CLS]]
    competes = np.nonzero(target >= 0)[0]
    competes = competes[~gtUsed[target[competes]]]
    bestOf = np.full(gtRows.shape[0], numKept)
    np.minimum.at(bestOf, target[competes], competes)  # processing order: highest score, first on ties
    isBest = np.zeros(numKept, dtype=bool)
    isBest[competes] = bestOf[target[competes]] == competes
    usable = bestOf < numKept
    missed = ~gtUsed & ~usable

    # steps 5 and 6: AP data sets
    seq = np.arange(numKept)
    numGt = np.bincount(gtClass, minlength=nc)
    isError = ~matched
    errorKept = isError & ~ignored
    correct = (predClass[matched], rows[matched, 2], np.ones(int(matched.sum()), bool), seq[matched] + numKept)
    baseAp, baseMap = _evaluate([(predClass[~ignored], rows[~ignored, 2], matched[~ignored], seq[~ignored])],
                                numGt, np.ones(nc, bool), nc)
    allowed = ~np.isnan(baseAp)

    def score(entries, gtCount=numGt):
        return _evaluate(entries, gtCount, allowed, nc)

    def original(mask):
        return predClass[mask], rows[mask, 2], np.zeros(int(mask.sum()), bool), seq[mask]

    fixedSets = {}
    for name, kind in (("Cls", _CLS), ("Loc", _LOC), ("Both", _BOTH), ("Dupe", _DUPE), ("Bkg", _BKG)):
        fixes = (code == kind) & isError
        turned = fixes & isBest
        turnedClass = gtClass[target[turned]] if kind == _CLS else predClass[turned]
        fixedSets[name] = score([original(errorKept & ~fixes),
                                 (turnedClass, rows[turned, 2], np.ones(int(turned.sum()), bool), seq[turned]),
                                 correct])
    fixedSets["Miss"] = score([original(errorKept), correct], numGt - np.bincount(gtClass[missed], minlength=nc))
    fixedSets["FalsePos"] = score([(predClass[errorKept], np.zeros(int(errorKept.sum())),
                                    np.zeros(int(errorKept.sum()), bool), seq[errorKept]),
                                   (correct[0], np.ones_like(correct[1]), correct[2], correct[3])])
    fixedSets["FalseNeg"] = score([original(errorKept), correct],
                                  numGt - np.bincount(gtClass[~gtUsed], minlength=nc))

    dAP = {}
    for name, (_, fixedMap) in fixedSets.items():
        delta = fixedMap - baseMap
        dAP[name] = delta if name in SPECIAL_ERRORS or np.isnan(delta) else max(delta, 0.0)
    perClassDAp = {}
    for name, (fixedAp, _) in fixedSets.items():
        perClassDAp[name] = np.where(allowed, np.nan_to_num(fixedAp, nan=0.0) - baseAp, np.nan)

    predError = np.full(numPreds, "", dtype=_CODE_NAMES.dtype)
    predError[order] = _CODE_NAMES[code]
    predIgnored = np.zeros(numPreds, dtype=bool)
    predIgnored[order] = ignored
    gtMissed = np.zeros(numGts, dtype=bool)
    gtMissed[ordinary] = missed
    counts = {name: int(((code == kind) & isError).sum()) for name, kind in
              (("Cls", _CLS), ("Loc", _LOC), ("Both", _BOTH), ("Dupe", _DUPE), ("Bkg", _BKG))}
    counts["Miss"] = int(missed.sum())
    predTarget = np.full(numPreds, -1, dtype=np.int64)
    if len(ordinary):  # no ordinary gt: no detection has a target
        predTarget[order] = np.where(target >= 0, ordinary[np.maximum(target, 0)], -1)
    result = dict(mAP=baseMap, dAP={k: dAP[k] for k in MAIN_ERRORS + SPECIAL_ERRORS}, counts=counts,
                  perClassAp=baseAp, perClassDAp={k: perClassDAp[k] for k in MAIN_ERRORS + SPECIAL_ERRORS},
                  predError=predError, predIgnored=predIgnored, gtMissed=gtMissed, predTarget=predTarget)
    if perImage:
        result["imageLoss"] = _imageLoss(numKept, predImage, predClass, rows, code, isError, ignored, isBest, target,
                                         gtClass, gtImage, missed, matched, numGt, allowed, baseMap, nc)
    return result
