"""mars.py end to end on the tiny demo: -pipe, -predict, resume, and one-line errors; -predict and -eval of a
hand-built model whose output is known exactly."""
import csv
import json
import math
import os
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def mars(*args, env=None):
    environment = dict(dict(os.environ, USER="tester"), **(env or {}))
    return subprocess.run([sys.executable, os.path.join(ROOT, "mars.py"), *args], capture_output=True, text=True,
                          env=environment, timeout=600)


@pytest.fixture(scope="module")
def tinyRun(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    result = mars("-cfg", "demo.nano.tiny", "-root", str(root), "-pipe")
    assert result.returncode == 0, result.stderr[-3000:]
    return root, result


@pytest.mark.slow
def test_pipe_leaves_its_files(tinyRun):
    root, result = tinyRun
    run = root / "tester" / "demo.nano.tiny"
    for name in ("__cache__/best_weights.pth", "__cache__/last_epoch_weights.pth", "__cache__/info.txt",
                 "results.csv", "curves.png", "log.txt", "eval/map_table.csv", "eval/pr_curve.png",
                 "eval/confusion_matrix.png"):
        assert (run / name).is_file(), name
    with open(run / "results.csv") as f:
        assert len(f.read().strip().splitlines()) == 1 + 2  # header + 2 epochs
    painted = os.listdir(run / "eval" / "painted")
    assert len(painted) == 8 and all(p.endswith(".jpg") for p in painted)
    lines = result.stdout.strip().splitlines()
    assert lines[-3].startswith("mAP50=") and lines[-2].startswith("errors (TIDE dAP"), lines[-4:]


@pytest.mark.slow
def test_predict_folder_and_image(tinyRun, tmp_path):
    root, _ = tinyRun
    images = next((root / "demo-data").iterdir()) / "images"
    folder = tmp_path / "new"
    folder.mkdir()
    for name in sorted(os.listdir(images))[:3]:
        (folder / name).write_bytes((images / name).read_bytes())
    result = mars("-cfg", "demo.nano.tiny", "-root", str(root), "-predict", str(folder))
    assert result.returncode == 0, result.stderr[-3000:]
    out = root / "tester" / "demo.nano.tiny" / "predict"
    records = json.loads((out / "detections.json").read_text())
    assert [os.path.basename(r["image"]) for r in records] == sorted(os.listdir(folder))
    for record in records:
        for det in record["detections"]:
            assert det["class"].startswith("A") and 0 <= det["score"] <= 1 and len(det["boxXyxy"]) == 4
    assert len([f for f in os.listdir(out) if f.endswith(".jpg")]) == 3


@pytest.mark.slow
def test_rerun_resumes_instead_of_restarting(tinyRun):
    root, _ = tinyRun
    result = mars("-cfg", "demo.nano.tiny", "-root", str(root), "-train")
    assert result.returncode == 0
    assert "training already finished" in result.stdout


@pytest.mark.parametrize("args, culprit", [
    (["-cfg", "nosuchfile.nano"], "cfgops/nosuchfile.py"),
    (["-cfg", "demo.nano.fulll"], "'fulll'"),
    # this one imports torch and writes the demo data before it stops: ~1.6 s
    pytest.param(["-cfg", "demo.nano.tiny", "-eval"], "best_weights.pth", marks=pytest.mark.slow),
    (["-cfg", "demo.nano.tiny", "-predict", "/no/such/image.jpg"], "/no/such/image.jpg"),
])
def test_errors_are_one_line(tmp_path, args, culprit):
    result = mars(*args, "-root", str(tmp_path))
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if "mars: error" in line]  # progress bars also go to stderr
    assert len(errors) == 1 and errors[0].startswith("mars: error: ") and culprit in errors[0], result.stderr
    assert result.stderr.strip().splitlines()[-1] == errors[0]
    assert "Traceback" not in result.stderr


def test_unknown_tag_lists_what_exists(tmp_path):
    result = mars("-cfg", "demo.nano.oops", "-root", str(tmp_path))
    assert result.returncode == 2 and "full" in result.stderr and "teacher" in result.stderr and "batch@N" in result.stderr


