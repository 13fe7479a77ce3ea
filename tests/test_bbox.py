import math

import torch

from misc.bbox import boxIou, boxToDist, distToBox, dflDecode, makeAnchors, pairwiseIou


def test_anchors_cell_centres():
    points, strides = makeAnchors([(2, 3), (1, 1)], [8, 16])
    assert points.shape == (7, 2) and strides.shape == (7, 1)
    assert points[:3].tolist() == [[0.5, 0.5], [1.5, 0.5], [2.5, 0.5]]
    assert points[3].tolist() == [0.5, 1.5]
    assert strides[:, 0].tolist() == [8] * 6 + [16]


def test_dist_box_round_trip():
    anchors = torch.tensor([[5.0, 5.0], [2.5, 7.5]])
    boxes = torch.tensor([[1.0, 2.0, 9.0, 6.0], [0.0, 3.0, 4.0, 10.0]])
    dist = boxToDist(boxes, anchors, 16)
    assert dist.tolist() == [[4.0, 3.0, 4.0, 1.0], [2.5, 4.5, 1.5, 2.5]]
    assert torch.allclose(distToBox(dist, anchors), boxes)
    assert boxToDist(torch.tensor([[0.0, 0.0, 100.0, 100.0]]), anchors[:1], 16).max() == 16 - 0.01


def test_dfl_decode_is_expectation():
    logits = torch.full((1, 1, 64), -1e4)
    for side, bin_ in enumerate([0, 3, 7, 15]):
        logits[0, 0, side * 16 + bin_] = 0.0
    assert torch.allclose(dflDecode(logits, torch.arange(16.0)), torch.tensor([[[0.0, 3.0, 7.0, 15.0]]]))


def test_iou_kinds_hand_worked():
    a = torch.tensor([0.0, 0.0, 2.0, 2.0])
    b = torch.tensor([1.0, 0.0, 3.0, 2.0])  # overlap 2, union 6
    assert math.isclose(boxIou(a, b).item(), 1 / 3, rel_tol=1e-5)
    # enclosing box 3x2 = 6 = union -> GIoU == IoU
    assert math.isclose(boxIou(a, b, "giou").item(), 1 / 3, rel_tol=1e-5)
    # centre distance 1, enclosing diagonal^2 = 13
    assert math.isclose(boxIou(a, b, "diou").item(), 1 / 3 - 1 / 13, rel_tol=1e-5)
    # same aspect ratio -> CIoU == DIoU
    assert math.isclose(boxIou(a, b, "ciou").item(), 1 / 3 - 1 / 13, rel_tol=1e-5)
    far = torch.tensor([10.0, 10.0, 11.0, 11.0])
    assert boxIou(a, far).item() == 0 and boxIou(a, far, "giou").item() < 0
    assert pairwiseIou(torch.stack([a, b]), torch.stack([a, far])).shape == (2, 2)
