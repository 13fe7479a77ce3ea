"""DetectionLoss and TaskAlignedAssigner beyond the random parity cases of test_parity.py: anchors claimed by several
ground truths, metric ties, the compact assign() and the fixed-size assignDense() against forward(), the dense loss
(the accelerator path) against the candidate-anchor loss (the CPU path), no host reads in the dense path,
half-precision head outputs, and a loss computed in float32 under autocast."""
import pytest
import torch

from misc.bbox import makeAnchors
from model.base.yolomodel import YoloModel
from tests.helpers import makeConfig, requireOracle
from train.loss import DetectionLoss
from train.tal import TaskAlignedAssigner


def crowdedCase():
    """2 images at 128 x 128: overlapping and duplicated boxes (anchors claimed by several gts), predictions far away
    from some boxes (CIoU clamped to 0: metric ties) and zero scores; image 1 has padding rows."""
    g = torch.Generator().manual_seed(7)
    points, strides = makeAnchors([(16, 16), (8, 8), (4, 4)], [8, 16, 32])
    anchors = points * strides  # (A, 2) pixels
    B, A, nc, M = 2, anchors.shape[0], 4, 6
    predLogits = torch.randn(B, A, nc, generator=g) * 3
    predLogits[:, ::7] = -200.0  # score 0
    centre = anchors.unsqueeze(0) + torch.randn(B, A, 2, generator=g) * 6
    wh = torch.rand(B, A, 2, generator=g) * 30 + 4
    predBoxes = torch.cat([centre - wh / 2, centre + wh / 2], -1)
    predBoxes[:, ::5] += 200.0  # far away: CIoU <= 0 for every gt
    gtBoxes = torch.tensor([[[10, 10, 60, 60], [10, 10, 60, 60], [30, 20, 90, 70], [40, 40, 44, 46], [0, 0, 128, 128],
                             [20, 70, 100, 120]],
                            [[5, 5, 50, 40], [20, 10, 70, 60], [60, 60, 66, 64], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]],
                           dtype=torch.float32)
    gtLabels = torch.tensor([[0, 1, 2, 3, 0, 1], [2, 2, 3, 0, 0, 0]], dtype=torch.float32).unsqueeze(-1)
    gtMask = torch.tensor([[1] * 6, [1, 1, 1, 0, 0, 0]], dtype=torch.float32).unsqueeze(-1)
    assert gtBoxes.shape[1] == M
    return predLogits, predBoxes, anchors, gtLabels, gtBoxes, gtMask, nc


def test_assigner_crowded_case_equals_reference():
    requireOracle("ultralytics")
    from ultralytics.utils.tal import TaskAlignedAssigner as RefAssigner
    predLogits, predBoxes, anchors, gtLabels, gtBoxes, gtMask, nc = crowdedCase()
    predScores = predLogits.sigmoid()
    ours = TaskAlignedAssigner(topk=10, nc=nc, alpha=0.5, beta=6.0, minCandidateSize=16)
    ref = RefAssigner(topk=10, num_classes=nc, alpha=0.5, beta=6.0, stride=[8, 16, 32])
    ref.bs, ref.n_max_boxes = gtBoxes.shape[:2]
    refMaskPos = ref.get_pos_mask(predScores, predBoxes, gtLabels, gtBoxes, anchors, gtMask)[0]
    assert (refMaskPos.sum(1) > 1).any()  # the case has anchors claimed by several gts
    oLabels, oBoxes, oScores, oFg, oIdx = ours(predScores, predBoxes, anchors, gtLabels, gtBoxes, gtMask)
    rLabels, rBoxes, rScores, rFg, rIdx = ref(predScores, predBoxes, anchors, gtLabels, gtBoxes, gtMask)
    assert torch.equal(oFg, rFg) and oFg.any()
    assert torch.equal(oIdx[oFg], rIdx[rFg])
    assert torch.equal(oLabels[oFg], rLabels[rFg])
    torch.testing.assert_close(oBoxes, rBoxes)
    torch.testing.assert_close(oScores, rScores.float(), rtol=1e-5, atol=1e-7)


def test_assign_is_forward_without_the_dense_target():
    predLogits, predBoxes, anchors, gtLabels, gtBoxes, gtMask, nc = crowdedCase()
    predScores = predLogits.sigmoid()
    assigner = TaskAlignedAssigner(topk=10, nc=nc, alpha=0.5, beta=6.0, minCandidateSize=16)
    labels, boxes, scores, fg, index = assigner(predScores, predBoxes, anchors, gtLabels, gtBoxes, gtMask)
    inside = assigner.anchorsInside(anchors, gtBoxes, gtMask.bool())
    for assign, kwargs, scoresIn in [(assign, kwargs, scoresIn) for assign in (assigner.assign, assigner.assignDense)
                                     for kwargs, scoresIn in (({}, predScores), ({"inside": inside}, predScores),
                                                              ({"logits": True}, predLogits))]:
        cLabels, cBoxes, weight, cFg, cIndex = assign(scoresIn, predBoxes, anchors, gtLabels, gtBoxes, gtMask, **kwargs)
        assert torch.equal(cFg, fg) and torch.equal(cIndex, index) and torch.equal(cLabels, labels)
        assert torch.equal(cBoxes, boxes)
        torch.testing.assert_close(weight, scores.sum(-1), rtol=1e-5, atol=1e-7)
        assert (scores > 0).sum(-1).le(1).all() and (weight[~fg] == 0).all()


