"""Tests of eval/map.py and eval/report.py: hand-worked cases and parity with pycocotools."""

import contextlib
import csv
import io
import math

import pytest
import torch

from eval.map import computeMap, confusionMatrix, matchDetections
from eval.report import formatTable, writeConfusionMatrix, writeReport
from tests.helpers import requireOracle

COCO_AP50_TWO_THIRDS = (51 * 1.0 + 50 * 2 / 3) / 101  # precision 1 up to recall 0.5, then 2/3


def pred(image, classIndex, score, box):
    return [image, classIndex, score, *box]


def gt(image, classIndex, box):
    return [image, classIndex, *box]


# ---------------------------------------------------------------- hand-worked cases


def test_duplicate_detection_is_false_positive():
    gts = torch.tensor([gt(0, 0, (0, 0, 10, 10)), gt(0, 0, (20, 20, 30, 30))])
    preds = torch.tensor([
        pred(0, 0, 0.9, (0, 0, 10, 10)),  # TP, gt 0
        pred(0, 0, 0.8, (1, 0, 10, 10)),  # duplicate of gt 0: FP (IoU 0.9 with a taken gt)
        pred(0, 0, 0.7, (20, 20, 30, 31)),  # TP at IoU 100/110 = 0.909, gt 1
    ])
    tp = matchDetections(preds, gts, [0.5, 0.95])
    assert tp.tolist() == [[True, True], [False, False], [True, False]]
    result = computeMap(preds, gts, nc=1)
    # precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1: VOC AP = 1/2 * 1 + 1/2 * 2/3
    assert result["ap50Voc"][0].item() == pytest.approx(5 / 6)
    assert result["ap50Coco"][0].item() == pytest.approx(COCO_AP50_TWO_THIRDS)
    assert result["mAP50"] == pytest.approx(5 / 6)
    assert result["precision"][0].tolist() == pytest.approx([1, 1 / 2, 2 / 3])
    assert result["recall"][0].tolist() == pytest.approx([1 / 2, 1 / 2, 1])


def test_voc_all_point_envelope():
    # 3 gts; detections by score: TP, FP, TP, FP, TP -> precision 1, 1/2, 2/3, 1/2, 3/5
    # envelope at the three TPs: 1, 2/3, 3/5 -> AP = (1 + 2/3 + 3/5) / 3
    gts = torch.tensor([gt(0, 0, (0, 0, 10, 10)), gt(0, 0, (20, 0, 30, 10)), gt(1, 0, (0, 0, 10, 10))])
    preds = torch.tensor([
        pred(0, 0, 0.9, (0, 0, 10, 10)),
        pred(0, 0, 0.8, (50, 50, 60, 60)),
        pred(0, 0, 0.7, (20, 0, 30, 10)),
        pred(1, 0, 0.6, (40, 40, 50, 50)),
        pred(1, 0, 0.5, (0, 0, 10, 10)),
    ])
    result = computeMap(preds, gts, nc=1)
    assert result["ap50Voc"][0].item() == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    # 101-point: 1 for recall <= 1/3 (34 points), 2/3 up to 2/3 (33 points), 3/5 up to 1 (34 points)
    assert result["ap50Coco"][0].item() == pytest.approx((34 + 33 * 2 / 3 + 34 * 3 / 5) / 101)
    assert result["prAtThreshold"]["precision"][0].item() == pytest.approx(3 / 5)
    assert result["prAtThreshold"]["recall"][0].item() == pytest.approx(1.0)


def test_best_unmatched_gt_is_taken():
    # pycocotools semantics: the second detection's best gt is taken, so it matches the other gt (IoU 0.6)
    gts = torch.tensor([gt(0, 0, (0, 0, 10, 10)), gt(0, 0, (4, 0, 14, 10))])
    preds = torch.tensor([pred(0, 0, 0.9, (0, 0, 10, 10)), pred(0, 0, 0.8, (1, 0, 11, 10))])
    # IoU(det 1, gt 0) = 90/110 = 0.82, IoU(det 1, gt 1) = 70/130 = 0.54
    assert matchDetections(preds, gts, [0.5, 0.6]).tolist() == [[True, True], [True, False]]


def test_score_ties_keep_input_order():
    gts = torch.tensor([gt(0, 0, (0, 0, 10, 10))])
    preds = torch.tensor([pred(0, 0, 0.5, (0, 0, 10, 16)), pred(0, 0, 0.5, (0, 0, 10, 10))])
    assert matchDetections(preds, gts, [0.5]).tolist() == [[True], [False]]


