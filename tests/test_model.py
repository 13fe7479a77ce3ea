import pytest
import torch

from config.mconfig import PHASES
from model.base.yolomodel import YoloModel
from tests.helpers import makeConfig
from train.loss import DetectionLoss

SHAPES_640 = {  # phase -> (feat0..feat3 channels) from the spec: 128w, 256w, 512w, 512wr
    ph: (int(128 * w), int(256 * w), int(512 * w), int(512 * w * r)) for ph, (w, r, n) in PHASES.items()}


@pytest.mark.parametrize("phase", list(PHASES))
def test_shapes_at_640_every_phase(phase):
    mcfg = makeConfig(phase, nc=20, inputShape=(640, 640), device="meta")
    with torch.device("meta"):  # shapes only: no memory, no compute
        model = YoloModel(mcfg)
        out, feats, neckFeats = model.forwardFeatures(torch.zeros(2, 3, 640, 640))
    c0, c1, c2, c3 = SHAPES_640[phase]
    assert [tuple(f.shape) for f in feats] == [(2, c0, 160, 160), (2, c1, 80, 80), (2, c2, 40, 40), (2, c3, 20, 20)]
    assert [tuple(f.shape) for f in neckFeats] == [(2, c2, 40, 40), (2, c1, 80, 80), (2, c2, 40, 40), (2, c3, 20, 20)]
    assert [tuple(o.shape) for o in out] == [(2, 84, 80, 80), (2, 84, 40, 40), (2, 84, 20, 20)]


def test_nano_real_forward_640_and_320():
    model = YoloModel(makeConfig("nano", nc=3, inputShape=(640, 640))).eval()
    with torch.no_grad():
        assert [tuple(o.shape) for o in model(torch.rand(1, 3, 640, 640))] == [(1, 67, 80, 80), (1, 67, 40, 40), (1, 67, 20, 20)]
        assert [tuple(o.shape) for o in model(torch.rand(1, 3, 320, 320))] == [(1, 67, 40, 40), (1, 67, 20, 20), (1, 67, 10, 10)]


def test_head_bias_prior():
    model = YoloModel(makeConfig("nano", nc=20))
    for box, cls, s in zip(model.head.boxBranches, model.head.clsBranches, model.strides):
        assert torch.all(box[-1].bias == 1.0)
        assert torch.allclose(cls[-1].bias, torch.tensor(5 / 20 / (640 / s) ** 2).log())


def _trainStep(model, mcfg):
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1, momentum=0.9, weight_decay=1e-3)
    model.train()
    targets = torch.tensor([[0, 1, 0.1, 0.1, 0.5, 0.6], [1, 2, 0.3, 0.2, 0.9, 0.8]])
    loss = DetectionLoss(mcfg, model)(model(torch.rand(2, 3, 128, 128)), targets)
    opt.zero_grad()
    loss.backward()
    opt.step()


def test_freeze_backbone_changes_nothing_then_unfreeze_changes():
    mcfg = makeConfig("nano", nc=3, inputShape=(128, 128))
    model = YoloModel(mcfg)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    headBefore = model.head.clsBranches[0][0].conv.weight.clone()
    model.freezeBackbone()
    for _ in range(2):
        _trainStep(model, mcfg)
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, before[k]), k  # parameters and BN running stats, bitwise
    assert not torch.equal(model.head.clsBranches[0][0].conv.weight, headBefore)
    model.unfreezeBackbone()
    _trainStep(model, mcfg)
    after = model.backbone.state_dict()
    assert not torch.equal(after["stem.conv.weight"], before["stem.conv.weight"])
    assert not torch.equal(after["stem.bn.running_mean"], before["stem.bn.running_mean"])


def test_save_load_round_trip_and_wrong_phase(tmp_path):
    from misc.errors import MarsError
    model = YoloModel(makeConfig("nano", nc=4))
    path = str(tmp_path / "w.pth")
    model.save(path)
    other = YoloModel(makeConfig("nano", nc=4)).load(path)
    for k, v in model.state_dict().items():
        assert torch.equal(v, other.state_dict()[k])
    with pytest.raises(MarsError, match="expected"):
        YoloModel(makeConfig("small", nc=4)).load(path)
    with pytest.raises(MarsError, match="clsBranches"):
        YoloModel(makeConfig("nano", nc=5)).load(path)


def test_pretrained_backbone_url(tmp_path):
    src = YoloModel(makeConfig("nano", nc=4))
    path = tmp_path / "bb.pth"
    torch.save({k: v for k, v in src.state_dict().items() if k.startswith("backbone.")}, path)
    model = YoloModel(makeConfig("nano", nc=7, pretrainedBackboneUrl="file://" + str(path)))
    assert torch.equal(model.backbone.stem.conv.weight, src.backbone.stem.conv.weight)
    from misc.errors import MarsError
    with pytest.raises(MarsError, match=r"pretrainedBackboneUrl.*expected|expected.*"):
        YoloModel(makeConfig("small", nc=7, pretrainedBackboneUrl=str(path)))