@pytest.mark.parametrize("dense", [False, True], ids=["candidates", "dense"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_loss_of_half_precision_outputs(dtype, dense):
    """Head outputs in bf16 / fp16 (as under CUDA autocast): a finite float32 loss close to the float32 one."""
    mcfg = makeConfig("nano", nc=5, inputShape=(128, 128))
    lossFn = DetectionLoss(mcfg, YoloModel(mcfg), dense=dense)
    g = torch.Generator().manual_seed(3)
    preds = [torch.randn(2, 64 + 5, 128 // s, 128 // s, generator=g) * 4 for s in (8, 16, 32)]
    targets = torch.tensor([[0, 1, 0.1, 0.1, 0.5, 0.6], [0, 3, 0.4, 0.3, 0.9, 0.7], [1, 0, 0.2, 0.5, 0.4, 0.9]])
    lossFn(preds, targets)
    expected = lossFn.parts.clone()
    half = [p.to(dtype).requires_grad_() for p in preds]
    loss = lossFn(half, targets)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    torch.testing.assert_close(lossFn.parts, expected, rtol=0.05, atol=0.01)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in half)


def lossCase(seed, B=3, nc=5, size=128, boxes=True):
    g = torch.Generator().manual_seed(seed)
    preds = [(torch.randn(B, 64 + nc, size // s, size // s, generator=g) * 3).requires_grad_() for s in (8, 16, 32)]
    rows = []
    for i in range(B - 1) if boxes else ():  # the last image has no boxes
        n = 1 + 3 * i
        xy = torch.rand(n, 2, generator=g) * 0.7
        wh = torch.rand(n, 2, generator=g) * 0.3 + 0.01
        rows.append(torch.cat([torch.full((n, 1), float(i)), torch.randint(0, nc, (n, 1), generator=g).float(),
                               xy, xy + wh], 1))
    rows.append(rows[0][:1].clone() if rows else torch.zeros(0, 6))  # a duplicated box
    return preds, torch.cat(rows), nc, size


@pytest.mark.parametrize("seed,boxes", [(0, True), (1, True), (2, False)])
def test_dense_loss_equals_candidate_loss(seed, boxes):
    """The accelerator path (fixed-size tensors) and the CPU path (candidate anchors): same parts and gradients."""
    preds, targets, nc, size = lossCase(seed, boxes=boxes)
    mcfg = makeConfig("nano", nc=nc, inputShape=(size, size))
    model = YoloModel(mcfg)
    results = []
    for dense in (False, True):
        lossFn = DetectionLoss(mcfg, model, dense=dense)
        grads = torch.autograd.grad(lossFn(preds, targets), preds)
        results.append((lossFn.parts, grads))
    (candParts, candGrads), (denseParts, denseGrads) = results
    torch.testing.assert_close(denseParts, candParts, rtol=1e-5, atol=1e-6)
    for a, b in zip(denseGrads, candGrads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


def test_dense_step_reads_nothing_on_the_host():
    """Model forward, dense loss and backward on the meta device, where tensors have shapes but no values: any read
    of a value on the host (.item(), bool(), nonzero, data-sized outputs) would raise. On CUDA such a read waits for
    the device, so the dense path keeps the GPU's queue full."""
    mcfg = makeConfig("nano", nc=5, inputShape=(128, 128))
    model = YoloModel(mcfg).to("meta")
    lossFn = DetectionLoss(mcfg, model)  # dense: not on the CPU
    images = torch.empty(2, 3, 128, 128, device="meta")
    targets = torch.tensor([[0, 1, 0.1, 0.1, 0.5, 0.6], [0, 3, 0.4, 0.3, 0.9, 0.7], [1, 0, 0.2, 0.5, 0.4, 0.9]])
    loss = lossFn(model(images), targets)  # targets stay on the CPU, as the loader gives them
    loss.backward()
    assert loss.device.type == "meta" and lossFn.parts.shape == (3,)
    assert all(p.grad is not None and p.grad.device.type == "meta" for p in model.parameters())
    with pytest.raises(Exception):  # the check itself can fail: the CPU path reads sizes on the host
        DetectionLoss(mcfg, model, dense=False)(model(images), targets)


def test_loss_is_float32_under_autocast():
    mcfg = makeConfig("nano", nc=3, inputShape=(128, 128))
    model = YoloModel(mcfg).train()
    preds = [p.detach() for p in model(torch.rand(2, 3, 128, 128))]
    targets = torch.tensor([[0, 1, 0.1, 0.1, 0.5, 0.6], [1, 2, 0.3, 0.2, 0.9, 0.7], [1, 0, 0.05, 0.5, 0.3, 0.95]])
    loss = DetectionLoss(mcfg, model)
    plain, plainParts = loss(preds, targets), loss.parts
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast, autocastParts = loss(preds, targets), loss.parts
    assert autocast.dtype == torch.float32 and torch.equal(autocast, plain) and torch.equal(autocastParts, plainParts)
