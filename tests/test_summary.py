"""-summary (engine/summary.py): totals equal the parameter count and Ultralytics' model.info() GFLOPs."""
import os

import pytest

import mars
from engine.summary import modelSummary
from model.base.yolomodel import YoloModel
from tests.helpers import makeConfig

ULTRALYTICS_DFL_WEIGHTS = 16  # Ultralytics' Detect holds its DFL decoding as a fixed 1x1 conv (Mars: a buffer)


@pytest.mark.parametrize("phase, letter", [("nano", "n"), ("small", "s"), ("medium", "m")])
def test_totals_equal_ultralytics_model_info(phase, letter):
    from ultralytics.nn.tasks import DetectionModel
    model = YoloModel(makeConfig(phase, nc=20, inputShape=(640, 640)))
    rows, (params, gflops) = modelSummary(model, (640, 640))
    assert params == sum(p.numel() for p in model.parameters()) == sum(r[2] for r in rows)
    reference = DetectionModel("yolov8{}.yaml".format(letter), nc=20, verbose=False)
    _, referenceParams, _, referenceGflops = reference.info(imgsz=640)
    assert params == referenceParams - ULTRALYTICS_DFL_WEIGHTS
    # 1% is what was asked; the counts agree to 0.02% (Ultralytics also counts its DFL conv, ~0.001 GFLOPs)
    assert gflops == pytest.approx(referenceGflops, rel=2e-3), (gflops, referenceGflops)
    assert [r[0] for r in rows][:2] == ["backbone.stem", "backbone.stage1"] and rows[-1][0] == "head"
    assert rows[0][1] == "1x{}x320x320".format(model.backbone.stem.conv.out_channels)
    assert rows[-1][1].split() == ["1x84x80x80", "1x84x40x40", "1x84x20x20"]


def test_summary_mode_writes_model_txt(tmp_path, capsys):
    assert mars.main(["-cfg", "demo.nano.tiny", "-root", str(tmp_path), "-summary"]) == 0
    path = tmp_path / os.environ.get("USER", "") / "demo.nano.tiny" / "model.txt"
    if not path.is_file():  # the user name comes from the environment; find the run folder
        path = next(tmp_path.glob("*/demo.nano.tiny/model.txt"))
    text = path.read_text()
    assert text.strip().splitlines()[-1].split()[0] == "total"
    assert "neck.bottomUp2" in text and "1x84x12x12" in text  # demo.nano.tiny: 96x96 input, 20 classes
    assert text.strip() in capsys.readouterr().out
