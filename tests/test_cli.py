"""mars.py end to end on the tiny demo: -pipe, -predict, resume, and one-line errors."""
import csv
import json
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
    assert result.stdout.strip().splitlines()[-2].startswith("mAP50=")


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


def test_rerun_resumes_instead_of_restarting(tinyRun):
    root, _ = tinyRun
    result = mars("-cfg", "demo.nano.tiny", "-root", str(root), "-train")
    assert result.returncode == 0
    assert "training already finished" in result.stdout


@pytest.mark.parametrize("args, culprit", [
    (["-cfg", "nosuchfile.nano"], "cfgops/nosuchfile.py"),
    (["-cfg", "demo.nano.fulll"], "'fulll'"),
    (["-cfg", "demo.nano.tiny", "-eval"], "best_weights.pth"),
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


def test_printed_map_is_the_evaluators(tinyRun):
    """The -pipe run's mAP50= line is the evaluator's value (its map_table.csv `all` row), not just a prefix."""
    root, result = tinyRun
    mAP50, mAP5095 = parseMap(result.stdout)
    with open(root / "tester" / "demo.nano.tiny" / "eval" / "map_table.csv") as f:
        rows = {row["class"]: row for row in csv.DictReader(f)}
    assert float(rows["all"]["AP50 VOC"]) == pytest.approx(mAP50, abs=5e-4)
    assert float(rows["all"]["AP50:95"]) == pytest.approx(mAP5095, abs=5e-4)


def boxIou(a, b):
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return w * h / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h)


def squares(count, seed):
    """count 64x64 images of one A1 (red) or A2 (blue) square of random size and place."""
    rng = np.random.default_rng(seed)
    images = {}
    for i in range(count):
        side = int(rng.integers(18, 30))
        x0, y0 = (int(v) for v in rng.integers(2, 62 - side, 2))
        images["s{:02d}".format(i)] = (64, 64, [("A1" if i % 2 == 0 else "A2", x0, y0, x0 + side, y0 + side)])
    return images


def test_trained_model_predicts_and_evaluates_through_the_cli(tmp_path, monkeypatch):
    """A MAR20-layout set of red (A1) and blue (A2) squares; a nano model trained in-process (c1.nano.full.cpu.size@64,
    ~10 s) and saved as that run's best weights. Through mars.py: `-predict` finds, in copies of the images twice the
    size, a box inside the image that overlaps the square (IoU >= 0.5 in original-image pixels: the letterbox is
    undone); `-eval`'s mAP50= line equals the evaluator's own value on the test split (the learnt images) and is above
    a floor."""
    import torch

    from engine.evaluator import Evaluator
    from engine.trainer.base import BaseTrainer
    from factory.configfactory import makeConfig
    from model.base.yolomodel import YoloModel
    from tests.helpers import writeVocSet
    from train.loss import DetectionLoss

    images = squares(16, 0)
    data = tmp_path / "data"
    writeVocSet(str(data), images, ["A{}".format(i) for i in range(1, 21)], {})
    (data / "splits" / "v5").mkdir(parents=True)
    for name in ("train", "validation", "test", "small"):
        (data / "splits" / "v5" / (name + ".txt")).write_text("\n".join(images) + "\n")
    monkeypatch.setenv("MARS_DATA", str(data))
    cfg, root = "c1.nano.full.cpu.size@64", str(tmp_path / "runs")
    mcfg = makeConfig(cfg, root, "tester")
    mcfg.subsetMap = dict(mcfg.subsetMap, learnt=str(tmp_path / "learnt.txt"))
    (tmp_path / "learnt.txt").write_text("\n".join(list(images) * 4) + "\n")
    mcfg.trainSplitName, mcfg.batchSize, mcfg.maxEpoch, mcfg.augment, mcfg.dcore = "learnt", 8, 10, True, 0
    mcfg.warmupEpochs, mcfg.baseLearningRate, mcfg.minLearningRate, mcfg.evalEveryEpochs = 0.0, 0.02, 0.002, 0
    mcfg.epochValidation = False
    torch.manual_seed(0)
    BaseTrainer(mcfg, YoloModel(mcfg), DetectionLoss).run()

    folder = tmp_path / "new"
    folder.mkdir()
    stems = list(images)[:3]
    for stem in stems:  # twice the size: the letterbox (scale 1/2) must be undone in the output boxes
        image = cv2.imread(str(data / "images" / (stem + ".jpg")))
        cv2.imwrite(str(folder / (stem + ".png")), cv2.resize(image, (128, 128), interpolation=cv2.INTER_NEAREST))
    result = mars("-cfg", cfg, "-root", root, "-predict", str(folder))
    assert result.returncode == 0, result.stderr[-3000:]
    records = json.loads((tmp_path / "runs" / "tester" / cfg / "predict" / "detections.json").read_text())
    assert [os.path.basename(r["image"]) for r in records] == [s + ".png" for s in stems]
    for stem, record in zip(stems, records):
        _, _, [(name, *square)] = images[stem]
        square = [2 * v for v in square]
        boxes = [det["boxXyxy"] for det in record["detections"]]
        assert boxes, stem
        for x0, y0, x1, y1 in boxes:
            assert 0 <= x0 < x1 <= 128 and 0 <= y0 < y1 <= 128, (stem, boxes)
        assert max(boxIou(box, square) for box in boxes) >= 0.5, (stem, boxes, square)

    result = mars("-cfg", cfg, "-root", root, "-eval")
    assert result.returncode == 0, result.stderr[-3000:]
    mAP50, mAP5095 = parseMap(result.stdout)
    expected = Evaluator(mcfg).evaluate(YoloModel(mcfg).load(os.path.join(mcfg.cacheDir(), "best_weights.pth")), "test")
    assert mAP50 == pytest.approx(expected["mAP50"], abs=5e-4) and mAP5095 == pytest.approx(expected["mAP5095"], abs=5e-4)
    assert mAP50 >= 0.5, mAP50
