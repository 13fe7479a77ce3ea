"""Never lose a run: exact resume after SIGKILL, SIGTERM saves and resumes exactly, safe loading, bad input."""
import io
import os
import random
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

import mars
from misc.misc import MarsError, safeTorchLoad
from tests.helpers import writeVocSet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = "demo.nano.tiny.epoch@3"  # deterministic, dcore 0, 4 batches per epoch


def start(root):
    env = dict(os.environ, USER="tester")
    return subprocess.Popen([sys.executable, os.path.join(ROOT, "mars.py"), "-cfg", CFG, "-root", str(root), "-train"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def cacheDir(root):
    return os.path.join(str(root), "tester", CFG, "__cache__")


def epochsDone(root):
    info = os.path.join(cacheDir(root), "info.txt")
    if not os.path.isfile(info):
        return 0
    found = re.search(r"epochsDone=(\d+)/", open(info).read())
    return int(found.group(1)) if found else 0


def waitForEpoch(root, epochs, process, timeout=300):
    """Poll info.txt until it reports at least `epochs` finished epochs (a resumed run may start past them)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if epochsDone(root) >= epochs:
            return
        assert process.poll() is None, process.communicate()[1][-2000:]
        time.sleep(0.01)
    raise AssertionError("epoch {} never finished".format(epochs))


def finalState(root):
    state = torch.load(os.path.join(cacheDir(root), "last_epoch_weights.pth"), weights_only=True)
    assert state["epoch"] == 3 and state["batchesDone"] == 0
    return state


def assertSameWeights(a, b):
    for part in ("model", "ema"):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("reference")
    process = start(root)
    assert process.wait(timeout=600) == 0, process.communicate()[1][-2000:]
    return finalState(root)


def test_sigkill_at_random_moments_then_resume_is_exact(reference, tmp_path):
    rng = random.Random(0)
    for attempt in range(3):
        process = start(tmp_path)
        waitForEpoch(tmp_path, 1, process)
        time.sleep(rng.uniform(0.0, 1.5))  # somewhere in epoch 2 or 3 (or in a checkpoint write)
        process.kill()
        process.wait()
        # whatever the moment, the last checkpoint loads (weights only) and is a complete state
        state = safeTorchLoad(os.path.join(cacheDir(tmp_path), "last_epoch_weights.pth"))
        assert state["epoch"] in (1, 2, 3) and {"model", "ema", "optimizer", "rng"} <= state.keys()
        leftovers = [f for f in os.listdir(cacheDir(tmp_path)) if f.startswith(".tmp_")]
        for f in leftovers:  # a kill during a write leaves at most a temporary file, never a broken checkpoint
            os.remove(os.path.join(cacheDir(tmp_path), f))
    process = start(tmp_path)
    assert process.wait(timeout=600) == 0, process.communicate()[1][-2000:]
    assertSameWeights(finalState(tmp_path), reference)


def test_sigterm_saves_mid_epoch_and_resume_is_exact(reference, tmp_path):
    process = start(tmp_path)
    waitForEpoch(tmp_path, 1, process)
    time.sleep(0.3)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "Resume with the same command" in out
    state = torch.load(os.path.join(cacheDir(tmp_path), "last_epoch_weights.pth"), weights_only=True)
    assert (state["epoch"], state["batchesDone"] > 0) in ((1, True), (2, False), (3, False))
    process = start(tmp_path)
    assert process.wait(timeout=600) == 0
    assertSameWeights(finalState(tmp_path), reference)


def test_pickled_callable_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": {}, "hook": os.system}, path)
    with pytest.raises(MarsError, match="cannot be loaded safely"):
        safeTorchLoad(str(path))


def runMain(args, capsys):
    code = mars.main(args)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("mars: error: ")]
    return code, errors


def truncatedCheckpoint(path):
    buffer = io.BytesIO()
    torch.save({"model": {"w": torch.zeros(1000)}, "epoch": 1}, buffer)
    path.write_bytes(buffer.getvalue()[:600])  # e.g. a disk error after the rename


def otherPhaseWeights(path):
    from model.base.yolomodel import YoloModel
    from tests.conftest import makeConfig
    YoloModel(makeConfig("nano", nc=20)).save(str(path))


@pytest.mark.parametrize("cfg,mode,fileName,write,culprits", [
    ("demo.nano.tiny", "-eval", "best_weights.pth",  # pickled code
     lambda path: torch.save({"w": torch.zeros(1), "hook": os.system}, path), ["safely"]),
    ("demo.small.tiny", "-eval", "best_weights.pth", otherPhaseWeights, ["expected", "mcfg.phase"]),
    ("demo.nano.tiny", "-eval", "best_weights.pth",  # loads weights-only, but is no state dict
     lambda path: torch.save([torch.zeros(1)], path), ["not a state dict"]),
    ("demo.nano.tiny", "-train", "last_epoch_weights.pth", truncatedCheckpoint, ["-nobuf"]),
], ids=["pickled-code", "another-phase", "not-a-state-dict", "truncated-checkpoint"])
def test_bad_weight_files_via_cli(tmp_path, capsys, monkeypatch, cfg, mode, fileName, write, culprits):
    """A weights file or training checkpoint that cannot be used: one error line naming the file and the fix."""
    monkeypatch.setenv("USER", "tester")
    cache = tmp_path / "tester" / cfg / "__cache__"
    cache.mkdir(parents=True)
    write(cache / fileName)
    code, errors = runMain(["-cfg", cfg, "-root", str(tmp_path), mode], capsys)
    assert code == 2 and len(errors) == 1, errors
    assert all(text in errors[0] for text in [fileName] + culprits), errors[0]


GOOD = {"g1": (64, 64, [("A1", 5, 5, 30, 30)]), "g2": (64, 64, [("A2", 10, 10, 50, 40)])}


def dataError(tmp_path, capsys, monkeypatch, images=None, splits=None, files=None):
    """Write a MAR20-layout data set (splits under splits/v5), run c1 on it, return its single error line."""
    data = tmp_path / "data"
    images = dict(GOOD, **(images or {}))
    splits = splits or {"train": list(images)}
    writeVocSet(str(data), images, ["A{}".format(i) for i in range(1, 21)], {})
    os.makedirs(data / "splits" / "v5", exist_ok=True)
    for name, stems in splits.items():
        (data / "splits" / "v5" / (name + ".txt")).write_text("\n".join(stems) + "\n")
    for relative, text in (files or {}).items():
        (data / relative).write_text(text)
    monkeypatch.setenv("MARS_DATA", str(data))
    monkeypatch.setenv("USER", "tester")
    code, errors = runMain(["-cfg", "c1.nano.full.cpu", "-root", str(tmp_path / "runs"), "-train"], capsys)
    assert code == 2 and len(errors) == 1, errors
    return errors[0]


@pytest.mark.parametrize("files, culprit", [
    ({"annotations/g1.xml": "<annotation><object><name>A1</name"}, "g1.xml"),
    ({"annotations/g1.xml": '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "y">]><annotation/>'}, "g1.xml"),
    ({"annotations/g2.xml": "<annotation><size><width>64</width><height>64</height></size><object><name>B7</name>"
                            "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object></annotation>"},
     "'B7'"),
])
def test_bad_annotation_files(tmp_path, capsys, monkeypatch, files, culprit):
    error = dataError(tmp_path, capsys, monkeypatch, files=files)
    assert culprit in error


@pytest.mark.parametrize("splits, culprit", [
    ({"train": ["g1", "missing1"]}, "missing1"),
    ({"train": []}, "train.txt"),
    ({"train": ["g1", "../g2"]}, "'../g2'"),
    ({"validation": ["g1"]}, "train.txt"),
])
def test_bad_split_files(tmp_path, capsys, monkeypatch, splits, culprit):
    error = dataError(tmp_path, capsys, monkeypatch, splits=splits)
    assert culprit in error


def test_undecodable_image_is_named(tmp_path, capsys, monkeypatch):
    from dl.vocdataset import VocDataset
    from tests.conftest import makeConfig
    imageDir, annotationDir, subsetMap = writeVocSet(str(tmp_path), GOOD, ["A1", "A2"], {"train": list(GOOD)})
    with open(os.path.join(imageDir, "g2.jpg"), "wb") as f:
        f.write(b"\xff\xd8 not really a jpeg")
    mcfg = makeConfig("nano", nc=2, imageDir=imageDir, annotationDir=annotationDir, classList=["A1", "A2"],
                      subsetMap=subsetMap, inputShape=(64, 64))
    dataset = VocDataset(mcfg, "train", train=True)
    dataset[0]
    with pytest.raises(MarsError, match="g2.jpg"):
        dataset[1]


def test_input_shape_not_multiple_of_32():
    from tests.conftest import makeConfig
    with pytest.raises(MarsError, match=r"mcfg.inputShape=\(100, 100\)"):
        makeConfig("nano", nc=2, inputShape=(100, 100))


def test_non_finite_loss_is_skipped_then_stops(tmp_path):
    from engine.trainer.base import BaseTrainer
    from model.base.yolomodel import YoloModel
    from tests.test_train import tinyConfig
    from train.loss import DetectionLoss

    class NanLoss(DetectionLoss):
        def __call__(self, preds, targets):
            return super().__call__(preds, targets) * float("nan")

    mcfg = tinyConfig(tmp_path, maxEpoch=3, maxNonFiniteSteps=1)
    model = YoloModel(mcfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(MarsError, match="maxNonFiniteSteps"):
        BaseTrainer(mcfg, model, NanLoss).run()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items() if v.is_floating_point()
               and "running" not in k)  # no optimizer step was taken
    assert not os.path.exists(os.path.join(mcfg.cacheDir(), "last_epoch_weights.pth"))


def test_run_root_inside_code_folder_warns(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MARS_DATA", str(tmp_path / "nowhere"))  # stops at the data check: nothing is written
    code = mars.main(["-cfg", "c1.nano.full.cpu", "-root", os.path.join(ROOT, "runs-inside"), "-train"])
    captured = capsys.readouterr()
    assert code == 2 and "inside the code folder" in captured.out + captured.err
    assert not os.path.exists(os.path.join(ROOT, "runs-inside"))
