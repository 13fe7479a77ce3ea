"""TensorBoard curves (engine/tensorboard.py): with the optional tensorboard package a run writes its results.csv
numbers, each epoch's training batch and, after a measured epoch, a few painted validation images to <run>/tensorboard/,
readable by tensorboard's own reader; without it the
run writes no such folder and says so in one line at most. tensorboard is required here (pinned in
requirements-dev.txt), never skipped."""
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

import engine.tensorboard
from engine.preview import batchGrid
from engine.evaluator import Evaluator
from engine.tensorboard import BATCH_SIDE, BATCH_TAG, BOARD_DIR, TAGS, VALIDATION_IMAGES, VALIDATION_SIDE
from engine.trainer import Trainer
from model.base.yolomodel import YoloModel
from tests.helpers import TINY_IMAGES, requireOracle, tinyConfig
from train.loss import DetectionLoss


class FixedEvaluator(object):
    """mAP values given epoch by epoch (the tiny model's real mAP would be 0 in both epochs), and two fixed painted
    validation images of different sizes, one of them larger than VALIDATION_SIDE."""

    def __init__(self, values):
        self.values = list(values)
        rng = np.random.default_rng(0)
        self.painted = [("v1", rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)),
                        ("v2", rng.integers(0, 255, (700, 1280, 3), dtype=np.uint8))]
        self.asked = []

    def evaluate(self, model, splitName):
        value = self.values.pop(0)
        return {"mAP50": value, "mAP50Coco": value * 0.9, "mAP5095": value / 2}

    def paintedImages(self, model, splitName, count):
        self.asked.append((splitName, count))
        return self.painted[:count]


@pytest.mark.slow
def test_run_writes_the_epoch_rows_and_batches_tensorboard_reads(tmp_path, monkeypatch):
    requireOracle("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    grids = []  # what engine/preview.py drew for the board, epoch by epoch
    monkeypatch.setattr(engine.tensorboard, "batchGrid", lambda *a, **k: grids.append(batchGrid(*a, **k)) or grids[-1])
    mcfg = tinyConfig(tmp_path, maxEpoch=2, evalEveryEpochs=1, epochValidation=True)
    evaluator = FixedEvaluator([0.25, 0.5])
    trainer = Trainer(mcfg, YoloModel(mcfg), DetectionLoss, evaluator)
    trainer.run()
    board = os.path.join(mcfg.runDir(), BOARD_DIR)
    accumulator = EventAccumulator(board, size_guidance={"scalars": 0, "images": 0})
    accumulator.Reload()
    tags = accumulator.Tags()
    expected = ["loss/trainBox", "loss/trainCls", "loss/trainDfl", "loss/valBox", "loss/valCls", "loss/valDfl", "lr/lr",
                "metrics/mAP50", "metrics/mAP50-95", "metrics/fitness", "time/trainSeconds", "time/dataSeconds",
                "time/validationSeconds", "time/seconds"]
    assert sorted(tags["scalars"]) == sorted(expected)
    keyOf = {tag: key for key, tag in TAGS.items()}
    for tag in expected:
        events = accumulator.Scalars(tag)
        assert [e.step for e in events] == [1, 2], tag  # the 1-based epoch, as results.csv's epoch column
        written = [e.value for e in events]  # float32 in the event file
        assert written == pytest.approx([row[keyOf[tag]] for row in trainer.history], rel=1e-6, abs=1e-9), tag
    with open(os.path.join(mcfg.runDir(), "results.csv")) as f:  # the same numbers as the CSV row
        header = f.readline().strip().split(",")
        rows = [dict(zip(header, line.strip().split(","))) for line in f]
    assert [float(r["mAP5095"]) for r in rows] == pytest.approx(
        [e.value for e in accumulator.Scalars("metrics/mAP50-95")], rel=1e-5)
    assert [e.value for e in accumulator.Scalars("metrics/mAP50")] == pytest.approx([0.25, 0.5])
    assert sorted(tags["images"]) == sorted([BATCH_TAG, "images/validation/v1", "images/validation/v2"])
    assert evaluator.asked == [(mcfg.validationSplitName, VALIDATION_IMAGES)] * 2  # after each measured epoch
    for stem, painted in evaluator.painted:  # the evaluator's painted images, RGB, at most VALIDATION_SIDE a side
        events = accumulator.Images("images/validation/" + stem)
        assert [e.step for e in events] == [1, 2]
        scale = min(1.0, VALIDATION_SIDE / max(painted.shape[:2]))
        expected = painted if scale == 1.0 else cv2.resize(painted, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        decoded = cv2.imdecode(np.frombuffer(events[0].encoded_image_string, np.uint8), cv2.IMREAD_COLOR)  # BGR
        assert np.array_equal(decoded, expected), stem
    images = accumulator.Images(BATCH_TAG)
    assert [e.step for e in images] == [1, 2]
    assert len(grids) == 2 and max(grids[0].shape[:2]) <= BATCH_SIDE  # one drawing per epoch: its first batch
    for image, grid in zip(images, grids):  # the picture is engine/preview.py's grid, pixel for pixel (PNG, RGB)
        decoded = cv2.imdecode(np.frombuffer(image.encoded_image_string, np.uint8), cv2.IMREAD_COLOR)  # BGR
        assert (image.height, image.width) == grid.shape[:2] and np.array_equal(decoded, grid)


def test_without_tensorboard_nothing_is_written(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard -> ImportError
    monkeypatch.delitem(sys.modules, "torch.utils.tensorboard", raising=False)  # an earlier test may have imported it
    mcfg = tinyConfig(tmp_path, maxEpoch=2)
    Trainer(mcfg, YoloModel(mcfg), DetectionLoss).run()
    assert os.path.isfile(os.path.join(mcfg.runDir(), "results.csv"))
    assert not os.path.exists(os.path.join(mcfg.runDir(), BOARD_DIR))
    assert "torch.utils.tensorboard" not in sys.modules  # not even imported
    captured = capsys.readouterr()
    lines = [line for line in (captured.out + captured.err).splitlines() if "tensorboard" in line.lower()]
    assert len(lines) == 1, lines


@pytest.mark.slow  # a fresh interpreter importing torch
def test_without_tensorboard_the_trainer_never_imports_torch_utils_tensorboard():
    code = ("import sys; sys.modules['tensorboard'] = None; import engine.trainer, engine.tensorboard as t; "
            "assert t.summaryWriterClass() is None; print(sorted(m for m in sys.modules if 'tensorboard' in m))")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['engine.tensorboard', 'tensorboard']", done.stdout  # the None entry only


def test_painted_validation_images_are_the_evals_pictures(tmp_path):
    """Evaluator.paintedImages (what the board shows after a measured epoch): the first count images of the split in
    file order, at their original size, painted as -eval paints them (ground truth purple)."""
    from inference.painter import GT_COLOR
    mcfg = tinyConfig(tmp_path)
    painted = Evaluator(mcfg).paintedImages(YoloModel(mcfg), "train", 3)
    assert [stem for stem, _ in painted] == list(TINY_IMAGES)[:3]
    for stem, image in painted:
        h, w, objects = TINY_IMAGES[stem]
        assert image.shape == (h, w, 3)
        _, x0, y0, x1, y1 = objects[0]
        assert tuple(int(v) for v in image[(y0 + y1) // 2, x0]) == GT_COLOR, stem  # the box's left edge
