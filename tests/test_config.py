"""Config tags (config/tags.py, cfgops/): the pretrained tag points at resources/ and a missing file says how to
make it; epoch@N sets every stage's epochs and the student's frozen quarter."""
import os

import pytest
import torch

from cfgops import c1, demo
from cfgops import makeConfig as makeNamedConfig
from config.tags import pretrainedBackbonePath
from misc.errors import MarsError
from model.base.yolomodel import YoloModel
from tests.helpers import makeConfig


def test_pretrained_tag_points_at_resources_and_says_how_to_make_the_file(tmp_path):
    mcfg = makeNamedConfig("demo.nano.tiny.pretrained", str(tmp_path), "u")
    assert mcfg.pretrainedBackboneUrl == pretrainedBackbonePath("nano")
    assert mcfg.pretrainedBackboneUrl.endswith(os.path.join("resources", "pretrained", "backbone", "backbone_nano.pth"))
    assert mcfg.backboneFreezeEpochs == [0, 1, 2]
    mcfg = mcfg.copy(pretrainedBackboneUrl=str(tmp_path / "missing" / "backbone_nano.pth"))
    with pytest.raises(MarsError, match=r"tools/convert\.py yolov8n\.pt .*missing/backbone_nano\.pth --backbone-only"):
        YoloModel(mcfg)
    mcfg = mcfg.copy(pretrainedBackboneUrl=str(tmp_path / "backbone_nano.pth"))
    torch.save({k: v for k, v in YoloModel(makeConfig("nano", nc=20)).state_dict().items() if k.startswith("backbone.")},
               mcfg.pretrainedBackboneUrl)
    model = YoloModel(mcfg)
    saved = torch.load(mcfg.pretrainedBackboneUrl, weights_only=True)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())


def test_epoch_tag_wins_over_the_file_epochs():
    """epoch@N sets the epochs of every stage (the file's 200 / 100 are only defaults), and the student's frozen
    backbone is the first quarter of its epochs."""
    assert c1.mcfg(["nano", "teacher", "epoch@30"]).maxEpoch == 30
    assert c1.mcfg(["nano", "full", "epoch@7"]).maxEpoch == 7
    assert c1.mcfg(["nano", "teacher"]).maxEpoch == 200
    student = c1.mcfg(["nano", "distillation", "epoch@30"])
    assert student.maxEpoch == 30 and student.backboneFreezeEpochs == list(range(7))
    assert c1.mcfg(["nano", "distillation"]).backboneFreezeEpochs == list(range(25))
    assert demo.mcfg(["nano", "distillation", "epoch@20"]).backboneFreezeEpochs == list(range(5))
