"""The CUDA-only decisions, checked without a GPU: the AMP dtype (a stubbed capability query), deterministic CUDA's
cuBLAS setting, non-finite gradients under the fp16 grad scaler (a CPU scaler), a checkpoint without scaler state
resumed with one, and a distillation step that copies nothing from the host to the device (the meta device)."""
import os
import traceback

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from engine.device import autocastDtype, setDeterminism
from engine.trainer import Trainer
from misc.errors import MarsError
from model.base.yolomodel import YoloModel
from model.distillation.studentmodel import YoloStudentModel
from tests.helpers import makeConfig, tinyConfig
from train.distilloss import DistillationDetectionLoss
from train.loss import DetectionLoss


@pytest.mark.parametrize("capability, expected", [((7, 0), torch.float16), ((7, 5), torch.float16),
                                                  ((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16)],
                         ids=["V100", "T4", "A100", "H100"])
def test_bf16_only_where_the_card_has_it_natively(monkeypatch, capability, expected):
    """torch.cuda.is_bf16_supported() also says yes where bf16 is emulated (T4, V100: no bf16 convolutions); Mars asks
    the named card's compute capability: bf16 from 8.0, else fp16 (with the grad scaler)."""
    asked = []
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: asked.append(device) or capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)  # what it says
    monkeypatch.setattr(torch.version, "hip", None)
    assert autocastDtype(torch.device("cuda:1"), True) == expected
    assert asked == [torch.device("cuda:1")]  # the card that trains, not the current one
    assert autocastDtype(torch.device("cuda:1"), False) is None
    assert autocastDtype(torch.device("cpu"), True) is None


def test_deterministic_cuda_sets_the_cublas_workspace(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    try:
        setDeterminism(True, "cuda")
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")  # the user's own value stays
        setDeterminism(True, "cuda")
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"
        setDeterminism(True, "cpu")
        assert torch.are_deterministic_algorithms_enabled() and not torch.is_deterministic_algorithms_warn_only_enabled()
    finally:
        torch.use_deterministic_algorithms(False)


def nanGradientTrainer(root, nanSteps, initialScale):
    """A CPU trainer with an enabled grad scaler (as fp16 on CUDA) whose first nanSteps backward passes give one
    parameter a NaN gradient under a finite loss. 12 steps per epoch; mcfg.maxNonFiniteSteps = 3."""
    mcfg = tinyConfig(root, repeat=12, maxEpoch=1, maxNonFiniteSteps=3)
    trainer = Trainer(mcfg, YoloModel(mcfg), DetectionLoss)
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=initialScale)
    calls = []
    parameter = next(trainer.model.parameters())
    parameter.register_hook(lambda g: (calls.append(1), g * float("nan") if len(calls) <= nanSteps else g)[1])
    return trainer


def test_non_finite_gradients_under_the_scaler_stop_the_run(tmp_path):
    """Every gradient NaN, the loss finite: the scaler halves its scale 16 -> 1 (overflows it handles, not counted),
    then each step at scale <= 1 counts; 3 in a row stop the run with one clear error instead of halving forever."""
    trainer = nanGradientTrainer(tmp_path / "a", nanSteps=10 ** 6, initialScale=16.0)
    with pytest.raises(MarsError, match="non-finite"):
        trainer.run()
    assert trainer.skips.tolist()[2] >= 3
    assert trainer.scaler.get_scale() < 1


def test_a_few_fp16_overflows_are_the_scalers_business(tmp_path):
    """Three overflow steps at a scale above 1 (what fp16 gives while the scaler finds its scale): skipped and not
    counted as non-finite; the run finishes."""
    trainer = nanGradientTrainer(tmp_path / "b", nanSteps=3, initialScale=2.0 ** 16)
    trainer.run()
    assert trainer.skips.tolist() == [0.0, 0.0, 0.0]
    assert trainer.scaler.get_scale() == 2.0 ** 13
    assert len(trainer.history) == 1


