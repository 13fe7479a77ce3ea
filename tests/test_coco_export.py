"""Evaluator.evaluate(outDir=...) writes its inputs in COCO's format (eval/coco.py): groundtruth.json and
detections.json, from which pycocotools' COCOeval recomputes the evaluator's mAP50-95 and COCO mAP50."""
import contextlib
import io
import json
import os

import numpy as np
import pytest

from engine.evaluator import Evaluator
from tests.helpers import FixedOutputModel, datasetConfig, requireOracle, writeImage

SHAPES = {"a.jpg": (64, 64), "b.jpg": (96, 160), "c.jpg": (120, 48)}  # (h, w): b and c letterboxed, scaled


def groundTruthFrom(detections, fileNames):
    """Objects per image made from the model's own detections (so the mAP is neither 0 nor 1): per image the
    best detection of class A, jittered by 1 px, and of class B, by 3 px, become ground truths, the next best one
    a difficult object; one more object nothing detects (a miss). -> {fileName: ([(name, x0, y0, x1, y1)],
    difficult indexes)}."""
    objects = {}
    for imageId, fileName in enumerate(fileNames, 1):
        h, w = SHAPES[fileName]
        mine = sorted((d for d in detections if d["image_id"] == imageId and d["bbox"][2] > 6 and d["bbox"][3] > 6),
                      key=lambda d: -d["score"])
        best = [next(d for d in mine if d["category_id"] == c) for c in (1, 2)]  # the best A and the best B
        best.append(next(d for d in mine if d not in best))
        rows = []
        for jitter, d in zip((1, 3, 0), best):
            x, y, bw, bh = d["bbox"]
            box = [x + jitter, y, x + bw + jitter, y + bh - jitter]
            box = [int(round(min(max(v, 0), limit))) for v, limit in zip(box, (w, h, w, h))]
            rows.append(("AB"[d["category_id"] - 1],) + tuple(box))
        rows.append(("A", 1, 1, 4, 4))  # a 3 x 3 object no detection covers well
        objects[fileName] = (rows, (2,))
    return objects


