import numpy as np
import torch

from inference.painter import FP_COLOR, GT_COLOR, TP_COLOR, paintImage
from inference.predictor import decodeOutputs, nonMaxSuppression


def test_nms_is_class_aware_and_sorted():
    boxes = torch.tensor([[[0.0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [50, 50, 60, 60]]])
    scores = torch.zeros(1, 4, 2)
    scores[0, 0, 0] = 0.9  # kept
    scores[0, 1, 0] = 0.8  # IoU 0.68 with the first, same class: suppressed at 0.5
    scores[0, 2, 1] = 0.7  # same place, other class: kept
    scores[0, 3, 0] = 0.0005  # below the score threshold
    out = nonMaxSuppression(boxes, scores, scoreThreshold=0.001, iouThreshold=0.5)[0]
    assert out[:, 4].tolist() == [0.8999999761581421, 0.699999988079071]
    assert out[:, 5].tolist() == [0, 1]
    out = nonMaxSuppression(boxes, scores, scoreThreshold=0.001, iouThreshold=0.7)[0]
    assert len(out) == 3  # IoU 0.68 < 0.7: both class-0 boxes stay
    assert len(nonMaxSuppression(boxes, scores, maxDetections=1)[0]) == 1
    assert nonMaxSuppression(boxes, torch.zeros(1, 4, 2))[0].shape == (0, 6)


def test_decode_outputs_places_boxes_around_anchors():
    regMax, nc = 16, 3
    levels = [torch.full((1, 4 * regMax + nc, s, s), -20.0) for s in (4, 2, 1)]
    for level in levels:  # every side's distribution peaks at bin 2 -> distance 2 strides
        for side in range(4):
            level[:, side * regMax + 2] = 20.0
    boxes, scores = decodeOutputs(levels, (8, 16, 32), regMax)
    assert boxes.shape == (1, 21, 4) and scores.shape == (1, 21, 3)
    torch.testing.assert_close(boxes[0, 0], torch.tensor([4.0 - 16, 4 - 16, 4 + 16, 4 + 16]))  # anchor (4, 4), stride 8
    torch.testing.assert_close(boxes[0, 20], torch.tensor([16.0 - 64, 16 - 64, 16 + 64, 16 + 64]))  # stride 32


def test_painter_colours():
    image = np.zeros((100, 100, 3), np.uint8)
    painted = paintImage(image, ["a", "b"], gtRows=[[0, 10, 10, 40, 40]],
                         predRows=[[0, 0.9, 50, 50, 90, 90], [1, 0.5, 10, 60, 30, 95]], predIsTp=[True, False])
    assert tuple(painted[25, 10]) == GT_COLOR
    assert tuple(painted[70, 90]) == TP_COLOR
    assert tuple(painted[80, 30]) == FP_COLOR
    assert image.sum() == 0  # the input is not modified
