"""The config (config/, cfgops/): the pretrained tag points at resources/ and a missing file says how to make it;
epoch@N sets every stage's epochs and the student's frozen quarter; a config is final after finalize()."""
import os

import pytest
import torch

from cfgops import c1, demo
from cfgops import makeConfig as makeNamedConfig
from config.mconfig import ModelConfig
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


def test_config_is_final_after_finalize_and_copies_are_checked():
    """finalize() makes the config final: setting a knob afterwards, or a knob that does not exist (a typo, an old
    name), stops with one line naming it and the fix; copy(knob=value) gives a new final config, checked again, and
    leaves the original as it was."""
    mcfg = makeConfig("nano", nc=2, inputShape=(64, 64))
    with pytest.raises(MarsError, match=r"mcfg.maxEpoch cannot change .* mcfg.copy\(maxEpoch=...\)"):
        mcfg.maxEpoch = 3
    fresh = ModelConfig()
    with pytest.raises(MarsError, match="mcfg.paintScoreThreshold is not a knob .*mcfg.reportScoreThreshold"):
        fresh.paintScoreThreshold = 0.3
    with pytest.raises(MarsError, match="mcfg.batchsize is not a knob .*mcfg.batchSize"):
        fresh.batchsize = 8
    other = mcfg.copy(maxEpoch=3, inputShape=[96, 96])
    assert (other.maxEpoch, other.inputShape, mcfg.maxEpoch, mcfg.inputShape) == (3, (96, 96), 200, (64, 64))
    with pytest.raises(MarsError, match="mcfg.inputShape"):
        mcfg.copy(inputShape=(60, 60))  # checked again: not a multiple of 32
    with pytest.raises(MarsError, match="cannot change"):
        other.seed = 1
