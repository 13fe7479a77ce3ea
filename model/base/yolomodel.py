"""YoloModel: backbone -> neck -> decoupled head, exactly YOLOv8's architecture."""
import torch
import torch.nn as nn

from config.mconfig import PHASE_LETTERS
from misc.errors import MarsError
from misc.files import atomicTorchSave, safeTorchLoad, urlToPath
from model.base.backbone import Backbone
from model.base.head import DetectHead
from model.base.neck import Neck

STRIDES = (8, 16, 32)


def requireStateDict(stateDict, source):
    """MarsError unless stateDict maps names to tensors (a file may hold anything that loads weights-only)."""
    if not isinstance(stateDict, dict) or not all(isinstance(v, torch.Tensor) for v in stateDict.values()):
        raise MarsError("{} is not a state dict of tensors ({}); save one with YoloModel.save() or convert it with "
                        "tools/convert.py".format(source, type(stateDict).__name__))


def checkStateDictShapes(model, stateDict, source, prefix=""):
    """Raise MarsError naming the first missing/unexpected key or shape mismatch between stateDict and model."""
    expected = {k: v.shape for k, v in model.state_dict().items() if k.startswith(prefix)}
    found = {k: v.shape for k, v in stateDict.items()}
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    if missing or unexpected:
        raise MarsError("{} does not fit this model: {} missing keys (e.g. {}), {} unexpected keys (e.g. {}); "
                        "was it made for another model kind?".format(
                            source, len(missing), missing[:2], len(unexpected), unexpected[:2]))
    for k, shape in expected.items():
        if found[k] != shape:
            raise MarsError("{} does not fit this model: {} has shape {}, expected {}; check mcfg.phase and "
                            "the class count (mcfg.classList / mcfg.nc)".format(source, k, tuple(found[k]), tuple(shape)))


class YoloModel(nn.Module):
    """YOLOv8 detector built from mcfg.phase, mcfg.nc, mcfg.regMax (and mcfg.inputShape for the bias prior).

    forward: (B, 3, H, W) float in [0, 1] -> [P3 (B, 4*regMax + nc, H/8, W/8), P4 (.., H/16, W/16), P5 (.., H/32, W/32)].
    """

    def __init__(self, mcfg):
        super().__init__()
        w, r, n = mcfg.widthDepth()
        self.phase, self.nc, self.regMax = mcfg.phase, mcfg.nc, mcfg.regMax
        self.inputShape = tuple(mcfg.inputShape)
        self.strides = STRIDES
        self.backbone = Backbone(w, r, n)
        self.neck = Neck(w, r, n)
        self.head = DetectHead([int(256 * w), int(512 * w), int(512 * w * r)], mcfg.nc, mcfg.regMax)
        self.head.initBiases(self.strides)
        self.backboneFrozen = False
        if mcfg.pretrainedBackboneUrl:
            self.loadBackbone(urlToPath(mcfg.pretrainedBackboneUrl))
        self.to(mcfg.device)

    def forwardFeatures(self, x, classFeatures=None):
        """(B, 3, H, W) -> (head outputs, backbone feats (feat0..feat3), neck feats (C, X, Y, Z)); classFeatures: see
        DetectHead.forward."""
        feats = self.backbone(x)
        neckFeats = self.neck(*feats[1:])
        return self.head(list(neckFeats[1:]), classFeatures), feats, neckFeats

    def forward(self, x):
        return self.forwardFeatures(x)[0]

    # --- freezing --------------------------------------------------------
    def freezeBackbone(self):
        """No gradients and BatchNorm statistics frozen (eval mode) in the backbone: a step changes none of its tensors."""
        self.backboneFrozen = True
        self.backbone.requires_grad_(False)
        self.backbone.eval()

    def unfreezeBackbone(self):
        self.backboneFrozen = False
        self.backbone.requires_grad_(True)
        self.backbone.train(self.training)

    def train(self, mode=True):
        super().train(mode)
        if self.backboneFrozen:
            self.backbone.eval()
        return self

    # --- files -----------------------------------------------------------
    def save(self, path):
        """Atomic write of the state dict (temporary file, then rename)."""
        atomicTorchSave(self.state_dict(), path)

    def load(self, path):
        """Load a full Mars state dict (weights_only=True); a file of another phase/class count raises MarsError."""
        stateDict = safeTorchLoad(path, "model weights")
        stateDict = stateDict.get("model", stateDict) if isinstance(stateDict, dict) else stateDict
        requireStateDict(stateDict, "weights file {}".format(path))
        checkStateDictShapes(self, stateDict, "weights file {}".format(path))
        self.load_state_dict(stateDict)
        return self

    def loadBackbone(self, path):
        """Load a backbone-only state dict (keys 'backbone.*', as written by tools/convert.py --backbone-only)."""
        letter = PHASE_LETTERS[self.phase]
        stateDict = safeTorchLoad(path, "pretrained backbone (mcfg.pretrainedBackboneUrl)",
                                  "make it from an official checkpoint: python tools/convert.py yolov8{}.pt {} "
                                  "--backbone-only".format(letter, path))
        requireStateDict(stateDict, "pretrained backbone {} (mcfg.pretrainedBackboneUrl)".format(path))
        stateDict = {k: v for k, v in stateDict.items() if k.startswith("backbone.")}
        checkStateDictShapes(self, stateDict, "pretrained backbone {} (mcfg.pretrainedBackboneUrl)".format(path), "backbone.")
        self.load_state_dict(stateDict, strict=False)
        return self
