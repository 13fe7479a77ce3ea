"""The distillation probe (train/distilprobe.py) and its -inspect panel: gradient norms equal a plain backward of each
term, the detection parts add up, the response's reach on both paths, a push predicts an SGD step, nothing changes."""
import copy
import json
import os

import pytest
import torch

from dl.vocdataset import makeDataLoader
from engine.checkpoint import BEST_FILE
from engine.inspection import MECHANISM_PANEL, inspect
from model import makeModel
from tests.helpers import randomTeacherFile, tinyConfig
from train.distilloss import DistillationDetectionLoss
from train.distilprobe import (BASE_TERMS, COSINE_GROUPS, NORM_GROUPS, REGIONS, TERMS, probeDistillation,
                               probeSums)

SIZE = 64
OLD = [0]  # the tiny set's classes: red (0) the teacher knows, blue (1) new
CLASS_GROUPS = ("classBranch", "oldClassRows", "newClassRows")  # what the box outputs never reach


@pytest.fixture(scope="module")
def teacherPath(tmp_path_factory):
    """A nano 2-class teacher (random weights, BatchNorm statistics moved off their defaults)."""
    return randomTeacherFile(tmp_path_factory.mktemp("teacher"), "teacher.pth", SIZE, nc=2)


def studentConfig(root, teacherPath, **fields):
    """tinyConfig as a distillation run of the teacher (which the student starts from): red old, blue new."""
    return tinyConfig(root, modelName="distillation", teacherModelFile=teacherPath, checkpointModelFile=teacherPath,
                      teacherClassIndexes=OLD, distilLossWeights=(1.0, 0.5, 0.5), batchSize=2, **fields)


def perturbedStudent(mcfg, seed=0, scale=0.05):
    """The student, its weights moved off the teacher's (so every term has a gradient)."""
    student = makeModel(mcfg)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * scale * (p.std() if p.numel() > 1 else 1.0))
    return student


def loaderBatches(mcfg):
    """The tiny set's two batches of two images, (images uint8, targets)."""
    return [(images, targets) for images, targets, _ in makeDataLoader(mcfg, "train", train=False, shuffle=False)]


def setNormEval(model):
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()


def plainGradients(student, loss, batches, term):
    """{name: .grad} of a plain .backward() of one term, summed over the batches (BatchNorm in eval mode)."""
    setNormEval(student)
    student.zero_grad(set_to_none=True)
    for images, targets in batches:
        loss.terms(student(images.float() / 255), targets)[term].backward()
    grads = {name: (p.grad.clone() if p.grad is not None else torch.zeros_like(p))
             for name, p in student.named_parameters()}
    student.zero_grad(set_to_none=True)
    return grads


def groupNorms(grads, oldClasses, nc):
    """The norms of NORM_GROUPS from parameter names alone (independent of the probe's layout)."""
    isOld = torch.zeros(nc, dtype=torch.bool)
    isOld[oldClasses] = True
    pieces = {g: [] for g in NORM_GROUPS}
    for name, g in grads.items():
        parts = name.split(".")
        if parts[0] in ("backbone", "neck"):
            pieces[parts[0]].append(g)
            pieces["features"].append(g)
        elif parts[1] == "boxBranches":
            pieces["boxBranch"].append(g)
        elif parts[3] in ("0", "1"):
            pieces["classBranch"].append(g)
        else:  # head.clsBranches.i.2.weight / .bias: rows are classes
            pieces["oldClassRows"].append(g[isOld])
            pieces["newClassRows"].append(g[~isOld])
        pieces["all"].append(g)
    return {k: float(torch.cat([v.reshape(-1) for v in vs]).norm()) for k, vs in pieces.items()}


@pytest.mark.parametrize("path,method", [("network", "cwd"), ("head", "cwd"), ("network", "ld")])
def test_gradient_norms_equal_a_plain_backward(tmp_path, teacherPath, path, method):
    mcfg = studentConfig(tmp_path, teacherPath, distilResponsePath=path, distilMethod=method)
    student = perturbedStudent(mcfg)
    loss = DistillationDetectionLoss(mcfg, student)
    batches = loaderBatches(mcfg)
    result = probeDistillation(student, loss, batches, OLD, mcfg.nc)
    assert result["batches"] == 2 and result["images"] == 4
    for term in BASE_TERMS:
        expected = groupNorms(plainGradients(student, loss, batches, term), OLD, mcfg.nc)
        assert expected["all"] > 0, term
        for group in NORM_GROUPS:
            assert result["gradientNorms"][term][group] == pytest.approx(expected[group], rel=1e-4, abs=1e-9), \
                (term, group)