def test_class_without_gt_and_image_without_gt():
    gts = torch.tensor([gt(0, 0, (0, 0, 10, 10))])
    preds = torch.tensor([
        pred(0, 0, 0.9, (0, 0, 10, 10)),
        pred(1, 0, 0.95, (0, 0, 10, 10)),  # image 1 has no gt: FP
        pred(0, 2, 0.9, (0, 0, 10, 10)),  # class 2 has no gt anywhere
    ])
    result = computeMap(preds, gts, nc=3)
    assert result["hasGt"].tolist() == [True, False, False]
    assert result["numGt"].tolist() == [1, 0, 0]
    assert math.isnan(result["ap50Voc"][1]) and math.isnan(result["ap5095"][2])
    assert result["ap50Voc"][0].item() == pytest.approx(0.5)  # FP first, then TP: precision 1/2 at recall 1
    assert result["mAP50"] == pytest.approx(0.5)  # classes without gt are left out of the mean


def test_no_predictions_and_no_gt():
    gts = torch.tensor([gt(0, 0, (0, 0, 10, 10)), gt(0, 1, (0, 0, 10, 10))])
    result = computeMap(torch.zeros((0, 7)), gts, nc=3)
    assert result["ap50Voc"][:2].tolist() == [0.0, 0.0]
    assert result["mAP50"] == 0.0 and result["mAP5095"] == 0.0 and result["mAP50Coco"] == 0.0
    preds = torch.tensor([pred(0, 0, 0.9, (0, 0, 10, 10))])
    result = computeMap(preds, torch.zeros((0, 6)), nc=3)
    assert not result["hasGt"].any() and result["mAP50"] == 0.0 and result["mAP5095"] == 0.0
    assert matchDetections(torch.zeros((0, 7)), gts, [0.5]).shape == (0, 1)
    assert computeMap(torch.zeros((0, 7)), torch.zeros((0, 6)), nc=2)["mAP50"] == 0.0


def test_bad_class_index_raises():
    with pytest.raises(ValueError, match="class indexes"):
        computeMap(torch.tensor([pred(0, 5, 0.9, (0, 0, 1, 1))]), torch.zeros((0, 6)), nc=2)


def test_confusion_matrix():
    gts = torch.tensor([
        gt(0, 0, (0, 0, 10, 10)),
        gt(0, 1, (20, 0, 30, 10)),
        gt(1, 1, (0, 0, 10, 10)),  # missed
    ])
    preds = torch.tensor([
        pred(0, 0, 0.9, (0, 0, 10, 10)),  # correct class 0
        pred(0, 0, 0.8, (20, 0, 30, 10)),  # class 1 predicted as 0
        pred(0, 0, 0.7, (0, 0, 10, 10)),  # duplicate: false positive
        pred(1, 1, 0.9, (50, 50, 60, 60)),  # false positive
        pred(1, 1, 0.1, (0, 0, 10, 10)),  # below the score threshold: ignored
    ])
    matrix = confusionMatrix(preds, gts, nc=2)
    assert matrix.tolist() == [
        [1, 1, 1],
        [0, 0, 1],
        [0, 1, 0],
    ]
    assert confusionMatrix(torch.zeros((0, 7)), gts, nc=2).tolist() == [[0, 0, 0], [0, 0, 0], [1, 2, 0]]


def test_report_files(tmp_path):
    gts = torch.tensor([gt(0, 0, (0, 0, 10, 10)), gt(0, 0, (20, 20, 30, 30)), gt(1, 1, (0, 0, 10, 10))])
    preds = torch.tensor([
        pred(0, 0, 0.9, (0, 0, 10, 10)),
        pred(0, 0, 0.8, (1, 0, 10, 10)),
        pred(0, 0, 0.7, (20, 20, 30, 31)),
        pred(1, 1, 0.6, (0, 0, 10, 10)),
    ])
    result = computeMap(preds, gts, nc=3)
    classList = ["A1", "A2", "A3"]
    table = writeReport(result, classList, str(tmp_path / "eval"))
    assert (tmp_path / "eval" / "pr_curve.png").stat().st_size > 0
    with open(tmp_path / "eval" / "map_table.csv") as file:
        rows = list(csv.reader(file))
    assert rows[0][0] == "class" and [row[0] for row in rows[1:]] == ["A1", "A2", "A3", "all"]
    assert float(rows[1][4]) == pytest.approx(5 / 6) and rows[3][4] == ""
    assert float(rows[4][4]) == pytest.approx((5 / 6 + 1) / 2)
    lines = table.splitlines()
    assert "no gt" in lines[3]
    assert lines[-1] == f"mAP50={(5 / 6 + 1) / 2:.3f} mAP50-95={result['mAP5095']:.3f}"
    assert formatTable(result, classList) == table
    writeConfusionMatrix(confusionMatrix(preds, gts, nc=3), classList, str(tmp_path / "cm.png"))
    assert (tmp_path / "cm.png").stat().st_size > 0
    with pytest.raises(ValueError, match="classList"):
        formatTable(result, ["A1"])


