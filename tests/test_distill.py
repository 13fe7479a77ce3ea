"""Stage 3, distillation: the CWD / response / LD terms (float32 under autocast), the frozen teacher, the student's
checkpoints, the configs, and a tiny teacher -> distillation pipeline through mars.py."""
import copy
import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from cfgops import c1, demo
from cfgops import makeConfig as makeNamedConfig
from config.mconfig import DISTIL_FEATURES
from engine.trainer import Trainer
from misc.errors import MarsError
from model.base.yolomodel import YoloModel
from model.distillation.studentmodel import YoloStudentModel, featureDict
from model.distillation.teachermodel import YoloTeacherModel
from tests.helpers import makeConfig, randomTeacherFile, tinyConfig
from train.distilloss import (DistillationDetectionLoss, channelWiseDivergence, localisationDivergence,
                              responseDivergence)
from train.ema import ModelEma

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 64  # pixels: every model here is a nano at 64 x 64


@pytest.fixture(scope="module")
def teacherFile(tmp_path_factory):
    """A nano teacher with 20 classes (random weights, BatchNorm statistics moved off their defaults)."""
    return randomTeacherFile(tmp_path_factory.mktemp("teacher"), "best_weights.pth", SIZE)


def studentConfig(teacherFile, **fields):
    fields = dict(dict(modelName="distillation", teacherModelFile=teacherFile, checkpointModelFile=teacherFile,
                       teacherClassIndexes=list(range(10)), distilLossWeights=(1.0, 0.25, 0.25)), **fields)
    return makeConfig(inputShape=(SIZE, SIZE), **fields)


def makeStudent(mcfg):
    return YoloStudentModel(mcfg).load(mcfg.checkpointModelFile)


TARGETS = torch.tensor([[0, 3, 0.1, 0.1, 0.5, 0.6], [1, 14, 0.3, 0.2, 0.9, 0.8]])  # one old, one new class


# --- the three terms -----------------------------------------------------------------------------------------
def test_cwd_hand_worked_zero_and_gradient_sign():
    """One channel of two positions: teacher softmax (0.75, 0.25), student (0.5, 0.5)."""
    teacher = torch.tensor([math.log(3.0), 0.0]).view(1, 1, 1, 2)
    student = torch.zeros(1, 1, 1, 2, requires_grad=True)
    loss = channelWiseDivergence(student, teacher)
    assert loss.item() == pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5), abs=1e-6)
    loss.backward()
    # d/ds KL = ps - pt: the student's map is pulled up where the teacher peaks and down elsewhere
    assert torch.allclose(student.grad.view(-1), torch.tensor([-0.25, 0.25]), atol=1e-6)
    assert channelWiseDivergence(teacher, teacher).item() == 0.0
    assert channelWiseDivergence(teacher.clone(), teacher, temperature=4.0).item() == 0.0


def test_cwd_matches_kl_div_with_temperature():
    """Softmax over each channel's H*W positions, KL(teacher || student), mean over B*C, times T^2."""
    student, teacher = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)
    T = 2.0
    reference = F.kl_div(F.log_softmax(student.view(6, 20) / T, 1), F.log_softmax(teacher.view(6, 20) / T, 1),
                         reduction="sum", log_target=True) / 6 * T ** 2
    assert channelWiseDivergence(student, teacher, T).item() == pytest.approx(reference.item(), rel=1e-5)
    assert channelWiseDivergence(student, teacher, T).item() > 0


def test_response_hand_worked_zero_and_gradient_sign():
    """One anchor, one class: teacher logit 2 (p = 0.881), student logit 0 (p = 0.5)."""
    student = torch.zeros(1, 1, 1, requires_grad=True)
    teacher = torch.full((1, 1, 1), 2.0)
    pt = torch.sigmoid(torch.tensor(2.0)).item()
    loss = responseDivergence(student, teacher)
    assert loss.item() == pytest.approx(pt * math.log(pt / 0.5) + (1 - pt) * math.log((1 - pt) / 0.5), abs=1e-6)
    loss.backward()
    assert student.grad.item() == pytest.approx(0.5 - pt, abs=1e-6)  # negative: the student's logit goes up
    high = torch.full((1, 1, 1), 4.0, requires_grad=True)  # above the teacher: pushed down
    responseDivergence(high, teacher).backward()
    assert high.grad.item() > 0
    logits = torch.randn(2, 30, 10)
    assert responseDivergence(logits, logits).item() == 0.0
    assert responseDivergence(logits.clone(), logits, temperature=3.0).item() == 0.0
    assert responseDivergence(logits + 0.5, logits).item() > 0


