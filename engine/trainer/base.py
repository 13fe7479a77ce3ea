"""The training loop: one plain loop from batch to optimizer.step(), with EMA, checkpoints, CSV and curves."""
import math
import os
import random
import time

import numpy as np
import torch
from tqdm import tqdm

from dl.vocdataset import makeDataLoader
from engine.curves import writeCurves, writeHistoryCsv
from misc.log import log, warn
from misc.misc import MarsError, atomicTorchSave, safeTorchLoad
from train.ema import ModelEma
from train.opt import makeOptimizer
from train.sched import LearningRateSchedule

LAST_FILE, BEST_FILE, INFO_FILE = "last_epoch_weights.pth", "best_weights.pth", "info.txt"
LOG_EVERY = 10  # steps between progress-bar reads of the loss (each read waits for the device)
CURVES_EVERY = 10.0  # seconds: curves.png is redrawn after an epoch at most this often, and after the last epoch


def toDevice(images, targets, device):
    """uint8 (B, 3, H, W) -> float (B, 3, H, W) in [0, 1] on device; targets (N, 6) to device."""
    images = images.to(device, non_blocking=True).float().div_(255)
    return images, targets.to(device, non_blocking=True)


class BaseTrainer(object):
    """Trains mcfg's model with lossFactory(mcfg, model) on mcfg.trainSplitName; evaluator (optional) measures mAP."""

    def __init__(self, mcfg, model, lossFactory, evaluator=None):
        self.mcfg, self.model, self.evaluator = mcfg, model, evaluator
        self.device = torch.device(mcfg.device)
        self.trainLoader = makeDataLoader(mcfg, mcfg.trainSplitName, train=True)
        self.validationLoader = makeDataLoader(mcfg, mcfg.validationSplitName, train=False) if mcfg.epochValidation else None
        self.loss = lossFactory(mcfg, model)
        self.validationLoss = lossFactory(mcfg, model)
        self.optimizer = makeOptimizer(mcfg, model)
        self.schedule = LearningRateSchedule(mcfg, len(self.trainLoader))
        self.ema = ModelEma(model, mcfg.emaDecay, mcfg.emaTau)
        self.cacheDir = mcfg.cacheDir()
        self.history, self.bestMetric, self.startEpoch = [], None, mcfg.startEpoch
        self.nonFiniteSteps = 0
        self.lastCurves = 0.0

    # --- checkpoints -----------------------------------------------------
    def checkpoint(self, epochsDone):
        return {"model": self.model.state_dict(), "ema": self.ema.module.state_dict(), "emaUpdates": self.ema.updates,
                "optimizer": self.optimizer.state_dict(), "epoch": epochsDone, "bestMetric": self.bestMetric,
                "history": self.history}

    def resume(self):
        """Continue from __cache__/last_epoch_weights.pth unless mcfg.nobuf."""
        path = os.path.join(self.cacheDir, LAST_FILE)
        if self.mcfg.nobuf or not os.path.isfile(path):
            return
        state = safeTorchLoad(path, "training checkpoint")
        try:
            self.model.load_state_dict(state["model"])
            self.ema.module.load_state_dict(state["ema"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (KeyError, RuntimeError, ValueError) as e:
            raise MarsError("checkpoint {} does not fit this run ({}); run with -nobuf to start over".format(
                path, str(e).splitlines()[0])) from e
        self.ema.updates = state["emaUpdates"]
        self.startEpoch, self.bestMetric, self.history = state["epoch"], state["bestMetric"], list(state["history"])
        log("resuming from {} at epoch {}".format(path, self.startEpoch + 1))

    def saveEpoch(self, epochsDone, metric):
        """Write last (full state), best (EMA weights) when metric improved, info, CSV and curves."""
        if not all(torch.isfinite(v).all() for v in self.ema.module.state_dict().values() if v.is_floating_point()):
            raise MarsError("weights became non-finite at epoch {}; lower mcfg.baseLearningRate".format(epochsDone))
        improved = metric is None or self.bestMetric is None or metric > self.bestMetric
        if improved:
            self.bestMetric = metric
            atomicTorchSave(self.ema.module.state_dict(), os.path.join(self.cacheDir, BEST_FILE))
        atomicTorchSave(self.checkpoint(epochsDone), os.path.join(self.cacheDir, LAST_FILE))
        with open(os.path.join(self.cacheDir, INFO_FILE), "w") as f:
            f.write("cfgname={}\nphase={}\nnc={}\nepochsDone={}/{}\nbestMetric={}\n".format(
                self.mcfg.cfgname, self.mcfg.phase, self.mcfg.nc, epochsDone, self.mcfg.maxEpoch, self.bestMetric))
        writeHistoryCsv(self.history, os.path.join(self.mcfg.runDir(), "results.csv"))
        if epochsDone == self.mcfg.maxEpoch or time.time() - self.lastCurves >= CURVES_EVERY:
            writeCurves(self.history, os.path.join(self.mcfg.runDir(), "curves.png"))
            self.lastCurves = time.time()

    # --- loop ------------------------------------------------------------
    def seedEpoch(self, epoch):
        """Every epoch's randomness (shuffle, augmentation) depends only on mcfg.seed and the epoch index."""
        seed = self.mcfg.seed + epoch
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        self.trainLoader.generator.manual_seed(seed)
        self.trainLoader.dataset.rng = np.random.default_rng(seed)

    def run(self):
        os.makedirs(self.cacheDir, exist_ok=True)
        self.resume()
        if self.startEpoch >= self.mcfg.maxEpoch:
            log("training already finished ({} epochs in {}); use -nobuf to train again".format(self.mcfg.maxEpoch, self.cacheDir))
            return
        for epoch in range(self.startEpoch, self.mcfg.maxEpoch):
            started = time.time()
            frozen = epoch in self.mcfg.backboneFreezeEpochs
            self.model.freezeBackbone() if frozen else self.model.unfreezeBackbone()
            self.seedEpoch(epoch)
            trainParts, lr = self.trainEpoch(epoch, frozen)
            row = {"epoch": epoch + 1, "trainBox": trainParts[0], "trainCls": trainParts[1], "trainDfl": trainParts[2],
                   "lr": lr, "frozen": int(frozen)}
            metric = None
            if self.validationLoader is not None:
                valParts = self.validate()
                row.update(valBox=valParts[0], valCls=valParts[1], valDfl=valParts[2])
                metric = -float(sum(w * p for w, p in zip(self.mcfg.lossWeights, valParts)))
            if self.evaluator is not None and self.mcfg.evalEveryEpochs > 0 and \
                    ((epoch + 1) % self.mcfg.evalEveryEpochs == 0 or epoch + 1 == self.mcfg.maxEpoch):
                result = self.evaluator.evaluate(self.ema.module, self.mcfg.validationSplitName)
                row.update(mAP50=result["mAP50"], mAP5095=result["mAP5095"])
                metric = result["mAP50"]
            row["seconds"] = time.time() - started
            self.history.append(row)
            self.saveEpoch(epoch + 1, metric)

    def trainEpoch(self, epoch, frozen):
        """One pass over the training split -> (mean unweighted box, cls, dfl loss, last lr)."""
        self.model.train()
        numBatches = len(self.trainLoader)
        total = torch.zeros(3, device=self.device)  # read on the host only every LOG_EVERY steps
        bar = tqdm(self.trainLoader, desc="epoch {}/{}".format(epoch + 1, self.mcfg.maxEpoch), leave=True,
                   dynamic_ncols=True, mininterval=0.5)
        lr = 0.0
        for i, (images, targets, _) in enumerate(bar):
            step = epoch * numBatches + i
            lr = self.schedule.apply(self.optimizer, step)
            images, targets = toDevice(images, targets, self.device)
            loss = self.loss(self.model(images), targets)
            if not torch.isfinite(loss):
                self.skipNonFinite(step)
                continue
            self.nonFiniteSteps = 0
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.mcfg.gradientClip)
            self.optimizer.step()
            self.ema.update(self.model)
            total += self.loss.parts
            if i % LOG_EVERY == 0 or i + 1 == numBatches:
                mean = total / (i + 1)
                bar.set_postfix_str("box={:.3f} cls={:.3f} dfl={:.3f} lr={:.2e}{}".format(
                    mean[0], mean[1], mean[2], lr, " frozen" if frozen else ""))
        return (total / max(1, numBatches)).tolist(), lr

    def skipNonFinite(self, step):
        self.nonFiniteSteps += 1
        warn("non-finite loss at step {}: step skipped ({} in a row)".format(step, self.nonFiniteSteps))
        if self.nonFiniteSteps >= self.mcfg.maxNonFiniteSteps:
            raise MarsError("{} non-finite losses in a row; lower mcfg.baseLearningRate or check the data "
                            "(mcfg.maxNonFiniteSteps={})".format(self.nonFiniteSteps, self.mcfg.maxNonFiniteSteps))

    @torch.no_grad()
    def validate(self):
        """Mean unweighted (box, cls, dfl) loss of the EMA model on the validation split (BN in eval mode)."""
        model = self.ema.module
        model.eval()
        total, count = torch.zeros(3), 0
        for images, targets, _ in tqdm(self.validationLoader, desc="validation", leave=False, dynamic_ncols=True):
            images, targets = toDevice(images, targets, self.device)
            self.validationLoss(model(images), targets)
            total += self.validationLoss.parts.cpu()
            count += 1
        parts = (total / max(1, count)).tolist()
        log("validation loss: box={:.4f} cls={:.4f} dfl={:.4f}".format(*parts))
        return parts
