"""Parity with the reference implementation (Ultralytics): architecture, converted outputs, loss, assigner.
Ultralytics is required (requirements-dev.txt, pinned): without it the tests fail, they never skip."""
import pytest
import torch

from config.mconfig import PHASE_LETTERS
from model.base.yolomodel import YoloModel
from tests.helpers import flatOutputs, makeConfig, referenceModel, requireOracle
from tools.convert import convertStateDict, inferPhase
from train.loss import DetectionLoss
from train.tal import TaskAlignedAssigner

requireOracle("ultralytics")
from ultralytics.utils.loss import v8DetectionLoss  # noqa: E402
from ultralytics.utils.tal import TaskAlignedAssigner as RefAssigner  # noqa: E402

MAX_DIFFS = {}  # phase -> max abs output difference, printed at the end (-s)


def randomiseBatchNorm(model):
    """Give BN layers non-trivial statistics so eval-mode parity checks them too."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


@pytest.mark.parametrize("phase", list(PHASE_LETTERS))
def test_parameter_count_and_converted_outputs(phase):
    nc = 20
    ref = referenceModel(phase, nc)
    randomiseBatchNorm(ref)
    ours = YoloModel(makeConfig(phase, nc=nc))
    # the DFL projection (16 fixed values, requires_grad=False) is a buffer in Mars: compare trainable parameters
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters() if p.requires_grad)
    converted, foundPhase, foundNc, regMax = convertStateDict(ref.state_dict())
    assert (foundPhase, foundNc, regMax) == (phase, nc, 16)
    ours.load_state_dict(converted, strict=True)
    x = torch.rand(1, 3, 160, 160)
    ours.eval(), ref.eval()
    with torch.no_grad():
        refDict = ref(x)[1]
        boxes, scores = flatOutputs(ours(x), 16)
    diff = max((boxes - refDict["boxes"]).abs().max().item(), (scores - refDict["scores"]).abs().max().item())
    MAX_DIFFS[phase] = diff
    print("parity {} eval max|diff| = {:.2e}".format(phase, diff))
    assert diff <= 1e-4


def test_nano_train_mode_outputs_equal():
    ref = referenceModel("nano", 5)
    ours = YoloModel(makeConfig("nano", nc=5))
    ours.load_state_dict(convertStateDict(ref.state_dict())[0])
    ours.train(), ref.train()
    x = torch.rand(2, 3, 128, 128)
    refDict = ref(x)
    boxes, scores = flatOutputs(ours(x), 16)
    diff = max((boxes - refDict["boxes"]).abs().max().item(), (scores - refDict["scores"]).abs().max().item())
    print("parity nano train max|diff| = {:.2e}".format(diff))
    assert diff <= 1e-4


def randomTargets(B, nc, emptyImages=(), perImage=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(B):
        if i in emptyImages:
            continue
        n = int(torch.randint(1, perImage + 1, (1,), generator=g))
        xy = torch.rand(n, 2, generator=g) * 0.8
        wh = torch.rand(n, 2, generator=g) * 0.4 + 0.005  # includes boxes under 16 px
        cls = torch.randint(0, nc, (n, 1), generator=g).float()
        rows.append(torch.cat([torch.full((n, 1), float(i)), cls, xy, (xy + wh).clamp(max=1.0)], 1))
    return torch.cat(rows) if rows else torch.zeros(0, 6)


def referenceLoss(ref, preds, targets, regMax=16):
    xyxy = targets[:, 2:]
    xywh = torch.cat([(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]], 1)
    batch = {"batch_idx": targets[:, 0], "cls": targets[:, 1:2], "bboxes": xywh}
    boxes, scores = flatOutputs(preds, regMax)
    _, parts = v8DetectionLoss(ref)({"boxes": boxes, "scores": scores, "feats": preds}, batch)
    gains = torch.tensor([ref.args.box, ref.args.cls, ref.args.dfl])
    return torch.stack([parts["box_loss"], parts["cls_loss"], parts["dfl_loss"]]) / gains


@pytest.mark.parametrize("dense", [False, True], ids=["candidates", "dense"])
@pytest.mark.parametrize("case", ["random", "some-empty", "all-empty", "one-box"])
def test_loss_parts_equal_reference(case, dense):
    nc, B, size = 7, 4, 128
    ref = referenceModel("nano", nc)
    mcfg = makeConfig("nano", nc=nc, inputShape=(size, size))
    ours = YoloModel(mcfg)
    torch.manual_seed({"random": 1, "some-empty": 2, "all-empty": 3, "one-box": 4}[case])
    preds = [(torch.randn(B, 64 + nc, size // s, size // s) * 2).requires_grad_() for s in (8, 16, 32)]
    targets = {"random": randomTargets(B, nc), "some-empty": randomTargets(B, nc, emptyImages=(1, 3)),
               "all-empty": torch.zeros(0, 6), "one-box": torch.tensor([[2, 3, 0.2, 0.3, 0.6, 0.5]])}[case]
    lossFn = DetectionLoss(mcfg, ours, dense=dense)
    loss = lossFn(preds, targets)
    expected = referenceLoss(ref, [p.detach() for p in preds], targets)
    assert torch.isfinite(loss)
    torch.testing.assert_close(lossFn.parts, expected, rtol=1e-4, atol=1e-6)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in preds)
    assert sum(p.grad.abs().sum() for p in preds) > 0
    if case == "all-empty":
        assert lossFn.parts[0] == 0 and lossFn.parts[2] == 0 and lossFn.parts[1] > 0


def test_assigner_equals_reference():
    torch.manual_seed(5)
    B, A, nc, M = 3, 336, 6, 5
    from misc.bbox import makeAnchors
    points, strides = makeAnchors([(16, 16), (8, 8), (4, 4)], [8, 16, 32])
    anchors = points * strides  # pixels, 128 x 128 input
    assert anchors.shape[0] == A
    predScores = torch.rand(B, A, nc)
    centre = anchors.unsqueeze(0) + torch.randn(B, A, 2) * 4
    wh = torch.rand(B, A, 2) * 40 + 4
    predBoxes = torch.cat([centre - wh / 2, centre + wh / 2], -1)
    gtXy = torch.rand(B, M, 2) * 100
    gtBoxes = torch.cat([gtXy, gtXy + torch.rand(B, M, 2) * 50 + 3], -1)
    gtLabels = torch.randint(0, nc, (B, M, 1)).float()
    gtMask = torch.ones(B, M, 1)
    gtMask[1, 3:] = 0  # padded rows
    gtBoxes[1, 3:] = 0
    gtMask[2] = 0  # an image without boxes
    gtBoxes[2] = 0
    ours = TaskAlignedAssigner(topk=10, nc=nc, alpha=0.5, beta=6.0, minCandidateSize=16)
    ref = RefAssigner(topk=10, num_classes=nc, alpha=0.5, beta=6.0, stride=[8, 16, 32])
    oLabels, oBoxes, oScores, oFg, oIdx = ours(predScores, predBoxes, anchors, gtLabels, gtBoxes, gtMask)
    rLabels, rBoxes, rScores, rFg, rIdx = ref(predScores, predBoxes, anchors, gtLabels, gtBoxes, gtMask)
    assert torch.equal(oFg, rFg) and oFg.any()
    torch.testing.assert_close(oBoxes, rBoxes)
    torch.testing.assert_close(oScores, rScores.float(), rtol=1e-5, atol=1e-7)
    assert torch.equal(oIdx[oFg], rIdx[rFg])


def test_infer_phase_rejects_unknown_widths():
    from misc.errors import MarsError
    sd = convertStateDict(referenceModel("nano", 3).state_dict())[0]
    assert "head.clsBranches.0.2.weight" in sd
    bad = referenceModel("nano", 3).state_dict()
    bad["model.0.conv.weight"] = torch.zeros(24, 3, 3, 3)
    with pytest.raises(MarsError, match="match no phase"):
        inferPhase(bad)