def test_masked_response_hand_worked_and_empty_mask():
    """Two anchors, one class; the mask keeps anchor 0 only: the value is anchor 0's KL over max(1, its pt), anchor 1
    gets no gradient. A mask that keeps nothing gives exactly 0, finite zero gradients."""
    student = torch.zeros(1, 2, 1, requires_grad=True)
    teacher = torch.tensor([2.0, -1.0]).view(1, 2, 1)
    pt = torch.sigmoid(torch.tensor(2.0)).item()
    loss = responseDivergence(student, teacher, anchorMask=torch.tensor([[True, False]]))
    assert loss.item() == pytest.approx(pt * math.log(pt / 0.5) + (1 - pt) * math.log((1 - pt) / 0.5), abs=1e-6)
    loss.backward()
    assert student.grad[0, 0, 0].item() == pytest.approx(0.5 - pt, abs=1e-6) and student.grad[0, 1, 0].item() == 0.0
    big = torch.full((1, 2, 1), 3.0)  # pt = 0.95 per anchor: the normaliser is the kept anchor's pt, not both
    ptBig = torch.sigmoid(torch.tensor(3.0)).item()
    kl = ptBig * math.log(ptBig / 0.5) + (1 - ptBig) * math.log((1 - ptBig) / 0.5)
    assert responseDivergence(torch.zeros(1, 2, 1), big, anchorMask=torch.tensor([[1.0, 0.0]])).item() == \
        pytest.approx(kl / 1.0, abs=1e-6)  # max(1, 0.95) = 1
    assert responseDivergence(torch.zeros(1, 2, 1), big).item() == pytest.approx(2 * kl / (2 * ptBig), abs=1e-6)
    empty = torch.randn(2, 5, 3, requires_grad=True)
    loss = responseDivergence(empty, torch.randn(2, 5, 3), anchorMask=torch.zeros(2, 5, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(empty.grad).all() and empty.grad.abs().sum() == 0


def test_response_raise_only_hand_worked():
    """Three anchors, one class, teacher logit 2 (pt = 0.881) everywhere; student logits 0, 2, 4. "raise": the anchor
    below the teacher keeps its KL and gradient (0.5 - pt, upwards); the one at the teacher and the one above it give
    KL 0 and no gradient (both directions would push the one above down). The normaliser is unchanged (sum of pt)."""
    teacher = torch.full((1, 3, 1), 2.0)
    pt = torch.sigmoid(torch.tensor(2.0)).item()
    student = torch.tensor([0.0, 2.0, 4.0]).view(1, 3, 1).requires_grad_(True)
    loss = responseDivergence(student, teacher, raiseOnly=True)
    kl0 = pt * math.log(pt / 0.5) + (1 - pt) * math.log((1 - pt) / 0.5)
    assert loss.item() == pytest.approx(kl0 / (3 * pt), abs=1e-6)
    loss.backward()
    assert student.grad[0, 0, 0].item() == pytest.approx((0.5 - pt) / (3 * pt), abs=1e-6)
    assert abs(student.grad[0, 1, 0].item()) < 1e-7 and student.grad[0, 2, 0].item() == 0.0  # at the tie: ps - pt = 0
    both = student.detach().clone().requires_grad_(True)
    responseDivergence(both, teacher).backward()
    assert both.grad[0, 2, 0].item() > 0 and both.grad[0, 0, 0].item() == pytest.approx(student.grad[0, 0, 0].item())
    logits = torch.randn(2, 30, 10)
    assert responseDivergence(logits - 0.5, logits, raiseOnly=True).item() > 0
    assert responseDivergence(logits + 0.5, logits, raiseOnly=True).item() == 0.0


def lossOnOldLogits(teacherFile, **fields):
    """A train-mode student of studentConfig(teacherFile, **fields), its loss called once on TARGETS ->
    (student, loss, outputs, the student's and the teacher's old-class logits (B, A, 10))."""
    mcfg = studentConfig(teacherFile, **fields)
    student = makeStudent(mcfg).train()
    loss = DistillationDetectionLoss(mcfg, student)
    outputs = student(torch.rand(2, 3, SIZE, SIZE))
    loss(outputs, TARGETS)
    predLogits = loss.detection.flatten(outputs["preds"])[1][..., :10]
    teacherLogits = loss.detection.flatten(outputs["teacherPreds"])[1][..., :10]
    return student, loss, outputs, predLogits, teacherLogits


def test_response_direction_reaches_the_loss(teacherFile):
    """mcfg.distilResponseDirection "raise": the loss's response equals responseDivergence(raiseOnly=True)."""
    _, loss, _, predLogits, teacherLogits = lossOnOldLogits(teacherFile, distilResponseDirection="raise")
    raised = responseDivergence(predLogits, teacherLogits, raiseOnly=True).item()
    assert loss.distilParts[1].item() == pytest.approx(raised, rel=1e-5)
    assert raised != pytest.approx(responseDivergence(predLogits, teacherLogits).item(), rel=1e-3)


def expectedAnchorsOutside(box, size=SIZE, strides=(8, 16, 32)):
    """Anchors (level by level, row-major) whose centre is NOT strictly inside box (x0, y0, x1, y1) pixels, sides
    of at least 16 px (no widening): a list of bools, by hand."""
    keep = []
    for s in strides:
        for i in range(size // s):
            for j in range(size // s):
                x, y = (j + 0.5) * s, (i + 0.5) * s
                keep.append(not (box[0] < x < box[2] and box[1] < y < box[3]))
    return keep


def test_response_anchors_outside_new_boxes_and_confident(teacherFile):
    """outsideNew leaves out exactly the anchors inside new-class boxes (an old-class box masks nothing);
    confident keeps, of those, the anchors where the teacher's best old-class score reaches distilConfidence."""
    mcfg = studentConfig(teacherFile, distilResponseMask="outsideNew")
    student = makeStudent(mcfg).train()
    loss = DistillationDetectionLoss(mcfg, student)
    preds = student(torch.rand(2, 3, SIZE, SIZE))["preds"]
    targets = torch.tensor([[0, 14, 0.0, 0.0, 0.5, 0.5],   # new class A15 in image 0: 0..32 px
                            [1, 3, 0.25, 0.25, 1.0, 1.0]])  # old class A4 in image 1
    A = sum(p.shape[2] * p.shape[3] for p in preds)
    teacherOld = torch.full((2, A, 10), -5.0)
    keep = loss.responseAnchors(preds, targets, teacherOld)
    assert keep[0].tolist() == expectedAnchorsOutside((0, 0, 32, 32))
    assert int((~keep[0]).sum()) == 16 + 4 + 1
    assert keep[1].all()
    loss.confidence = 0.25
    loss.responseMask = "confident"
    teacherOld[:, ::2, 7] = math.log(0.3 / 0.7)  # score 0.3 on even anchors
    teacherOld[:, 1::4, 2] = math.log(0.2 / 0.8)  # 0.2 on some odd anchors: below the threshold
    confident = loss.responseAnchors(preds, targets, teacherOld)
    even = torch.arange(A) % 2 == 0
    assert torch.equal(confident, keep & even)


def test_masked_response_in_the_loss_and_all_new_batch(teacherFile):
    """The loss's response equals responseDivergence over the kept anchors; a batch where every anchor lies in a
    new-class box gives response 0 and a finite loss and gradients."""
    student, loss, outputs, predLogits, teacherLogits = lossOnOldLogits(teacherFile, distilResponseMask="outsideNew")
    keep = loss.responseAnchors(outputs["preds"], TARGETS, teacherLogits)
    assert not keep.all() and keep.any()
    assert loss.distilParts[1].item() == pytest.approx(responseDivergence(predLogits, teacherLogits,
                                                                          anchorMask=keep).item(), rel=1e-5)
    assert loss.distilParts[1].item() != pytest.approx(responseDivergence(predLogits, teacherLogits).item(), rel=1e-3)
    everywhere = torch.tensor([[0, 12, 0.0, 0.0, 1.0, 1.0], [1, 19, 0.0, 0.0, 1.0, 1.0]])
    total = loss(outputs, everywhere)
    assert loss.distilParts[1].item() == 0.0 and torch.isfinite(total)
    total.backward()
    assert all(torch.isfinite(p.grad).all() for p in student.parameters() if p.grad is not None)


def test_cosine_schedule_scales_the_distillation_terms(teacherFile):
    """distilSchedule "cosine": the knowledge and response terms are scaled by (1 + cos(pi * epoch / maxEpoch)) / 2
    (1, 0.5, 0 at epochs 0, 2, 4 of 4) while the detection term keeps its weight; "constant" never changes."""
    mcfg = studentConfig(teacherFile, distilSchedule="cosine", maxEpoch=4)
    student = makeStudent(mcfg).train()
    loss = DistillationDetectionLoss(mcfg, student)
    outputs = student(torch.rand(2, 3, SIZE, SIZE))
    w0, w1, w2 = mcfg.distilLossWeights
    for epoch, scale in ((0, 1.0), (1, (1 + math.cos(math.pi / 4)) / 2), (2, 0.5), (4, 0.0)):
        loss.setEpoch(epoch)
        total = loss(outputs, TARGETS).item()
        knowledge, response = loss.distilParts.tolist()
        detection = (loss.parts * torch.tensor(mcfg.lossWeights)).sum().item() * 2
        assert knowledge > 0 and response > 0
        assert total == pytest.approx(w0 * detection + (w1 * knowledge + w2 * response) * scale * 2, rel=1e-5)
    constant = DistillationDetectionLoss(studentConfig(teacherFile, maxEpoch=4), student)
    constant.setEpoch(3)
    assert constant.scale == 1.0


def test_localisation_hand_worked_zero_and_gradient_sign():
    """regMax 2, one anchor: every side's teacher bins (0.75, 0.25), student (0.5, 0.5); an anchor of weight 0
    contributes nothing."""
    regMax = 2
    teacher = torch.tensor([math.log(3.0), 0.0] * 4).view(1, 1, 4 * regMax).repeat(1, 2, 1)  # (1, 2, 8)
    student = torch.zeros(1, 2, 4 * regMax, requires_grad=True)
    weight = torch.tensor([[1.0, 0.0]])
    loss = localisationDivergence(student, teacher, weight, regMax)
    assert loss.item() == pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5), abs=1e-6)
    loss.backward()
    assert torch.allclose(student.grad[0, 0], torch.tensor([-0.25, 0.25] * 4) / 4, atol=1e-6)  # mean of 4 sides
    assert torch.all(student.grad[0, 1] == 0)
    assert localisationDivergence(teacher, teacher, weight, regMax).item() == 0.0
    dist = torch.randn(2, 7, 4 * 16)
    assert localisationDivergence(dist, dist, torch.rand(2, 7), 16, temperature=2.0).item() == 0.0
    assert localisationDivergence(dist + torch.randn_like(dist), dist, torch.rand(2, 7), 16).item() > 0


@pytest.mark.parametrize("method", ["cwd", "ld"])
def test_loss_zero_terms_for_identical_outputs_and_positive_otherwise(teacherFile, method):
    mcfg = studentConfig(teacherFile, distilMethod=method)
    student = makeStudent(mcfg)
    loss = DistillationDetectionLoss(mcfg, student)
    x = torch.rand(2, 3, SIZE, SIZE)
    preds, backbone, neck = student.teacher(x)
    same = {"preds": [p.clone().requires_grad_() for p in preds], "feats": featureDict(backbone, neck),
            "teacherPreds": preds, "teacherFeats": featureDict(backbone, neck)}
    loss(same, TARGETS)
    assert loss.distilParts.tolist() == [0.0, 0.0]
    student.train()
    total = loss(student(x), TARGETS)  # train-mode BatchNorm: the student's tensors differ from the teacher's
    knowledge, response = loss.distilParts.tolist()
    assert knowledge > 0 and response > 0 and torch.isfinite(total)
    w0, w1, w2 = mcfg.distilLossWeights
    expected = w0 * (loss.parts * torch.tensor(mcfg.lossWeights)).sum() * 2 + (w1 * knowledge + w2 * response) * 2
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)


def test_response_uses_the_teacher_class_logits_only(teacherFile):
    """Box-distribution channels and the classes the teacher does not know never enter the response."""
    mcfg = studentConfig(teacherFile, teacherClassIndexes=[0, 1, 2])
    student = makeStudent(mcfg).train()
    loss = DistillationDetectionLoss(mcfg, student)
    outputs = student(torch.rand(2, 3, SIZE, SIZE))
    loss(outputs, TARGETS)
    reference = loss.distilParts[1].item()
    boxChannels = 4 * mcfg.regMax
    changed = dict(outputs, teacherPreds=[p.clone() for p in outputs["teacherPreds"]])
    for p in changed["teacherPreds"]:
        p[:, :boxChannels] += 3.0  # box distributions
        p[:, boxChannels + 3:] -= 5.0  # classes 3..19, unknown to this teacher
    loss(changed, TARGETS)
    assert loss.distilParts[1].item() == pytest.approx(reference, rel=1e-6)
    for p in changed["teacherPreds"]:
        p[:, boxChannels + 1] += 2.0  # class 1: a teacher class
    loss(changed, TARGETS)
    assert loss.distilParts[1].item() != pytest.approx(reference, rel=1e-3)


@pytest.mark.parametrize("method", ["cwd", "ld"])
def test_no_boxes_and_plain_outputs(teacherFile, method):
    """A batch without a box gives a finite loss; eval-mode (plain) outputs give w0 * DetectionLoss alone."""
    mcfg = studentConfig(teacherFile, distilMethod=method, distilLossWeights=(2.0, 0.5, 0.5))
    student = makeStudent(mcfg).train()
    loss = DistillationDetectionLoss(mcfg, student)
    x = torch.rand(2, 3, SIZE, SIZE)
    total = loss(student(x), torch.zeros(0, 6))
    assert torch.isfinite(total) and torch.isfinite(loss.distilParts).all()
    total.backward()
    student.eval()
    with torch.no_grad():
        plain = student(x)
        assert isinstance(plain, list) and len(plain) == 3
        value = loss(plain, TARGETS)
        assert value.item() == pytest.approx(2.0 * loss.detection(plain, TARGETS).item(), rel=1e-6)
        assert loss.distilParts.tolist() == [0.0, 0.0]
        assert torch.isfinite(loss(plain, torch.zeros(0, 6)))


# --- teacher and student models ------------------------------------------------------------------------------
def test_teacher_is_frozen(teacherFile):
    teacher = YoloTeacherModel(studentConfig(teacherFile))
    teacher.train()
    teacher.requires_grad_(True)
    assert not teacher.training and not any(m.training for m in teacher.modules())
    assert not any(p.requires_grad for p in teacher.parameters())
    preds, backbone, neck = teacher(torch.rand(1, 3, SIZE, SIZE, requires_grad=True))
    assert not any(t.requires_grad for t in list(preds) + list(backbone) + list(neck))
    assert list(featureDict(backbone, neck)) == list(DISTIL_FEATURES)


def test_teacher_of_another_class_count_stops(teacherFile):
    mcfg = makeConfig(inputShape=(SIZE, SIZE), nc=5, modelName="distillation", teacherModelFile=teacherFile,
                      teacherClassIndexes=[0])
    with pytest.raises(MarsError, match="teacherModelFile"):
        YoloStudentModel(mcfg)


def test_student_state_ema_and_device_moves(teacherFile):
    """No teacher key in the student's state; ModelEma's deepcopy shares the teacher; _apply moves it along."""
    student = makeStudent(studentConfig(teacherFile))
    plain = YoloModel(makeConfig(inputShape=(SIZE, SIZE)))
    assert list(student.state_dict()) == list(plain.state_dict())
    assert len(list(student.parameters())) == len(list(plain.parameters()))
    ema = ModelEma(student)
    assert ema.module.teacher is student.teacher
    assert list(ema.module.state_dict()) == list(student.state_dict())
    assert copy.deepcopy(student).teacher is student.teacher
    student.double()
    assert all(p.dtype == torch.float64 for p in student.teacher.parameters())
    student.float()
    student.train()
    assert not student.teacher.training


def methodConfig(mcfg, method):
    return mcfg.copy(distilMethod=method)


@pytest.mark.slow
def test_training_steps_leave_the_teacher_unchanged_and_give_student_gradients(tmp_path):
    """Six trainer steps (epoch 0 with the backbone frozen): every teacher tensor (weights and BatchNorm
    statistics) is bitwise unchanged; the checkpoints hold the student alone and load into a plain YoloModel."""
    teacher = YoloModel(makeConfig(nc=2, inputShape=(SIZE, SIZE)))  # the tiny set's two classes (red, blue)
    teacherPath = str(tmp_path / "teacher2.pth")
    teacher.save(teacherPath)
    teacherState = {k: v.clone() for k, v in teacher.state_dict().items()}
    mcfg = tinyConfig(tmp_path, repeat=3, maxEpoch=2, modelName="distillation", teacherModelFile=teacherPath,
                      checkpointModelFile=teacherPath, teacherClassIndexes=[0], backboneFreezeEpochs=[0],
                      distilSchedule="cosine")
    student = makeStudent(mcfg)
    trainer = Trainer(mcfg, student, DistillationDetectionLoss)
    trainer.run()
    assert len(trainer.history) == 2
    assert trainer.loss.scale == pytest.approx(0.5)  # the trainer told the loss its last epoch (1 of 2)
    for key, value in student.teacher.state_dict().items():
        assert torch.equal(value, teacherState[key]), key
    assert not student.teacher.training
    assert not any(p.requires_grad for p in student.teacher.parameters())
    assert not any(p.grad is not None for p in student.teacher.parameters())
    assert not torch.equal(student.state_dict()["head.clsBranches.0.2.weight"], teacherState["head.clsBranches.0.2.weight"])

    last = torch.load(os.path.join(mcfg.cacheDir(), "last_epoch_weights.pth"), weights_only=True)
    best = torch.load(os.path.join(mcfg.cacheDir(), "best_weights.pth"), weights_only=True)
    for state in (last["model"], last["ema"], best):
        assert set(state) == set(teacherState)
    plain = YoloModel(makeConfig(nc=2, inputShape=(SIZE, SIZE)))
    plain.load(os.path.join(mcfg.cacheDir(), "best_weights.pth"))
    for key, value in trainer.ema.module.state_dict().items():
        assert torch.equal(plain.state_dict()[key], value), key

    # steps by hand: with the backbone frozen only the neck and head learn, unfrozen every parameter does. Every
    # parameter gets a finite gradient; with "ld" (which reaches every box-distribution output) none is all zero.
    x = torch.rand(2, 3, SIZE, SIZE)
    targets = torch.tensor([[0, 0, 0.1, 0.1, 0.5, 0.6], [1, 1, 0.3, 0.2, 0.9, 0.8]])
    for method in ("cwd", "ld"):
        loss = DistillationDetectionLoss(methodConfig(mcfg, method), student)
        for frozen in (True, False):
            student.freezeBackbone() if frozen else student.unfreezeBackbone()
            student.train()
            student.zero_grad(set_to_none=True)
            loss(student(x), targets).backward()
            for name, p in student.named_parameters():
                if frozen and name.startswith("backbone."):
                    assert p.grad is None, name
                    continue
                assert p.grad is not None and torch.isfinite(p.grad).all(), (method, name)
                assert method == "cwd" or p.grad.abs().sum() > 0, (method, name)
            assert all(p.grad is None for p in student.teacher.parameters())


# --- configs ---------------------------------------------------------------------------------------------------
def test_knob_validation():
    with pytest.raises(MarsError, match="distilMethod"):
        makeConfig(distilMethod="mgd")
    with pytest.raises(MarsError, match="distilFeatures"):
        makeConfig(distilFeatures=("feat1", "P3"))
    with pytest.raises(MarsError, match="distilTemperature"):
        makeConfig(distilTemperature=0)
    with pytest.raises(MarsError, match="distilResponseMask"):
        makeConfig(distilResponseMask="inside")
    with pytest.raises(MarsError, match="distilResponseDirection"):
        makeConfig(distilResponseDirection="lower")
    with pytest.raises(MarsError, match="distilSchedule"):
        makeConfig(distilSchedule="linear")
    with pytest.raises(MarsError, match="distilConfidence"):
        makeConfig(distilConfidence=1.5)
    with pytest.raises(MarsError, match="teacherClassIndexes"):
        makeConfig(modelName="distillation", teacherModelFile="t.pth", teacherClassIndexes=[0, 20])
    with pytest.raises(MarsError, match="teacherModelFile"):
        makeConfig(modelName="distillation", teacherClassIndexes=[0])


def test_cfgops_pairs(tmp_path):
    """Missing teacher: one line naming the teacher run; the tiny demo student points at the tiny teacher."""
    for cfgname, teacherRun in (("demo.nano.tiny.distillation", "demo.nano.tiny.teacher"),
                                ("demo.small.distillation", "demo.small.teacher"),
                                ("c1.nano.distillation", "c1.nano.teacher")):
        with pytest.raises(MarsError) as info:
            makeNamedConfig(cfgname, str(tmp_path), "u")
        message = str(info.value)
        assert "\n" not in message and "python mars.py -cfg {} ".format(teacherRun) in message, message
    for module in (c1, demo):
        teacher, student = module.mcfg(["nano", "teacher"]), module.mcfg(["nano", "distillation"])
        assert teacher.trainSelectedClasses == ["A{}".format(i) for i in range(1, 11)]
        assert student.modelName == "distillation" and student.teacherClassIndexes == list(range(10))
        assert student.trainSplitName == "small" and not student.epochValidation
        assert student.trainSelectedClasses is None and student.checkpointModelFile == student.teacherModelFile
        assert student.distilMethod == "cwd" and module.mcfg(["nano", "distillation", "ld"]).distilMethod == "ld"
        assert student.distilLossWeights == (1.0, 0.25, 0.0)  # CWD alone: the response is off (issue 18)
        assert module.mcfg(["nano", "distillation", "ld"]).distilLossWeights == (1.0, 4.0, 0.25)
        with pytest.raises(MarsError, match="distillation.ld"):
            module.mcfg(["nano", "ld"])


def mars(*args):
    environment = dict(os.environ, USER="tester")
    environment.setdefault("OMP_NUM_THREADS", "1")  # tiny tensors: threads only add contention
    return subprocess.run([sys.executable, os.path.join(ROOT, "mars.py"), *args], capture_output=True, text=True,
                          env=environment, timeout=600)


@pytest.mark.slow
def test_tiny_teacher_then_distillation_through_mars(tmp_path):
    root = str(tmp_path)
    result = mars("-cfg", "demo.nano.tiny.teacher", "-root", root, "-train")
    assert result.returncode == 0, result.stderr[-3000:]
    result = mars("-cfg", "demo.nano.tiny.distillation", "-root", root, "-pipe")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert lines[-3].startswith("mAP50=") and lines[-2].startswith("errors (TIDE dAP"), lines[-4:]
    run = os.path.join(root, "tester", "demo.nano.tiny.distillation")
    last = torch.load(os.path.join(run, "__cache__", "last_epoch_weights.pth"), weights_only=True)
    assert not any("teacher" in key for key in list(last["model"]) + list(last["ema"]))
    mcfg = makeNamedConfig("demo.nano.tiny", root, "tester")
    YoloModel(mcfg).load(os.path.join(run, "__cache__", "best_weights.pth"))


# --- scaling: temperature, T^2 and the normalisers (hand-worked, normalisers above 1) ---------------------------
K = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)  # KL((0.75, 0.25) || (0.5, 0.5))
TWO_LN3 = 2 * math.log(3.0)  # a logit of 2 ln 3 at temperature 2: sigmoid(ln 3) = 0.75, softmax against 0: 0.75