def test_detection_parts_add_up_to_the_detection_gradient(tmp_path, teacherPath):
    mcfg = studentConfig(tmp_path, teacherPath)
    student = perturbedStudent(mcfg)
    layout, sums = probeSums(student, DistillationDetectionLoss(mcfg, student), loaderBatches(mcfg), OLD, mcfg.nc)
    detection = sums.grads["detection"]
    whole = sums.grads["detectionOld"] + sums.grads["detectionNew"] + sums.grads["detectionBox"]
    assert float((whole - detection).norm()) <= 1e-5 * float(detection.norm())
    classLayers = layout.masks["classBranch"] | layout.masks["oldClassRows"] | layout.masks["newClassRows"]
    classParts = (sums.grads["detectionOld"] + sums.grads["detectionNew"])[classLayers]
    assert float((classParts - detection[classLayers]).norm()) <= 1e-5 * float(detection[classLayers].norm())
    for part, zero in (("detectionOld", "newClassRows"), ("detectionNew", "oldClassRows"),
                       ("detectionBox", "classBranch"), ("detectionOld", "boxBranch"), ("detectionNew", "boxBranch")):
        assert float(sums.grads[part][layout.masks[zero]].abs().max()) == 0.0, (part, zero)
    assert float(sums.grads["detectionNew"][layout.masks["newClassRows"]].norm()) > 0


@pytest.mark.parametrize("path", ["network", "head"])
def test_response_reach(tmp_path, teacherPath, path):
    """The response never touches the new-class rows; on the "head" path it reaches the old-class rows alone."""
    mcfg = studentConfig(tmp_path, teacherPath, distilResponsePath=path)
    student = perturbedStudent(mcfg)
    norms = probeDistillation(student, DistillationDetectionLoss(mcfg, student), loaderBatches(mcfg), OLD,
                              mcfg.nc)["gradientNorms"]["response"]
    assert norms["newClassRows"] == 0.0 and norms["boxBranch"] == 0.0
    assert norms["oldClassRows"] > 0
    reached = ("backbone", "neck", "classBranch", "features")
    if path == "head":
        assert all(norms[g] == 0.0 for g in reached), norms
    else:
        assert all(norms[g] > 0 for g in reached), norms


@pytest.mark.parametrize("term", ["detection", "response", "knowledge"])
def test_push_predicts_an_sgd_step(tmp_path, teacherPath, term):
    """A small SGD step on one term alone moves the mean new-class logit at the objects (and on background) by
    lr * push (first order). The response through every layer (mcfg.distilResponsePath "network"): through the head
    alone its push on the new classes is exactly 0 (test_response_reach)."""
    mcfg = studentConfig(tmp_path, teacherPath, distilResponsePath="network")
    student = perturbedStudent(mcfg)
    loss = DistillationDetectionLoss(mcfg, student)
    batches = loaderBatches(mcfg)
    before = probeDistillation(student, loss, batches, OLD, mcfg.nc)
    grads = plainGradients(student, loss, batches, term)
    norm = float(torch.cat([g.reshape(-1) for g in grads.values()]).norm())
    for key, objective in (("pushObjects", "objects"), ("pushBackground", "background")):
        push = before[key][term]
        assert push is not None and abs(push) > 0, (key, term)
        lr = 0.1 / norm  # a step of norm 0.1
        stepped = copy.deepcopy(student)
        with torch.no_grad():
            for name, p in stepped.named_parameters():
                p.sub_(lr * grads[name])
        after = probeDistillation(stepped, DistillationDetectionLoss(mcfg, stepped), batches, OLD, mcfg.nc)
        change = after["newClassLogits"][objective] - before["newClassLogits"][objective]
        # 5%, or 1e-6 (a float32 ulp of a logit near -10: the two float32 forwards differ by that much whatever the
        # step, which matters only for the smallest pushes, e.g. the knowledge term's on background, ~1e-5)
        assert change == pytest.approx(lr * push, rel=0.05, abs=1e-6), (key, term, change, lr * push)


