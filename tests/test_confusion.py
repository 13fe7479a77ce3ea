"""Tests of eval/map.confusionMatrix with ignored (VOC difficult) ground truths: the matrix treats them as the AP
does, a difficult box is never missed and a detection on it is dropped, not a background false positive."""

import pytest
import torch

from eval.map import computeMap, confusionMatrix
from tests.test_map import gt, pred, randomSet


def boxIou(boxA, boxB):
    """Plain IoU of two xyxy boxes (sequences of 4 floats), no +1."""
    width = max(0.0, min(boxA[2], boxB[2]) - max(boxA[0], boxB[0]))
    height = max(0.0, min(boxA[3], boxB[3]) - max(boxA[1], boxB[1]))
    intersection = width * height
    union = (boxA[2] - boxA[0]) * (boxA[3] - boxA[1]) + (boxB[2] - boxB[0]) * (boxB[3] - boxB[1]) - intersection
    return intersection / union if union > 0 else 0.0


def referenceMatrix(preds, gts, gtIgnore, nc, iouThreshold):
    """Plain-Python oracle of confusionMatrix at score threshold 0: per image, detections by descending score (ties
    in input order) take the untaken ordinary gt of highest IoU (any class, the later gt on a tie) when it is
    >= iouThreshold; an unmatched one with IoU >= iouThreshold against a difficult gt of its image is dropped.
    preds (P, 7), gts (G, 6), gtIgnore (G,) bool -> ((nc + 1, nc + 1) long matrix, number of dropped detections)."""
    matrix = torch.zeros((nc + 1, nc + 1), dtype=torch.long)
    predRows, gtRows, ignore = preds.tolist(), gts.tolist(), gtIgnore.tolist()
    numDropped = 0
    for image in sorted({int(row[0]) for row in predRows} | {int(row[0]) for row in gtRows}):
        regular = [row for row, flag in zip(gtRows, ignore) if int(row[0]) == image and not flag]
        difficult = [row for row, flag in zip(gtRows, ignore) if int(row[0]) == image and flag]
        detections = sorted((row for row in predRows if int(row[0]) == image), key=lambda row: -row[2])
        taken = [False] * len(regular)
        for det in detections:
            best, bestIou = -1, -1.0
            for index, row in enumerate(regular):
                iou = boxIou(det[3:], row[2:])
                if not taken[index] and iou >= bestIou:
                    best, bestIou = index, iou
            if best >= 0 and bestIou >= iouThreshold:
                taken[best] = True
                matrix[int(det[1]), int(regular[best][1])] += 1
            elif any(boxIou(det[3:], row[2:]) >= iouThreshold for row in difficult):
                numDropped += 1
            else:
                matrix[int(det[1]), nc] += 1
        for index, row in enumerate(regular):
            if not taken[index]:
                matrix[nc, int(row[1])] += 1
    return matrix, numDropped


def test_detection_on_difficult_box_is_dropped():
    """A difficult box with a detection on it: no background false positive and no missed entry."""
    gts = torch.tensor([gt(0, 0, (0, 0, 10, 10))], dtype=torch.float64)
    preds = torch.tensor([pred(0, 0, 0.9, (0, 0, 10, 11))], dtype=torch.float64)
    ignore = torch.tensor([True])
    assert confusionMatrix(preds, gts, 2, gtIgnore=ignore).tolist() == [[0, 0, 0], [0, 0, 0], [0, 0, 0]]
    # the difficult box left out as a ground truth (the evaluator's former call): a background false positive
    assert confusionMatrix(preds, gts[~ignore], 2).tolist() == [[0, 0, 1], [0, 0, 0], [0, 0, 0]]
    # not flagged: an ordinary match
    assert confusionMatrix(preds, gts, 2, gtIgnore=torch.tensor([False])).tolist() == [[1, 0, 0], [0, 0, 0],
                                                                                       [0, 0, 0]]
    # nothing on the difficult box: it is not missed either
    assert confusionMatrix(torch.zeros((0, 7)), gts, 2, gtIgnore=ignore).sum() == 0


def test_difficult_box_absorbs_any_detection_class_agnostic_plain_iou():
    """As the AP, a difficult box absorbs any number of detections; as the matrix's matching, of any class and by
    the plain IoU against iouThreshold (not the AP's crowd IoU)."""
    gts = torch.tensor([gt(0, 0, (0, 0, 100, 100)), gt(1, 0, (0, 0, 100, 100))], dtype=torch.float64)
    ignore = torch.tensor([True, False])
    preds = torch.tensor([
        pred(0, 0, 0.9, (0, 0, 100, 100)),
        pred(0, 0, 0.8, (2, 0, 100, 100)),  # a second detection on the same difficult box: dropped too
        pred(0, 1, 0.7, (0, 2, 100, 100)),  # another class: dropped (the matching is class-agnostic)
        pred(0, 0, 0.6, (0, 0, 50, 50)),  # inside the box, IoU 0.25 (crowd IoU 1): background false positive
        pred(1, 1, 0.9, (0, 0, 100, 100)),  # image 1: the ordinary box, class 0 predicted as class 1
    ], dtype=torch.float64)
    assert confusionMatrix(preds, gts, 2, gtIgnore=ignore).tolist() == [[0, 0, 1], [1, 0, 0], [0, 0, 0]]
    assert confusionMatrix(preds, gts, 2, iouThreshold=0.2, gtIgnore=ignore).tolist() == [[0, 0, 0], [1, 0, 0],
                                                                                          [0, 0, 0]]