def test_response_scaling_at_temperature_2():
    """Teacher logits (2 ln 3, 2 ln 3, 0, 0) at T = 2: probabilities (0.75, 0.75, 0.5, 0.5), sum 2.5; student 0
    (0.5): KL = 2 K + 0 + 0; response = 2 K / 2.5 * T^2 = 3.2 K. Without the normalisation 8 K, without T^2 0.8 K."""
    teacher = torch.tensor([[[TWO_LN3, TWO_LN3], [0.0, 0.0]]])  # (B=1, A=2, k=2)
    student = torch.zeros(1, 2, 2)
    assert responseDivergence(student, teacher, temperature=2.0).item() == pytest.approx(3.2 * K, rel=1e-6)
    # at T = 1 the same logits mean p = 0.9 (sum 2.8): KL(0.9 || 0.5) twice, / 2.8
    kl1 = 0.9 * math.log(1.8) + 0.1 * math.log(0.2)
    assert responseDivergence(student, teacher, temperature=1.0).item() == pytest.approx(2 * kl1 / 2.8, rel=1e-6)


def test_localisation_scaling_at_temperature_2():
    """regMax 2, two anchors of weight 0.9 and 0.6 (sum 1.5): anchor 0's teacher bins (2 ln 3, 0) on every side ->
    (0.75, 0.25) at T = 2, student (0.5, 0.5): K per side, K on average; anchor 1 agrees (0).
    LD = 0.9 K / 1.5 * T^2 = 2.4 K (without the normalisation 3.6 K, without T^2 0.6 K)."""
    regMax = 2
    teacher = torch.zeros(1, 2, 4 * regMax)
    teacher[0, 0] = torch.tensor([TWO_LN3, 0.0] * 4)
    student = torch.zeros(1, 2, 4 * regMax)
    student[0, 1] = teacher[0, 1]
    weight = torch.tensor([[0.9, 0.6]])
    assert localisationDivergence(student, teacher, weight, regMax, temperature=2.0).item() == pytest.approx(2.4 * K, rel=1e-6)