def test_probe_changes_nothing(tmp_path, teacherPath):
    mcfg = studentConfig(tmp_path, teacherPath)
    student = perturbedStudent(mcfg)
    loss = DistillationDetectionLoss(mcfg, student)
    for p in student.parameters():
        p.grad = torch.full_like(p, 0.5)
    student.eval()
    student.head.train()  # a mixed state, to be restored as it was
    modes = [m.training for m in student.modules()]
    state = {k: v.clone() for k, v in student.state_dict().items()}  # BatchNorm statistics included
    parts = loss.parts
    probeDistillation(student, loss, loaderBatches(mcfg), OLD, mcfg.nc)
    assert [m.training for m in student.modules()] == modes
    assert all(torch.equal(v, state[k]) for k, v in student.state_dict().items())
    assert all(torch.equal(p.grad, torch.full_like(p, 0.5)) for p in student.parameters())
    assert loss.parts is parts


def test_float32_only(tmp_path, teacherPath):
    mcfg = studentConfig(tmp_path, teacherPath)
    student = makeModel(mcfg).double()
    with pytest.raises(ValueError, match="float32"):
        probeDistillation(student, DistillationDetectionLoss(mcfg, student), [], OLD, mcfg.nc)


def checkProbeKeys(probe):
    assert set(probe["gradientNorms"]) == set(TERMS)
    assert all(set(norms) == set(NORM_GROUPS) for norms in probe["gradientNorms"].values())
    assert set(probe["pushObjects"]) == set(TERMS) and set(probe["pushBackground"]) == set(TERMS)
    assert all(set(c) == set(COSINE_GROUPS) for c in probe["cosineWithDetectionNew"].values())
    assert probe["cosineWithDetectionNew"]["detectionNew"]["classBranch"] == pytest.approx(1.0)
    assert set(probe["oldClassScores"]["teacher"]) == set(REGIONS) == set(probe["anchors"])
    assert probe["oldClasses"] == OLD and probe["newClasses"] == [1]
    assert set(probe["values"]) == set(BASE_TERMS)


def test_inspect_writes_the_mechanism_panel(tmp_path, teacherPath):
    """Without trained weights: the start weights alone, labelled UNTRAINED; with them: start and trained."""
    mcfg = studentConfig(tmp_path, teacherPath)
    outDir = os.path.join(mcfg.runDir(), "inspect")
    image = os.path.join(mcfg.imageDir, "b.jpg")
    inspect(mcfg, image)
    with open(os.path.join(outDir, "summary.json")) as f:
        summary = json.load(f)
    mechanism = summary["distillationMechanism"]
    assert set(mechanism) == {"split", "batchSize", "panel", "start"}
    assert mechanism["start"]["weights"].startswith("UNTRAINED: start weights")
    checkProbeKeys(mechanism["start"])
    assert mechanism["start"]["values"]["response"] == pytest.approx(0.0, abs=1e-4)  # the student is the teacher
    assert summary["images"][0]["panels"]["distillation"]  # what was there is kept

    os.makedirs(mcfg.cacheDir(), exist_ok=True)
    perturbedStudent(mcfg).save(os.path.join(mcfg.cacheDir(), BEST_FILE))
    os.remove(os.path.join(outDir, MECHANISM_PANEL))
    inspect(mcfg, image)
    assert os.path.getsize(os.path.join(outDir, MECHANISM_PANEL)) > 10000
    with open(os.path.join(outDir, "summary.json")) as f:
        mechanism = json.load(f)["distillationMechanism"]
    assert mechanism["panel"] == MECHANISM_PANEL and mechanism["split"] == "train" and mechanism["batchSize"] == 2
    assert mechanism["start"]["weights"] == "start weights " + os.path.basename(os.path.dirname(os.path.dirname(
        teacherPath)))
    assert mechanism["trained"]["weights"] == "best weights"
    checkProbeKeys(mechanism["trained"])
    assert mechanism["trained"]["images"] == 4
    assert mechanism["trained"]["values"]["response"] > 0