def test_missing_mar20_says_where_it_looked(tmp_path):
    result = mars("-cfg", "c1.nano.full.cpu", "-root", str(tmp_path), env={"MARS_DATA": str(tmp_path / "nowhere")})
    assert result.returncode == 2 and str(tmp_path / "nowhere") in result.stderr and "splits/v5" in result.stderr


def parseMap(stdout):
    """The `mAP50=0.123 mAP50-95=0.045` line -> (0.123, 0.045)."""
    found = re.search(r"^mAP50=(\d\.\d{3}) mAP50-95=(\d\.\d{3})$", stdout, re.MULTILINE)
    assert found, stdout[-2000:]
    return float(found.group(1)), float(found.group(2))


@pytest.mark.slow
def test_printed_map_is_the_evaluators(tinyRun):
    """The -pipe run's mAP50= line is the evaluator's value (its map_table.csv `all` row), not just a prefix."""
    root, result = tinyRun
    mAP50, mAP5095 = parseMap(result.stdout)
    with open(root / "tester" / "demo.nano.tiny" / "eval" / "map_table.csv") as f:
        rows = {row["class"]: row for row in csv.DictReader(f)}
    assert float(rows["all"]["AP50 VOC"]) == pytest.approx(mAP50, abs=5e-4)
    assert float(rows["all"]["AP50:95"]) == pytest.approx(mAP5095, abs=5e-4)


KNOWN_CFG = "c1.nano.full.cpu.size@64"  # network input 64 x 64: the stride-32 level is a 2 x 2 grid
KNOWN_STRIDE, KNOWN_SIZE = 32, 64
KNOWN_DIST = (0.5, 0.25, 0.5, 0.25)  # left, top, right, bottom in stride units: 32 x 16 input-pixel boxes
KNOWN_LOGITS = {"A3": 4.0, "A5": 2.0, "A7": -2.0}  # stride-32 class logits; every other class and level: -20
PAINT_SCORE = 0.25  # mcfg.reportScoreThreshold: A7 (sigmoid(-2) = 0.12) is evaluated but not in detections.json


def knownModel(mcfg):
    """A YoloModel whose output does not depend on the image: the last 1x1 conv of every head branch has zero weights,
    so its output is its bias at every cell. Box branch: per side (l, t, r, b) the DFL logits put mass 1 - d on bin 0
    and d on bin 1 (the other 14 bins at -30), so the decoded distance is d stride units. Class branch: logit -20
    (score 2e-9, below the 0.001 kept for NMS) except A3 +4, A5 +2 and A7 -2 on the stride-32 level."""
    import torch

    from model.base.yolomodel import YoloModel
    model = YoloModel(mcfg)
    assert model.strides[-1] == KNOWN_STRIDE and tuple(mcfg.inputShape) == (KNOWN_SIZE, KNOWN_SIZE)
    with torch.no_grad():
        for stride, box, cls in zip(model.strides, model.head.boxBranches, model.head.clsBranches):
            box[-1].weight.zero_()
            cls[-1].weight.zero_()
            boxBias = torch.full((4, mcfg.regMax), -30.0)
            for side, d in enumerate(KNOWN_DIST):
                boxBias[side, :2] = torch.tensor([math.log(1 - d), math.log(d)])
            box[-1].bias.copy_(boxBias.view(-1))  # channel side * regMax + bin, as dflDecode reshapes them
            cls[-1].bias.fill_(-20.0)
            if stride == KNOWN_STRIDE:
                for name, logit in KNOWN_LOGITS.items():
                    cls[-1].bias[mcfg.classList.index(name)] = logit
    return model