def test_cwd_scaling_at_temperature_2():
    """One channel (2 ln 3, 0) at T = 2 -> (0.75, 0.25), student (0.5, 0.5), batch of two equal maps: K * T^2 = 4 K."""
    teacher = torch.tensor([TWO_LN3, 0.0]).view(1, 1, 1, 2).repeat(2, 1, 1, 1)
    assert channelWiseDivergence(torch.zeros(2, 1, 1, 2), teacher, 2.0).item() == pytest.approx(4 * K, rel=1e-6)


@pytest.mark.parametrize("method", ["cwd", "ld"])
def test_temperature_features_and_anchor_weight_reach_the_loss(teacherFile, method):
    """DistillationDetectionLoss with mcfg.distilTemperature = 2 and mcfg.distilFeatures = (X, Z): its (knowledge,
    response) equal the terms computed here from the same outputs with those knobs -- CWD over X and Z only, LD
    weighted per anchor by the teacher's best old-class sigmoid score (at T = 1) -- and differ from the defaults."""
    mcfg = studentConfig(teacherFile, distilMethod=method, distilTemperature=2.0, distilFeatures=("X", "Z"),
                         teacherClassIndexes=[0, 1, 2, 3])
    student = makeStudent(mcfg).train()
    loss = DistillationDetectionLoss(mcfg, student)
    torch.manual_seed(3)
    outputs = student(torch.rand(2, 3, SIZE, SIZE))
    loss(outputs, TARGETS)
    knowledge, response = loss.distilParts.tolist()
    predDist, predLogits = loss.detection.flatten(outputs["preds"])
    teacherDist, teacherLogits = loss.detection.flatten(outputs["teacherPreds"])
    old = [0, 1, 2, 3]
    assert response == pytest.approx(responseDivergence(predLogits[..., old], teacherLogits[..., old], 2.0).item(), rel=1e-5)
    assert response != pytest.approx(responseDivergence(predLogits[..., old], teacherLogits[..., old], 1.0).item(), rel=1e-3)
    if method == "cwd":
        expected = sum(channelWiseDivergence(outputs["feats"][n], outputs["teacherFeats"][n], 2.0) for n in ("X", "Z"))
        everything = sum(channelWiseDivergence(outputs["feats"][n], outputs["teacherFeats"][n], 2.0) for n in DISTIL_FEATURES)
        assert knowledge != pytest.approx(everything.item(), rel=1e-3)
    else:
        anchorWeight = teacherLogits[..., old].sigmoid().amax(2)  # (B, A)
        expected = localisationDivergence(predDist, teacherDist, anchorWeight, mcfg.regMax, 2.0)
        for other in (teacherLogits.sigmoid().amax(2), teacherLogits[..., old].sigmoid().mean(2),
                      (teacherLogits[..., old] / 2).sigmoid().amax(2), torch.ones_like(anchorWeight)):
            wrong = localisationDivergence(predDist, teacherDist, other, mcfg.regMax, 2.0).item()
            assert knowledge != pytest.approx(wrong, rel=1e-4)
    assert knowledge == pytest.approx(expected.item(), rel=1e-5)


