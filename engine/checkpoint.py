"""A run's checkpoints, in <run>/__cache__/:
    last_epoch_weights.pth   everything a resume needs (Checkpointer.save / load), written after every epoch and when
                             a signal stops the run mid-epoch -- always right after an optimizer step, so no gradient
                             accumulated for the next step is lost (none is saved);
    best_weights.pth         the EMA weights of the best epoch (a plain state dict: -eval, -predict, -inspect, and the
                             teacher of a distillation run load it; bestModel);
    info.txt                 where the run stands, for people.
Every file is written to a temporary file and renamed (misc/files.py), so a crash leaves the previous one whole.
"""
import os

import torch

from misc.errors import MarsError
from misc.files import atomicTorchSave, atomicWrite, safeTorchLoad
from misc.log import log

LAST_FILE, BEST_FILE, INFO_FILE = "last_epoch_weights.pth", "best_weights.pth", "info.txt"
RESUMED_FIX = "run with -nobuf to start over (it replaces the file)"


def finiteState(stateDict):
    """True when every floating-point tensor of a state dict is finite."""
    return all(torch.isfinite(v).all() for v in stateDict.values() if v.is_floating_point())


def bestWeightsPath(mcfg):
    return os.path.join(mcfg.cacheDir(), BEST_FILE)


def bestModel(mcfg):
    """The run's best (EMA) weights in a YoloModel in eval mode, for evaluation, prediction and inspection (a
    distilled student is a plain YoloModel once trained). MarsError with the training command when there are none."""
    from model.base.yolomodel import YoloModel
    path = bestWeightsPath(mcfg)
    if not os.path.isfile(path):
        raise MarsError("no trained weights at {}; train first: python mars.py -cfg {} -train -root {}".format(
            path, mcfg.cfgname, mcfg.root))
    return YoloModel(mcfg.copy(pretrainedBackboneUrl=None)).load(path).eval()  # the weights replace any initialisation


class Checkpointer(object):
    """Saves and restores the training state of one run: the live model, EMA, optimizer and grad scaler given here,
    and the loop's position (epoch, batches and samples done in an interrupted epoch, the partial losses, the
    number of ranks), best metric and history given per call. No generator state: an epoch's data are a function of
    (seed, epoch, position) (dl/sampler.py) and a step draws nothing from the global generators."""

    def __init__(self, mcfg, model, ema, optimizer, scaler):
        self.mcfg, self.model, self.ema, self.optimizer, self.scaler = mcfg, model, ema, optimizer, scaler
        self.cacheDir = mcfg.cacheDir()
        self.lastPath = os.path.join(self.cacheDir, LAST_FILE)

    def state(self, position):
        """position: dict epoch, batchesDone, epochPosition, partialParts, worldSize, bestMetric, history ->
        the checkpoint dict (every value a type torch.load(weights_only=True) accepts)."""
        return dict(position, model=self.model.state_dict(), ema=self.ema.module.state_dict(),
                    emaUpdates=self.ema.updates, optimizer=self.optimizer.state_dict(), scaler=self.scaler.state_dict())

    def save(self, position, best=False):
        """Write last_epoch_weights.pth (and best_weights.pth: the EMA weights, when best) and info.txt. Non-finite
        weights are never written: MarsError, and the last good files stay."""
        if not finiteState(self.model.state_dict()) or not finiteState(self.ema.module.state_dict()):
            raise MarsError("weights became non-finite at epoch {}; nothing was saved over the last good checkpoint. "
                            "Lower mcfg.baseLearningRate".format(position["epoch"] + 1))
        os.makedirs(self.cacheDir, exist_ok=True)
        if best:
            atomicTorchSave(self.ema.module.state_dict(), os.path.join(self.cacheDir, BEST_FILE))
        atomicTorchSave(self.state(position), self.lastPath)
        info = "cfgname={}\nphase={}\nnc={}\nepochsDone={}/{}\nbatchesDone={}\nbestMetric={}\n".format(
            self.mcfg.cfgname, self.mcfg.phase, self.mcfg.nc, position["epoch"], self.mcfg.maxEpoch,
            position["batchesDone"], position["bestMetric"])
        atomicWrite(os.path.join(self.cacheDir, INFO_FILE), lambda f: f.write(info.encode()))

    def load(self):
        """Restore the live objects from last_epoch_weights.pth and return its position dict; None when there is no
        checkpoint or mcfg.nobuf. A file that does not load or fit this run: MarsError naming it and the fix."""
        if self.mcfg.nobuf or not os.path.isfile(self.lastPath):
            return None
        state = safeTorchLoad(self.lastPath, "training checkpoint", RESUMED_FIX)
        try:
            self.model.load_state_dict(state["model"])
            self.ema.module.load_state_dict(state["ema"])
            self.optimizer.load_state_dict(state["optimizer"])  # moves its state to the parameters' device
            if state["scaler"]:  # empty when saved without fp16 (CPU, bf16): a new scaler then starts afresh
                self.scaler.load_state_dict(state["scaler"])
            self.ema.updates = state["emaUpdates"]
            position = {k: state[k] for k in ("epoch", "batchesDone", "partialParts", "bestMetric", "history")}
        except (KeyError, RuntimeError, ValueError, TypeError, AttributeError) as e:
            raise MarsError("checkpoint {} does not fit this run ({}); run with -nobuf to start over".format(
                self.lastPath, str(e).splitlines()[0])) from e
        position["worldSize"] = state.get("worldSize", 1)
        position["epochPosition"] = state.get("epochPosition",  # a checkpoint of an older Mars
                                              position["batchesDone"] * self.mcfg.batchSize * position["worldSize"])
        log("resuming from {} at epoch {}{}".format(self.lastPath, position["epoch"] + 1, ", batch {}".format(
            position["batchesDone"] + 1) if position["batchesDone"] else ""))
        return position