def knownDetections(h0, w0, minScore=0.0):
    """The known model's detections on an (h0, w0) image, worked out by hand: [(class, score, [x0, y0, x1, y1])] in
    original-image pixels. Each stride-32 cell (i, j) of the 64 x 64 input has its anchor at ((j + 0.5) * 32,
    (i + 0.5) * 32) and the box anchor -/+ KNOWN_DIST * 32; the four boxes of a class only touch (IoU 0), so NMS keeps
    them all. The letterbox scales the image by min(64 / h0, 64 / w0) and centres it (pad = (64 - size) // 2), so a
    box maps back as (x - padLeft) / scale, (y - padTop) / scale, clipped to the image."""
    scale = min(KNOWN_SIZE / h0, KNOWN_SIZE / w0)
    padLeft, padTop = (KNOWN_SIZE - round(w0 * scale)) // 2, (KNOWN_SIZE - round(h0 * scale)) // 2
    l, t, r, b = (d * KNOWN_STRIDE for d in KNOWN_DIST)
    boxes = []
    for i in range(KNOWN_SIZE // KNOWN_STRIDE):
        for j in range(KNOWN_SIZE // KNOWN_STRIDE):
            cx, cy = (j + 0.5) * KNOWN_STRIDE, (i + 0.5) * KNOWN_STRIDE
            x0, x1 = (min(max((x - padLeft) / scale, 0), w0) for x in (cx - l, cx + r))
            y0, y1 = (min(max((y - padTop) / scale, 0), h0) for y in (cy - t, cy + b))
            boxes.append([x0, y0, x1, y1])
    scores = {name: 1 / (1 + math.exp(-logit)) for name, logit in KNOWN_LOGITS.items()}
    return [(name, scores[name], box) for name in KNOWN_LOGITS if scores[name] >= minScore for box in boxes]


def writeKnownSet(root, shapes, missed=False):
    """A MAR20-layout test split of images of the given (h, w) whose ground truth is the known model's A3 and A5
    detections; with missed, each image also has two small A5 boxes in the empty band between the rows of
    detections (IoU 0 with every detection): objects the model misses."""
    from tests.helpers import writeVocSet

    images = {}
    for n, (h, w) in enumerate(shapes):
        known = [(name, box) for name, _, box in knownDetections(h, w) if name != "A7"]
        assert all(v == int(v) for _, box in known for v in box), "shapes must give integer boxes (VOC files, drawing)"
        objects = [(name, *(int(v) for v in box)) for name, box in known]
        if missed:
            objects += [("A5", x - 2, h // 2 - 2, x + 2, h // 2 + 2) for x in (w // 4, 3 * w // 4)]
        images["e{}".format(n)] = (h, w, objects)
    writeVocSet(str(root), images, ["A{}".format(i) for i in range(1, 21)], {})
    (root / "splits" / "v5").mkdir(parents=True)
    for name in ("train", "validation", "test", "small"):
        (root / "splits" / "v5" / (name + ".txt")).write_text("\n".join(images) + "\n")
    return root


EVAL_SHAPES = [(128, 128), (70, 128), (32, 32)]  # (h, w): shrunk 1/2; shrunk 1/2, 35 rows, pad top 14; enlarged 2x


@pytest.fixture(scope="module")
def knownRun(tmp_path_factory):
    """Data sets `exact` and `missed` (EVAL_SHAPES) and a run root whose c1.nano.full.cpu.size@64 run has the known
    model as its best weights, saved where the trainer saves them (no training)."""
    from cfgops import makeConfig
    from engine.checkpoint import BEST_FILE

    base = tmp_path_factory.mktemp("known")
    data = {"exact": writeKnownSet(base / "exact", EVAL_SHAPES),
            "missed": writeKnownSet(base / "missed", EVAL_SHAPES, missed=True)}
    root = str(base / "runs")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MARS_DATA", str(data["exact"]))
        mcfg = makeConfig(KNOWN_CFG, root, "tester")
    assert mcfg.reportScoreThreshold == PAINT_SCORE and mcfg.scoreThreshold > 1 / (1 + math.exp(20))
    os.makedirs(mcfg.cacheDir())
    knownModel(mcfg).save(os.path.join(mcfg.cacheDir(), BEST_FILE))
    return root, data


@pytest.mark.slow
def test_known_model_predicts_exact_boxes_through_the_cli(knownRun, tmp_path):
    """`-predict` on images twice the input size, wide (pad top) and tall (pad left), none of them 64 x 64: every
    detection in detections.json is the known model's (see knownModel, knownDetections) in original-image pixels,
    to 0.5 px: the letterbox scale and pad are undone and the boxes clipped; A7 (score 0.12) stays out (score >=
    reportScoreThreshold); each image is painted at its own size."""
    root, data = knownRun
    shapes = {"p0": (128, 128), "p1": (88, 160), "p2": (160, 88)}  # p1: scale 0.4, 35 rows, pad top 14 of 29
    folder = tmp_path / "new"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for stem, (h, w) in shapes.items():
        cv2.imwrite(str(folder / (stem + ".png")), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    result = mars("-cfg", KNOWN_CFG, "-root", root, "-predict", str(folder), env={"MARS_DATA": str(data["exact"])})
    assert result.returncode == 0, result.stderr[-3000:]
    out = os.path.join(root, "tester", KNOWN_CFG, "predict")
    with open(os.path.join(out, "detections.json")) as f:
        records = json.load(f)
    assert [os.path.basename(r["image"]) for r in records] == [stem + ".png" for stem in shapes]
    for (stem, (h, w)), record in zip(shapes.items(), records):
        expected = sorted(knownDetections(h, w, PAINT_SCORE), key=lambda d: (d[0], d[2][1], d[2][0]))
        found = sorted(record["detections"], key=lambda d: (d["class"], d["boxXyxy"][1], d["boxXyxy"][0]))
        assert len(found) == len(expected) == 8, (stem, found)
        for (name, score, box), det in zip(expected, found):
            assert det["class"] == name and det["classIndex"] == int(name[1:]) - 1, (stem, det)
            assert det["score"] == pytest.approx(score, abs=1e-4), (stem, det)
            assert det["boxXyxy"] == pytest.approx(box, abs=0.5), (stem, det, box)
        painted = cv2.imread(os.path.join(out, stem + ".jpg"))
        assert painted is not None and painted.shape == (h, w, 3), stem


@pytest.mark.slow
@pytest.mark.parametrize("dataSet, expectedMap50, expectedMap5095", [
    ("exact", 1.0, 1.0),  # every ground truth detected at IoU 1, no false positive
    # A3: AP 1; A5: 12 of 18 ground truths found, no false positive: VOC AP (all-point) = recall = 2/3, COCO AP
    # (101-point) = 67/101 (precision 1 at recall thresholds 0.00..0.66) at every IoU threshold; A7 has no gt
    ("missed", (1 + 2 / 3) / 2, (1 + 67 / 101) / 2),
], ids=["exact", "missed"])
def test_known_model_evaluates_to_a_known_map_through_the_cli(knownRun, monkeypatch, dataSet, expectedMap50,
                                                              expectedMap5095):
    """`-eval` of the known model (see knownModel) on a test split whose ground truth, in original-image pixels, is
    its detections (images shrunk, padded and enlarged by the letterbox): the printed mAP50= mAP50-95= line is the
    value worked out by hand and the evaluator's own value."""
    from engine.evaluator import Evaluator
    from cfgops import makeConfig
    from engine.checkpoint import BEST_FILE
    from model.base.yolomodel import YoloModel

    root, data = knownRun
    result = mars("-cfg", KNOWN_CFG, "-root", root, "-eval", env={"MARS_DATA": str(data[dataSet])})
    assert result.returncode == 0, result.stderr[-3000:]
    mAP50, mAP5095 = parseMap(result.stdout)
    assert mAP50 == pytest.approx(expectedMap50, abs=5e-4) and mAP5095 == pytest.approx(expectedMap5095, abs=5e-4)
    monkeypatch.setenv("MARS_DATA", str(data[dataSet]))
    mcfg = makeConfig(KNOWN_CFG, root, "tester")
    mcfg = mcfg.copy(dcore=0)
    expected = Evaluator(mcfg).evaluate(YoloModel(mcfg).load(os.path.join(mcfg.cacheDir(), BEST_FILE)), "test")
    assert mAP50 == pytest.approx(expected["mAP50"], abs=5e-4)
    assert mAP5095 == pytest.approx(expected["mAP5095"], abs=5e-4)
    assert expected["mAP50"] == pytest.approx(expectedMap50, abs=1e-6)
    assert expected["mAP5095"] == pytest.approx(expectedMap5095, abs=1e-6)