# --- precision ---------------------------------------------------------------------------------------------------
def test_distillation_terms_are_float32_under_autocast():
    student, teacher = torch.randn(2, 8, 12, 12), torch.randn(2, 8, 12, 12)
    plain = channelWiseDivergence(student, teacher, 2.0)

    class Stub(DistillationDetectionLoss):
        def compute(self, outputs, targets):  # what runs inside __call__'s autocast guard
            return channelWiseDivergence(outputs["preds"][0], outputs["teacherPreds"][0], 2.0)

    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = Stub.__call__(object.__new__(Stub), {"preds": [student], "teacherPreds": [teacher]}, None)
    assert value.dtype == torch.float32 and torch.equal(value, plain)


def test_response_anchors_in_old_objects(teacherFile):
    """oldObjects keeps exactly the anchors inside old-class boxes: none in an image with only a new-class box."""
    mcfg = studentConfig(teacherFile, distilResponseMask="oldObjects")
    student = makeStudent(mcfg).train()
    loss = DistillationDetectionLoss(mcfg, student)
    preds = student(torch.rand(2, 3, SIZE, SIZE))["preds"]
    targets = torch.tensor([[0, 14, 0.0, 0.0, 0.5, 0.5],   # new class A15 in image 0: 0..32 px
                            [1, 3, 0.0, 0.0, 0.5, 0.5]])   # old class A4 in image 1, the same place
    A = sum(p.shape[2] * p.shape[3] for p in preds)
    keep = loss.responseAnchors(preds, targets, torch.zeros(2, A, 10))
    assert not keep[0].any()
    assert keep[1].tolist() == [not k for k in expectedAnchorsOutside((0, 0, 32, 32))]