def test_a_checkpoint_without_scaler_state_resumes_with_a_scaler(tmp_path):
    """A run saved on the CPU (its disabled scaler saves {}) resumed where fp16 enables the scaler (a CUDA card): the
    scaler starts afresh instead of refusing the checkpoint."""
    mcfg = tinyConfig(tmp_path, maxEpoch=1)
    Trainer(mcfg, YoloModel(mcfg), DetectionLoss).run()
    mcfg = mcfg.copy(maxEpoch=2)
    resumed = Trainer(mcfg, YoloModel(mcfg), DetectionLoss)
    resumed.scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    resumed.resume()
    assert resumed.startEpoch == 1 and resumed.scaler.get_scale() == 1024.0


class HostToDevice(TorchDispatchMode):
    """Records every operation that moves a host tensor (more than a scalar) to the meta device or mixes one into a
    meta operation, except the loss's own padded-target copy (DetectionLoss.paddedTargets)."""

    def __init__(self):
        super().__init__()
        self.found = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        outputs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        hostInput = any(t.device.type == "cpu" and t.dim() > 0 for t in inputs)
        onDevice = any(t.device.type == "meta" for t in inputs + outputs)
        if hostInput and onDevice and not any(f.name == "paddedTargets" for f in traceback.extract_stack()):
            self.found.append(str(func))
        return out


@pytest.mark.parametrize("method, mask", [("cwd", "all"), ("ld", "all"), ("cwd", "outsideNew"), ("cwd", "confident")])
def test_distillation_step_copies_nothing_to_the_device(tmp_path, monkeypatch, method, mask):
    """Student and teacher on the meta device, targets on the CPU as the loader gives them: after the first call
    (which moves the old-class index once), a distillation step's loss and backward neither index a device tensor
    with a Python list or a host tensor (a host-to-device copy, and a wait, at every step on CUDA) nor move any host
    tensor to the device besides the padded targets."""
    teacher = YoloModel(makeConfig(nc=20, inputShape=(64, 64)))
    teacherFile = str(tmp_path / "teacher.pth")
    teacher.save(teacherFile)
    mcfg = makeConfig(nc=20, inputShape=(64, 64), modelName="distillation", teacherModelFile=teacherFile,
                      checkpointModelFile=teacherFile, teacherClassIndexes=[0, 2, 3, 5, 7, 11], distilMethod=method,
                      distilResponseMask=mask)
    student = YoloStudentModel(mcfg).to("meta").train()
    loss = DistillationDetectionLoss(mcfg, student)
    images = torch.empty(2, 3, 64, 64, device="meta")
    targets = torch.tensor([[0, 3, 0.1, 0.1, 0.5, 0.6], [1, 14, 0.3, 0.2, 0.9, 0.8]])
    loss(student(images), targets)
    indexed = []
    original = torch.Tensor.__getitem__

    def getitem(self, index):
        parts = index if isinstance(index, tuple) else (index,)
        if self.device.type == "meta" and any(isinstance(p, list) or (isinstance(p, torch.Tensor) and p.device.type == "cpu")
                                              for p in parts):
            indexed.append("".join(traceback.format_stack(limit=2)[:1]))
        return original(self, index)
    monkeypatch.setattr(torch.Tensor, "__getitem__", getitem)
    with HostToDevice() as copies:
        value = loss(student(images), targets)
        value.backward()
    monkeypatch.undo()
    assert indexed == [] and copies.found == []
    assert value.device.type == "meta"


def test_a_checkpoint_resumes_into_a_channels_last_model(tmp_path):
    """CUDA trains in channels_last: a checkpoint saved from a contiguous CPU model loads into a channels_last model
    with every weight equal and the memory format kept (load_state_dict copies into the existing tensors)."""
    mcfg = tinyConfig(tmp_path, maxEpoch=1)
    trainer = Trainer(mcfg, YoloModel(mcfg), DetectionLoss)
    trainer.run()
    resumed = Trainer(mcfg.copy(maxEpoch=2), YoloModel(mcfg).to(memory_format=torch.channels_last), DetectionLoss)
    resumed.resume()
    for (name, saved), loaded in zip(trainer.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(saved, loaded), name
        if loaded.dim() == 4:
            assert loaded.is_contiguous(memory_format=torch.channels_last), name
