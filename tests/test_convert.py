"""tools/convert.py on an Ultralytics checkpoint saved as Ultralytics saves it, and on a plain state dict."""
import subprocess
import sys

import pytest
import torch

from model.base.yolomodel import YoloModel
from tests.helpers import flatOutputs, makeConfig, referenceModel, requireOracle

requireOracle("ultralytics")

pytestmark = pytest.mark.slow  # each test runs tools/convert.py in subprocesses (3 to 5 s)

ROOT = __import__("os").path.dirname(__import__("os").path.dirname(__import__("os").path.abspath(__file__)))


def runConvert(*args):
    return subprocess.run([sys.executable, "tools/convert.py", *args], cwd=ROOT, capture_output=True, text=True)


def test_convert_ultralytics_pt_full_and_backbone(tmp_path):
    ref = referenceModel("nano", 4).eval()
    src = tmp_path / "yolov8n.pt"
    torch.save({"model": ref, "ema": None, "epoch": -1}, src)  # the layout Ultralytics writes
    out = tmp_path / "mars.pth"
    result = runConvert(str(src), str(out))
    assert result.returncode == 0, result.stderr
    assert "phase=nano" in result.stdout and "nc=4" in result.stdout
    model = YoloModel(makeConfig("nano", nc=4)).load(str(out)).eval()
    x = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        boxes, scores = flatOutputs(model(x), 16)
        refDict = ref(x)[1]
    assert (boxes - refDict["boxes"]).abs().max() <= 1e-4 and (scores - refDict["scores"]).abs().max() <= 1e-4

    backbone = tmp_path / "bb.pth"
    assert runConvert(str(src), str(backbone), "--backbone-only").returncode == 0
    keys = torch.load(backbone, weights_only=True).keys()
    assert keys and all(k.startswith("backbone.") for k in keys)
    student = YoloModel(makeConfig("nano", nc=11, pretrainedBackboneUrl="file://" + str(backbone)))
    assert torch.equal(student.backbone.stem.conv.weight, model.backbone.stem.conv.weight)


def test_convert_plain_state_dict_and_errors(tmp_path):
    src = tmp_path / "sd.pt"
    torch.save(referenceModel("small", 2).state_dict(), src)
    result = runConvert(str(src), str(tmp_path / "o.pth"))
    assert result.returncode == 0 and "phase=small" in result.stdout
    torch.save({"foo.weight": torch.zeros(3)}, tmp_path / "bad.pt")
    result = runConvert(str(tmp_path / "bad.pt"), str(tmp_path / "o2.pth"))
    assert result.returncode == 2 and result.stderr.startswith("mars: error:") and "Ultralytics" in result.stderr
    assert not (tmp_path / "o2.pth").exists()
    result = runConvert(str(tmp_path / "missing.pt"), str(tmp_path / "o3.pth"))
    assert result.returncode == 2 and "does not exist" in result.stderr