def cocoStats(gtPath, dtPath):
    requireOracle("pycocotools")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        cocoGt = COCO(gtPath)
        with open(dtPath) as f:
            cocoDt = cocoGt.loadRes(json.load(f))
        evaluator = COCOeval(cocoGt, cocoDt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats


@pytest.mark.slow
def test_coco_files_give_pycocotools_the_evaluators_map(tmp_path):
    root = str(tmp_path / "data")
    for fileName, shape in SHAPES.items():
        writeImage(root, fileName, [], shape=shape)
    mcfg = datasetConfig(root, list(SHAPES), reportScoreThreshold=0.5)
    model = FixedOutputModel(mcfg)  # its output depends neither on the image nor on the annotations

    # pass 1: the model's detections, turned into ground truth for pass 2
    first = str(tmp_path / "first")
    Evaluator(mcfg).evaluate(model, "train", outDir=first)
    with open(os.path.join(first, "detections.json")) as f:
        firstDetections = json.load(f)
    objects = groundTruthFrom(firstDetections, list(SHAPES))
    for fileName, shape in SHAPES.items():
        rows, difficult = objects[fileName]
        writeImage(root, fileName, rows, shape=shape, difficult=difficult)

    out = str(tmp_path / "eval")
    result = Evaluator(mcfg).evaluate(model, "train", outDir=out)
    with open(os.path.join(out, "groundtruth.json")) as f:
        gt = json.load(f)
    with open(os.path.join(out, "detections.json")) as f:
        detections = json.load(f)

    # structure: ids 1-based (image = dataset index + 1, category = class index + 1), boxes xywh in original pixels
    assert gt["images"] == [{"id": i, "file_name": name, "width": w, "height": h}
                            for i, (name, (h, w)) in enumerate(SHAPES.items(), 1)]
    assert gt["categories"] == [{"id": 1, "name": "A"}, {"id": 2, "name": "B"}]
    assert len(gt["annotations"]) == 4 * len(SHAPES)
    assert [a["id"] for a in gt["annotations"]] == list(range(1, 4 * len(SHAPES) + 1))
    for image in gt["images"]:
        rows, difficult = objects[image["file_name"]]
        mine = [a for a in gt["annotations"] if a["image_id"] == image["id"]]
        assert [a["iscrowd"] for a in mine] == [int(i in difficult) for i in range(len(rows))]
        for (name, x0, y0, x1, y1), a in zip(rows, mine):
            assert set(a) == {"id", "image_id", "category_id", "bbox", "area", "iscrowd", "segmentation"}
            assert a["segmentation"] == [[x0, y0, x1, y0, x1, y1, x0, y1]]
            assert a["category_id"] == "AB".index(name) + 1
            assert a["bbox"] == pytest.approx([x0, y0, x1 - x0, y1 - y0]) and a["area"] == pytest.approx(
                (x1 - x0) * (y1 - y0))
    assert detections == firstDetections  # the model's output does not depend on the annotations
    assert len(detections) > 30 and {d["image_id"] for d in detections} == {1, 2, 3}
    assert min(d["score"] for d in detections) >= mcfg.scoreThreshold
    assert min(d["score"] for d in detections) < mcfg.reportScoreThreshold  # all of them, not only the reported
    for d in detections:
        assert set(d) == {"image_id", "category_id", "bbox", "score"} and d["category_id"] in (1, 2)
        h, w = SHAPES[gt["images"][d["image_id"] - 1]["file_name"]]
        x, y, bw, bh = d["bbox"]
        assert 0 <= x and 0 <= y and bw >= 0 and bh >= 0 and x + bw <= w + 1e-3 and y + bh <= h + 1e-3
    wide = [d["bbox"] for d in detections if d["image_id"] == 2]
    assert max(x + bw for x, _, bw, _ in wide) > 64  # original pixels of the 160 px wide image, not the 64 px input

    stats = cocoStats(os.path.join(out, "groundtruth.json"), os.path.join(out, "detections.json"))
    assert 0.05 < result["mAP5095"] < 0.95, result["mAP5095"]  # a case where mistakes would show
    assert result["mAP5095"] == pytest.approx(stats[0], abs=1e-6)
    assert result["mAP50Coco"] == pytest.approx(stats[1], abs=1e-6)
    assert result["numGt"].sum() == 3 * len(SHAPES)  # the difficult ones are not counted
    assert np.isfinite(stats[0])


def tidecvOnFiles(gtPath, dtPath):
    """tidecv 1.0.1's own breakdown (the oracle) of the COCO files: (mAP50, {kind: dAP}) in AP points."""
    tidecv = requireOracle("tidecv")
    from tidecv import datasets
    with contextlib.redirect_stdout(io.StringIO()):
        tide = tidecv.TIDE()
        tide.evaluate(datasets.COCO(gtPath), datasets.COCOResult(dtPath), mode=tidecv.TIDE.BOX)
        errors = tide.get_all_errors()
    run = next(iter(tide.runs.values()))
    dAP = dict(errors["main"][next(iter(errors["main"]))], **errors["special"][next(iter(errors["special"]))])
    return run.ap, dAP


def test_errors_csv_equals_tidecv_on_the_eval_files(tmp_path):
    """errors.csv's overall row (eval/tide.py through the evaluator) equals tidecv's breakdown of the evaluation's own
    COCO files (difficult boxes as iscrowd: tidecv's ignore regions), every kind to 1e-6; each class row's dAP sum is
    finite where the class takes part; the printed line is the overall row."""
    import csv
    root = str(tmp_path / "data")
    for fileName, shape in SHAPES.items():
        writeImage(root, fileName, [], shape=shape)
    mcfg = datasetConfig(root, list(SHAPES), reportScoreThreshold=0.5)
    model = FixedOutputModel(mcfg)
    first = str(tmp_path / "first")
    Evaluator(mcfg).evaluate(model, "train", outDir=first)
    with open(os.path.join(first, "detections.json")) as f:
        objects = groundTruthFrom(json.load(f), list(SHAPES))
    for fileName, shape in SHAPES.items():
        rows, difficult = objects[fileName]
        writeImage(root, fileName, rows + [("B", 2, 40, 30, 60)], shape=shape, difficult=difficult)  # + a wrong-class gt

    out = str(tmp_path / "eval")
    result = Evaluator(mcfg).evaluate(model, "train", outDir=out)
    with open(os.path.join(out, "errors.csv")) as f:
        table = {row["class"]: row for row in csv.DictReader(f)}
    mAP, dAP = tidecvOnFiles(os.path.join(out, "groundtruth.json"), os.path.join(out, "detections.json"))
    overall = table["all"]
    assert float(overall["AP50"]) == pytest.approx(mAP, abs=1e-6)
    assert set(dAP) == {"Cls", "Loc", "Both", "Dupe", "Bkg", "Miss", "FalsePos", "FalseNeg"}
    for kind, value in dAP.items():
        assert float(overall["dAP " + kind]) == pytest.approx(value, abs=1e-6), kind
    assert sum(int(overall["count " + k]) for k in ("Cls", "Loc", "Both", "Dupe", "Bkg", "Miss")) > 0
    assert result["errors"]["mAP"] == pytest.approx(mAP, abs=1e-6)
    assert set(table) == {"all", "A", "B"}