# ---------------------------------------------------------------- parity with pycocotools


def cocoEval(preds, gts, numImages, nc, gtIgnore=None):
    """pycocotools AP: returns (stats[0], stats[1], per-class AP50:95 (nc,), per-class AP50 (nc,)); -1 = no gt.
    gtIgnore: (G,) bool, ground truths given to pycocotools as iscrowd (its ignore semantics)."""
    requireOracle("pycocotools")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def xywh(box):
        x0, y0, x1, y1 = box
        return [x0, y0, x1 - x0, y1 - y0]

    annotations = []
    for index, row in enumerate(gts.tolist()):
        box = xywh(row[2:])
        annotations.append({"id": index + 1, "image_id": int(row[0]) + 1, "category_id": int(row[1]) + 1,
                            "bbox": box, "area": box[2] * box[3],
                            "iscrowd": int(gtIgnore[index]) if gtIgnore is not None else 0})
    cocoGt = COCO()
    cocoGt.dataset = {
        "images": [{"id": i + 1, "width": 1000, "height": 1000} for i in range(numImages)],
        "categories": [{"id": c + 1, "name": str(c)} for c in range(nc)],
        "annotations": annotations,
    }
    detections = [{"image_id": int(row[0]) + 1, "category_id": int(row[1]) + 1, "score": row[2], "bbox": xywh(row[3:])}
                  for row in preds.tolist()]
    with contextlib.redirect_stdout(io.StringIO()):
        cocoGt.createIndex()
        cocoDt = cocoGt.loadRes(detections)
        evaluator = COCOeval(cocoGt, cocoDt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    precision = torch.from_numpy(evaluator.eval["precision"][:, :, :, 0, -1])  # (T, R, K), maxDets 100, area all
    perClass5095 = torch.where(precision[0, 0] > -1, precision.mean((0, 1)), -1.0)
    perClass50 = torch.where(precision[0, 0] > -1, precision[0].mean(0), -1.0)
    return evaluator.stats[0], evaluator.stats[1], perClass5095, perClass50


def randomSet(seed, numImages=30, nc=5, classWithoutGt=None, scoreDecimals=None):
    """Random gts and predictions: jittered copies (some missing, some duplicated) plus random false positives."""
    generator = torch.Generator().manual_seed(seed)
    gts, preds = [], []
    for image in range(numImages):
        numObjects = int(torch.randint(0, 8, (1,), generator=generator))
        for _ in range(numObjects):
            classIndex = int(torch.randint(0, nc, (1,), generator=generator))
            if classIndex == classWithoutGt:
                continue
            x0, y0 = (torch.rand(2, generator=generator) * 400).tolist()
            w, h = (torch.rand(2, generator=generator) * 80 + 10).tolist()
            gts.append(gt(image, classIndex, (x0, y0, x0 + w, y0 + h)))
            for _ in range(int(torch.randint(0, 3, (1,), generator=generator))):  # 0, 1 or 2 (duplicate) copies
                jitter = (torch.randn(4, generator=generator) * 0.12 * torch.tensor([w, h, w, h])).tolist()
                box = (x0 + jitter[0], y0 + jitter[1], x0 + w + jitter[2], y0 + h + jitter[3])
                wrongClass = float(torch.rand(1, generator=generator)) < 0.1
                predClass = int(torch.randint(0, nc, (1,), generator=generator)) if wrongClass else classIndex
                preds.append(pred(image, predClass, float(torch.rand(1, generator=generator)), box))
        for _ in range(int(torch.randint(0, 4, (1,), generator=generator))):  # false positives
            x0, y0 = (torch.rand(2, generator=generator) * 400).tolist()
            w, h = (torch.rand(2, generator=generator) * 80 + 10).tolist()
            classIndex = int(torch.randint(0, nc, (1,), generator=generator))
            preds.append(pred(image, classIndex, float(torch.rand(1, generator=generator)), (x0, y0, x0 + w, y0 + h)))
    preds = torch.tensor(preds, dtype=torch.float64).reshape(-1, 7)
    if scoreDecimals is not None:  # many ties in score
        preds[:, 2] = torch.round(preds[:, 2], decimals=scoreDecimals)
    return preds, torch.tensor(gts, dtype=torch.float64).reshape(-1, 6)


def assertCocoParity(preds, gts, numImages, nc, gtIgnore=None):
    stats0, stats1, perClass5095, perClass50 = cocoEval(preds, gts, numImages, nc, gtIgnore)
    result = computeMap(preds, gts, nc, gtIgnore=gtIgnore)
    hasGt = result["hasGt"]
    assert (perClass5095 > -1).tolist() == hasGt.tolist()
    assert torch.allclose(result["ap5095"][hasGt], perClass5095[hasGt], atol=1e-6, rtol=0)
    assert torch.allclose(result["ap50Coco"][hasGt], perClass50[hasGt], atol=1e-6, rtol=0)
    assert result["mAP5095"] == pytest.approx(stats0, abs=1e-3)
    assert result["mAP50Coco"] == pytest.approx(stats1, abs=1e-3)
    return result


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_coco_parity_random(seed):
    preds, gts = randomSet(seed, scoreDecimals=1 if seed == 3 else None)
    assertCocoParity(preds, gts, numImages=30, nc=5)


def test_coco_parity_class_without_gt():
    preds, gts = randomSet(10, classWithoutGt=4)
    assert (preds[:, 1] == 4).any() and not (gts[:, 1] == 4).any()
    result = assertCocoParity(preds, gts, numImages=30, nc=5)
    assert not result["hasGt"][4] and math.isnan(result["ap5095"][4])


def test_coco_parity_duplicates():
    preds, gts = randomSet(20)
    duplicates = preds.clone()
    duplicates[:, 2] *= 0.9
    duplicates[:, 3:] += 1.0
    assertCocoParity(torch.cat([preds, duplicates]), gts, numImages=30, nc=5)


def test_coco_parity_max_dets():
    # 150 detections of one class in one image: pycocotools keeps the 100 best per image and class
    generator = torch.Generator().manual_seed(5)
    corners = torch.rand(20, 2, generator=generator) * 900
    gts = torch.cat([torch.zeros(20, 2), corners, corners + 40], 1).double()
    copies = gts[torch.randint(0, 20, (150,), generator=generator)]
    boxes = copies[:, 2:] + torch.randn(150, 4, generator=generator).double() * 4
    scores = torch.rand(150, 1, generator=generator).double()
    preds = torch.cat([torch.zeros(150, 2, dtype=torch.float64), scores, boxes], 1)
    preds = torch.cat([preds, torch.tensor([pred(1, 0, 0.5, (0, 0, 10, 10))], dtype=torch.float64)])  # image 1
    result = assertCocoParity(preds, gts, numImages=2, nc=1)
    uncapped = computeMap(preds, gts, nc=1, maxDetsPerImage=1000)
    assert uncapped["ap5095"][0] != result["ap5095"][0]  # the cap matters in this case


# ---------------------------------------------------------------- ignored ground truths (VOC difficult)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_coco_parity_with_ignored_gts(seed):
    """Difficult objects = pycocotools' iscrowd: detections on them are neither TP nor FP, they are not counted."""
    preds, gts = randomSet(seed)
    gtIgnore = torch.rand(gts.shape[0], generator=torch.Generator().manual_seed(seed)) < 0.3
    result = assertCocoParity(preds, gts, numImages=30, nc=5, gtIgnore=gtIgnore)
    plain = computeMap(preds, gts, 5)
    assert result["numGt"].sum() == (~gtIgnore).sum() and plain["numGt"].sum() == gts.shape[0]
    assert result["mAP5095"] != pytest.approx(plain["mAP5095"], abs=1e-4)  # the flags change the numbers


def test_detection_on_ignored_gt_counts_neither_way():
    """One regular and one difficult object, a detection on each, the one on the difficult object scored higher:
    ignored, it leaves AP at 1.0; a false positive there would halve the VOC AP."""
    gts = torch.tensor([gt(0, 0, (0, 0, 10, 10)), gt(0, 0, (50, 50, 60, 60))], dtype=torch.float64)
    preds = torch.tensor([pred(0, 0, 0.9, (50, 50, 60, 60)), pred(0, 0, 0.8, (0, 0, 10, 10))], dtype=torch.float64)
    ignore = torch.tensor([False, True])
    result = computeMap(preds, gts, 1, gtIgnore=ignore)
    assert result["numGt"].tolist() == [1]
    assert result["mAP50"] == pytest.approx(1.0) and result["mAP5095"] == pytest.approx(1.0)
    assert computeMap(preds, gts, 1)["numGt"].tolist() == [2]
    # the difficult box ignored as a ground truth would make the first detection a false positive: AP 0.5
    assert computeMap(preds, gts[:1], 1)["mAP50"] == pytest.approx(0.5)