def groupGradients(student, total):
    """{group: gradient norm} of total over the student's backbone, neck, the class branches' first two layers, and
    the rows of old (0..9) / new (10..19) classes of their last layer."""
    student.zero_grad(set_to_none=False)
    total.backward()
    norm = lambda params: math.sqrt(sum(float(p.grad.pow(2).sum()) for p in params if p.grad is not None))  # noqa: E731
    branches = student.head.clsBranches
    last = [b[2] for b in branches]
    return {"backbone": norm(student.backbone.parameters()), "neck": norm(student.neck.parameters()),
            "classBranch": norm([p for b in branches for layer in b[:2] for p in layer.parameters()]),
            "oldRows": math.sqrt(sum(float(c.weight.grad[:10].pow(2).sum() + c.bias.grad[:10].pow(2).sum()) for c in last)),
            "newRows": math.sqrt(sum(float(c.weight.grad[10:].pow(2).sum() + c.bias.grad[10:].pow(2).sum()) for c in last))}


@pytest.mark.parametrize("path", ["network", "head"])
def test_response_path(teacherFile, path):
    """distilResponsePath "head": the response trains the old classes' rows of the last class layer and nothing
    else (no feature, no new class); "network": it reaches the features too. The head logits equal the predictions'
    class logits, so the response's value does not depend on the path."""
    torch.manual_seed(0)
    mcfg = studentConfig(teacherFile, distilResponsePath=path)
    student = makeStudent(mcfg).train()
    loss = DistillationDetectionLoss(mcfg, student)
    outputs = student(torch.rand(2, 3, SIZE, SIZE))
    assert ("headLogits" in outputs) == (path == "head")
    if path == "head":
        for level, logits in zip(outputs["preds"], outputs["headLogits"]):
            assert torch.allclose(level[:, 4 * student.regMax:], logits, atol=1e-6)
    terms = loss.terms(outputs, TARGETS)
    norms = groupGradients(student, terms["response"])
    assert norms["oldRows"] > 0 and norms["newRows"] == 0
    if path == "head":
        assert norms["backbone"] == norms["neck"] == norms["classBranch"] == 0
    else:
        assert norms["backbone"] > 0 and norms["neck"] > 0 and norms["classBranch"] > 0
    reference = DistillationDetectionLoss(studentConfig(teacherFile), student)
    reference(outputs, TARGETS)
    assert loss.distilParts[1].item() == pytest.approx(reference.distilParts[1].item(), rel=1e-5)


