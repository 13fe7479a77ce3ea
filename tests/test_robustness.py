"""Never lose a run: exact resume after SIGKILL, SIGTERM saves and resumes exactly, safe loading, bad input."""
import io
import os
import signal
import subprocess
import sys

import pytest
import torch

import mars
from misc.errors import MarsError
from misc.files import safeTorchLoad
from tests.helpers import writeVocSet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = "demo.nano.tiny.epoch@3"  # deterministic, dcore 0, 4 batches per epoch


def start(root, fault=None, cfg=CFG):
    """mars.py -train in a subprocess; fault: MARS_TEST_FAULT ('SIGKILL@5': that signal right after global step 5)."""
    env = dict(os.environ, USER="tester")
    env.pop("MARS_TEST_FAULT", None)
    if fault:
        env["MARS_TEST_FAULT"] = fault
    return subprocess.Popen([sys.executable, os.path.join(ROOT, "mars.py"), "-cfg", cfg, "-root", str(root), "-train"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def finish(process):
    """Wait for a run; returns (exit code, stdout, stderr)."""
    out, err = process.communicate(timeout=600)
    return process.returncode, out, err


def cacheDir(root, cfg=CFG):
    return os.path.join(str(root), "tester", cfg, "__cache__")


def lastCheckpoint(root, cfg=CFG):
    return torch.load(os.path.join(cacheDir(root, cfg), "last_epoch_weights.pth"), weights_only=True)


def finalState(root, cfg=CFG):
    state = lastCheckpoint(root, cfg)
    assert state["epoch"] == 3 and state["batchesDone"] == 0
    return state


def assertSameState(a, b):
    """Model, EMA and optimizer state (momentum buffers, lr, momentum) bitwise equal, and the same EMA count."""
    for part in ("model", "ema"):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    assertSameOptimizer(a["optimizer"], b["optimizer"])
    assert a["emaUpdates"] == b["emaUpdates"]


def assertSameOptimizer(a, b):
    assert a["param_groups"] == b["param_groups"]
    assert a["state"].keys() == b["state"].keys()
    for i in a["state"]:
        for k, v in a["state"][i].items():
            assert torch.equal(v, b["state"][i][k]) if isinstance(v, torch.Tensor) else v == b["state"][i][k], (i, k)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("reference")
    code, _, err = finish(start(root))
    assert code == 0, err[-2000:]
    return finalState(root)


@pytest.mark.slow
@pytest.mark.parametrize("dcore", [0, 1, 2])
def test_sigkill_at_chosen_steps_then_resume_is_exact(reference, tmp_path, dcore):
    """4 steps per epoch, 3 epochs (global steps 0..11), dcore loader workers (tag dcore@N). SIGKILL after step 2 (no
    checkpoint yet), after step 5 (epoch 1 saved) and, resumed, after step 9 (epoch 2 saved); a write interrupted by a
    kill leaves a temporary file, which stays in place. The last run finishes with exactly the uninterrupted run's
    model, EMA and optimizer -- the reference trains with dcore 0: the data do not depend on the workers."""
    cfg = CFG + ".dcore@{}".format(dcore)
    code, _, err = finish(start(tmp_path, "SIGKILL@2", cfg))
    assert code == -signal.SIGKILL, err[-2000:]
    assert not os.path.exists(os.path.join(cacheDir(tmp_path, cfg), "last_epoch_weights.pth"))
    for fault, epochsDone in (("SIGKILL@5", 1), ("SIGKILL@9", 2)):
        code, _, err = finish(start(tmp_path, fault, cfg))
        assert code == -signal.SIGKILL, err[-2000:]
        state = safeTorchLoad(os.path.join(cacheDir(tmp_path, cfg), "last_epoch_weights.pth"))
        assert (state["epoch"], state["batchesDone"], state["epochPosition"]) == (epochsDone, 0, 0), fault
        assert {"model", "ema", "optimizer", "scaler"} <= state.keys()
        with open(os.path.join(cacheDir(tmp_path, cfg), "last_epoch_weights.pth"), "rb") as f:
            half = f.read()[:5000]
        with open(os.path.join(cacheDir(tmp_path, cfg), ".tmp_interrupted{}.pth".format(epochsDone)), "wb") as f:
            f.write(half)  # what a kill in the middle of a checkpoint write leaves behind
    code, out, err = finish(start(tmp_path, cfg=cfg))
    assert code == 0, err[-2000:]
    assert "resuming from" in out + err
    assertSameState(finalState(tmp_path, cfg), reference)


@pytest.mark.slow
@pytest.mark.parametrize("step, position, dcore", [(6, (1, 3, 12), 0), (6, (1, 3, 12), 2), (3, (0, 4, 16), 1)],
                         ids=["mid-epoch", "mid-epoch-2-workers", "last-batch-of-epoch-1-worker"])
def test_sigterm_saves_at_the_step_and_resume_is_exact(reference, tmp_path, step, position, dcore):
    """SIGTERM after global step 6 (epoch 2, batch 3 of 4) or 3 (the last batch of epoch 1): the step finishes, the
    state is saved at exactly that position (epoch, batches done, samples done), exit code 128 + 15, the message says
    how to resume; the rerun, with loader workers too, trains exactly the samples not yet trained and ends exactly as
    the uninterrupted run."""
    cfg = CFG + ".dcore@{}".format(dcore)
    code, out, err = finish(start(tmp_path, "SIGTERM@{}".format(step), cfg))
    assert code == 128 + signal.SIGTERM, err[-2000:]
    assert "Resume with the same command" in out
    state = lastCheckpoint(tmp_path, cfg)
    assert (state["epoch"], state["batchesDone"], state["epochPosition"]) == position
    code, _, err = finish(start(tmp_path, cfg=cfg))
    assert code == 0, err[-2000:]
    assertSameState(finalState(tmp_path, cfg), reference)


@pytest.mark.slow
def test_resumed_trainer_state_equals_the_checkpoint(tmp_path, monkeypatch):
    """In-process: SIGTERM (test hook) after global step 5 of 2 epochs x 4 steps; a new trainer's resume() holds exactly
    the checkpoint's (and the interrupted trainer's) model, EMA, EMA count, optimizer state and position;
    continuing it gives bitwise the uninterrupted run."""
    from engine.signals import TrainingInterrupted
    from engine.trainer import Trainer
    from model.base.yolomodel import YoloModel
    from tests.helpers import tinyConfig
    from train.loss import DetectionLoss

    def trainer(root):
        mcfg = tinyConfig(root, repeat=4, maxEpoch=2, deterministic=True, warmupEpochs=1.0)
        torch.manual_seed(0)
        return Trainer(mcfg, YoloModel(mcfg), DetectionLoss)
    monkeypatch.setenv("MARS_TEST_FAULT", "SIGTERM@5")
    interrupted = trainer(tmp_path / "a")
    with pytest.raises(TrainingInterrupted):
        interrupted.run()
    monkeypatch.delenv("MARS_TEST_FAULT")
    saved = torch.load(os.path.join(interrupted.mcfg.cacheDir(), "last_epoch_weights.pth"), weights_only=True)
    assert (saved["epoch"], saved["batchesDone"]) == (1, 2)
    resumed = trainer(tmp_path / "a")
    resumed.resume()
    assert (resumed.startEpoch, resumed.batchesDone, resumed.epochPosition) == (1, 2, 8)
    for source in (saved, interrupted.checkpoint(1, 2)):
        assertSameState(resumed.checkpoint(1, 2), source)
    assert resumed.ema.updates == interrupted.ema.updates == 24 / 64
    resumed.run()
    uninterrupted = trainer(tmp_path / "b")
    uninterrupted.run()
    assertSameState(resumed.checkpoint(2), uninterrupted.checkpoint(2))


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
    from tests.helpers import makeConfig
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
    from tests.helpers import makeConfig
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
    from tests.helpers import makeConfig
    with pytest.raises(MarsError, match=r"mcfg.inputShape=\(100, 100\)"):
        makeConfig("nano", nc=2, inputShape=(100, 100))


def test_non_finite_loss_is_skipped_then_stops(tmp_path):
    from engine.trainer import Trainer
    from model.base.yolomodel import YoloModel
    from tests.helpers import tinyConfig
    from train.loss import DetectionLoss

    class NanLoss(DetectionLoss):
        def __call__(self, preds, targets):
            return super().__call__(preds, targets) * float("nan")

    mcfg = tinyConfig(tmp_path, maxEpoch=3, maxNonFiniteSteps=1)
    model = YoloModel(mcfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(MarsError, match="maxNonFiniteSteps"):
        Trainer(mcfg, model, NanLoss).run()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items() if v.is_floating_point()
               and "running" not in k)  # no optimizer step was taken
    assert not os.path.exists(os.path.join(mcfg.cacheDir(), "last_epoch_weights.pth"))


def test_run_root_inside_code_folder_warns(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MARS_DATA", str(tmp_path / "nowhere"))  # stops at the data check: nothing is written
    code = mars.main(["-cfg", "c1.nano.full.cpu", "-root", os.path.join(ROOT, "runs-inside"), "-train"])
    captured = capsys.readouterr()
    assert code == 2 and "inside the code folder" in captured.out + captured.err
    assert not os.path.exists(os.path.join(ROOT, "runs-inside"))