def test_ordinary_box_is_matched_before_difficult_one():
    """An ordinary and a difficult box of the same class overlapping, two detections. The first detection overlaps
    the difficult box more (IoU 0.82) but also the ordinary one (0.67): it takes the ordinary box, and the second
    (IoU 0.43 with the ordinary box, 0.82 with the difficult one) is dropped on the difficult box. Matching both
    boxes at once would give the first detection the difficult box and leave the ordinary one missed."""
    gts = torch.tensor([gt(0, 0, (0, 0, 10, 10)), gt(0, 0, (3, 0, 13, 10))], dtype=torch.float64)
    ignore = torch.tensor([False, True])
    preds = torch.tensor([pred(0, 0, 0.9, (2, 0, 12, 10)), pred(0, 0, 0.8, (4, 0, 14, 10))], dtype=torch.float64)
    assert confusionMatrix(preds, gts, 1, gtIgnore=ignore).tolist() == [[1, 0], [0, 0]]
    # the ordinary box alone: the second detection is a background false positive
    assert confusionMatrix(preds, gts[:1], 1).tolist() == [[1, 1], [0, 0]]
    # AP's view is the same: one true positive, the second detection ignored
    result = computeMap(preds, gts, 1, scoreThreshold=0.0, gtIgnore=ignore)
    assert result["prAtThreshold"]["precision"].tolist() == [1.0] and result["prAtThreshold"]["recall"].tolist() == [1.0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_confusion_matrix_consistent_with_ap_on_random_set(seed):
    """30 random images, about 30 % of the gts difficult, score threshold 0, the AP's IoU 0.5."""
    preds, gts = randomSet(seed)
    ignore = torch.rand(gts.shape[0], generator=torch.Generator().manual_seed(seed + 100)) < 0.3
    nc = 5
    matrix = confusionMatrix(preds, gts, nc, 0.5, 0.0, gtIgnore=ignore)
    expected, numDropped = referenceMatrix(preds, gts, ignore, nc, 0.5)
    assert matrix.tolist() == expected.tolist()
    assert numDropped > 0 and not torch.equal(matrix, confusionMatrix(preds, gts[~ignore], nc, 0.5, 0.0))
    # diagonal + class confusions + background false positives = the detections not dropped on a difficult box
    assert int(matrix[:nc].sum()) == preds.shape[0] - numDropped
    # each ordinary gt is matched or missed exactly once: column totals = the AP's numGt; difficult gts nowhere
    result = computeMap(preds, gts, nc, scoreThreshold=0.0, gtIgnore=ignore)
    assert matrix[:, :nc].sum(0).tolist() == result["numGt"].tolist()
    assert int(matrix[:, :nc].sum()) == int((~ignore).sum()) and int(matrix[nc, nc]) == 0

    # one class: class-agnostic matching is the AP's matching, so the matrix holds the AP's counts at IoU 0.5
    oneClass, oneClassGts = preds.clone(), gts.clone()
    oneClass[:, 1], oneClassGts[:, 1] = 0, 0
    matrix = confusionMatrix(oneClass, oneClassGts, 1, 0.5, 0.0, gtIgnore=ignore)
    result = computeMap(oneClass, oneClassGts, 1, scoreThreshold=0.0, gtIgnore=ignore)
    numGt, numCounted = int(result["numGt"][0]), result["precision"][0].shape[0]  # AP's detections: TP + FP
    numTp = round(float(result["recall"][0][-1]) * numGt)
    assert int(matrix[0, 0]) == numTp and int(matrix[1, 0]) == numGt - numTp
    # the AP also ignores detections that cover a difficult box by crowd IoU only: never fewer FPs in the matrix
    assert int(matrix[0].sum()) >= numCounted
    plain = computeMap(oneClass, oneClassGts, 1, scoreThreshold=0.0, gtIgnore=torch.zeros_like(ignore))
    matrix = confusionMatrix(oneClass, oneClassGts, 1, 0.5, 0.0, gtIgnore=torch.zeros_like(ignore))
    assert int(matrix[0].sum()) == plain["precision"][0].shape[0] == preds.shape[0]