@pytest.mark.parametrize("method,mask", [("ld", "confident"), ("cwd", "all")])
def test_whole_distillation_loss_is_float32_under_bf16_autocast(teacherFile, method, mask):
    """bf16 outputs (as autocast makes them) give the loss of the same values in float32, to float32 rounding: the
    flattening, the anchors, the LD anchor weights and the "confident" threshold run in float32."""
    torch.manual_seed(0)
    mcfg = studentConfig(teacherFile, distilMethod=method, distilResponseMask=mask, distilConfidence=0.02)
    student = makeStudent(mcfg).train()
    with torch.no_grad():
        outputs = student(torch.rand(2, 3, SIZE, SIZE))
    half = {k: ([t.bfloat16() for t in v] if isinstance(v, list) else {n: t.bfloat16() for n, t in v.items()})
            for k, v in outputs.items()}
    full = {k: ([t.float() for t in v] if isinstance(v, list) else {n: t.float() for n, t in v.items()})
            for k, v in half.items()}
    expected = DistillationDetectionLoss(mcfg, student)
    value = expected(full, TARGETS)
    loss = DistillationDetectionLoss(mcfg, student)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = loss(half, TARGETS)
    assert got.dtype == torch.float32
    assert torch.allclose(loss.distilParts, expected.distilParts, rtol=1e-6, atol=0)
    assert got.item() == pytest.approx(value.item(), rel=1e-6)
