"""The training loop: one plain loop from batch to optimizer.step(), with EMA, checkpoints, CSV and curves.

Per epoch: freeze/unfreeze the backbone, seed the epoch's randomness; per batch: to device, autocast forward, loss,
(scaled) backward, clip, step, EMA; every LOG_EVERY steps: progress bar; at epoch end: validate, checkpoint,
results.csv, curves.png.

Inside a step the host never reads a value from the device (on a GPU such a read waits for every queued kernel):
a step with a non-finite loss or gradient is skipped on the device (the fused optimizer's found_inf, EMA weight 0)
and counted there; the counts and losses are read every LOG_EVERY steps.
"""
import os
import random
import signal
import time

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from dl.vocdataset import makeDataLoader
from engine.curves import writeCurves, writeHistoryCsv
from inference.preview import writeBatchPreview
from misc.dist import allTrue, anyRank, isMain, rank, worldSize
from misc.log import log, warn
from misc.misc import MarsError, atomicTorchSave, atomicWrite, safeTorchLoad, seedEverything
from train.ema import ModelEma
from train.opt import makeOptimizer
from train.sched import LearningRateSchedule

LAST_FILE, BEST_FILE, INFO_FILE = "last_epoch_weights.pth", "best_weights.pth", "info.txt"
FITNESS_WEIGHTS = (0.1, 0.9)  # best checkpoint: 0.1 * COCO AP50 + 0.9 * AP50:95 on the validation split (as Ultralytics)
SKIP_BEST = "skip"  # saveState's metric for an epoch without a measurement
LOG_EVERY = 10  # steps between progress-bar reads of the loss (each read waits for the device)
CURVES_EVERY = 10.0  # seconds: curves.png is redrawn after an epoch at most this often, and after the last epoch


class TrainingInterrupted(Exception):
    """SIGINT / SIGTERM arrived; the state was saved. exitCode = 128 + signal number."""

    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.exitCode = 128 + signum


def imagesToDevice(images, device, channelsLast=False):
    """uint8 (B, 3, H, W) -> float (B, 3, H, W) in [0, 1] on device. (Targets stay where the loader put them: the
    loss pads them on the host and copies them itself.)"""
    images = images.to(device, non_blocking=True)
    if channelsLast:
        images = images.contiguous(memory_format=torch.channels_last)
    return images.float().div_(255)


def rngStates():
    """Python, NumPy, torch (and CUDA) generator states in types torch.load(weights_only=True) accepts."""
    name, keys, pos, hasGauss, gauss = np.random.get_state()
    states = {"python": random.getstate(), "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, hasGauss, gauss),
              "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def setRngStates(states):
    random.setstate(states["python"])
    name, keys, pos, hasGauss, gauss = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, hasGauss, gauss))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def fitness(result):
    """Evaluator result -> FITNESS_WEIGHTS . (mAP50 COCO, mAP50-95), the number the best checkpoint maximises."""
    return FITNESS_WEIGHTS[0] * result["mAP50Coco"] + FITNESS_WEIGHTS[1] * result["mAP5095"]


def testFault():
    """Test-only hook: MARS_TEST_FAULT='SIGNAL@STEP' (e.g. 'SIGKILL@7') makes the trainer send itself that signal
    right after the optimizer step of that global step index (0-based, counted over epochs), so crash and resume
    tests reach the same moment on any machine. Returns (signal number, step) or None when unset."""
    value = os.environ.get("MARS_TEST_FAULT")
    if not value:
        return None
    name, _, step = value.partition("@")
    if not hasattr(signal, name) or not step.isdigit():
        raise MarsError("MARS_TEST_FAULT={!r} must look like SIGTERM@7 (a test-only hook); unset it".format(value))
    return int(getattr(signal, name)), int(step)


def finiteState(stateDict):
    return all(torch.isfinite(v).all() for v in stateDict.values() if v.is_floating_point())


class BaseTrainer(object):
    """Trains mcfg's model with lossFactory(mcfg, model) on mcfg.trainSplitName; evaluator (optional) measures mAP."""

    def __init__(self, mcfg, model, lossFactory, evaluator=None):
        self.mcfg, self.model, self.evaluator = mcfg, model, evaluator
        self.device = torch.device(mcfg.device)
        cuda = self.device.type == "cuda"
        if mcfg.deterministic:
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
        elif cuda:
            torch.backends.cudnn.benchmark = True
        self.rank, self.worldSize, self.isMain = rank(), worldSize(), isMain()
        if self.worldSize > 1 and mcfg.syncBatchNorm:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # new BN modules: before optimizer and EMA
            self.model = model
        self.channelsLast = cuda
        if self.channelsLast:
            model.to(memory_format=torch.channels_last)
        self.ampDtype = None
        if cuda and mcfg.amp:
            self.ampDtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.ampDtype == torch.float16)
        self.trainLoader = makeDataLoader(mcfg, mcfg.trainSplitName, train=True)
        self.validationLoader = makeDataLoader(mcfg, mcfg.validationSplitName, train=False) if mcfg.epochValidation else None
        self.loss = lossFactory(mcfg, model)
        self.validationLoss = lossFactory(mcfg, model)
        self.optimizer = makeOptimizer(mcfg, model, mcfg.batchSize * self.worldSize)
        self.schedule = LearningRateSchedule(mcfg, len(self.trainLoader))
        self.ema = ModelEma(model, mcfg.emaDecay, mcfg.emaTau)
        self.forward, self.wrappedFrozen = model, None  # DDP wrapper, rebuilt when the frozen set changes
        self.cacheDir = mcfg.cacheDir()
        self.history, self.bestMetric, self.startEpoch = [], None, mcfg.startEpoch
        self.batchesDone, self.partialParts = 0, None  # position inside an interrupted epoch
        self.stopSignal, self.lastCurves = None, 0.0
        self.skips = torch.zeros(3, device=self.device)  # non-finite steps: in all, in a row now, longest run
        self.skipsReported = 0
        self.normBuffers = [b for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                            for b in m.buffers()]  # running mean / var / count: a skipped step puts them back
        self.normStash = [b.clone() for b in self.normBuffers]
        self.fault = testFault()
        self.previewsLeft = mcfg.previewBatches if self.isMain else 0  # first batches drawn to <run>/train_batch*.jpg

    # --- checkpoints -----------------------------------------------------
    def checkpoint(self, epochsDone, batchesDone=0, partialParts=None):
        """Everything a resume needs: weights, EMA, optimizer, scaler, position, best metric, history, RNG states."""
        return {"model": self.model.state_dict(), "ema": self.ema.module.state_dict(), "emaUpdates": self.ema.updates,
                "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(), "epoch": epochsDone,
                "batchesDone": batchesDone, "partialParts": partialParts, "bestMetric": self.bestMetric,
                "history": self.history, "rng": rngStates(),
                "datasetRng": self.trainLoader.dataset.rng.bit_generator.state}

    def resume(self):
        """Continue from __cache__/last_epoch_weights.pth unless mcfg.nobuf."""
        path = os.path.join(self.cacheDir, LAST_FILE)
        if self.mcfg.nobuf or not os.path.isfile(path):
            return
        state = safeTorchLoad(path, "training checkpoint", "run with -nobuf to start over (it replaces the file)")
        try:
            self.model.load_state_dict(state["model"])
            self.ema.module.load_state_dict(state["ema"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scaler.load_state_dict(state["scaler"])
            self.ema.updates = state["emaUpdates"]
            self.startEpoch, self.batchesDone = state["epoch"], state["batchesDone"]
            self.partialParts, self.bestMetric, self.history = state["partialParts"], state["bestMetric"], list(state["history"])
            self.resumeRng = state["rng"], state["datasetRng"]
        except (KeyError, RuntimeError, ValueError, TypeError, AttributeError) as e:
            raise MarsError("checkpoint {} does not fit this run ({}); run with -nobuf to start over".format(
                path, str(e).splitlines()[0])) from e
        log("resuming from {} at epoch {}{}".format(path, self.startEpoch + 1,
                                                  ", batch {}".format(self.batchesDone + 1) if self.batchesDone else ""))

    def saveState(self, epochsDone, batchesDone=0, partialParts=None, metric=None):
        """Write last (full state) and, at an epoch end, best (EMA weights) when metric improved (metric None: every
        epoch is the best; SKIP_BEST: not measured this epoch, best stays), plus info.txt."""
        if not finiteState(self.model.state_dict()) or not finiteState(self.ema.module.state_dict()):
            raise MarsError("weights became non-finite at epoch {}; nothing was saved over the last good checkpoint. "
                            "Lower mcfg.baseLearningRate".format(epochsDone + 1))
        if batchesDone == 0 and metric is not SKIP_BEST and (metric is None or self.bestMetric is None or
                                                              metric > self.bestMetric):
            self.bestMetric = metric
            atomicTorchSave(self.ema.module.state_dict(), os.path.join(self.cacheDir, BEST_FILE))
        atomicTorchSave(self.checkpoint(epochsDone, batchesDone, partialParts), os.path.join(self.cacheDir, LAST_FILE))
        info = "cfgname={}\nphase={}\nnc={}\nepochsDone={}/{}\nbatchesDone={}\nbestMetric={}\n".format(
            self.mcfg.cfgname, self.mcfg.phase, self.mcfg.nc, epochsDone, self.mcfg.maxEpoch, batchesDone, self.bestMetric)
        atomicWrite(os.path.join(self.cacheDir, INFO_FILE), lambda f: f.write(info.encode()))

    def saveEpoch(self, epochsDone, metric):
        self.saveState(epochsDone, metric=metric)
        writeHistoryCsv(self.history, os.path.join(self.mcfg.runDir(), "results.csv"))
        if epochsDone == self.mcfg.maxEpoch or time.time() - self.lastCurves >= CURVES_EVERY:
            writeCurves(self.history, os.path.join(self.mcfg.runDir(), "curves.png"))
            self.lastCurves = time.time()

    # --- loop ------------------------------------------------------------
    def seedEpoch(self, epoch):
        """Every epoch's randomness (shuffle, augmentation) depends only on mcfg.seed and the epoch index."""
        seed = self.mcfg.seed + epoch
        seedEverything(seed)
        self.trainLoader.generator.manual_seed(seed + 100003 * self.rank)  # worker seeds differ per rank
        self.trainLoader.dataset.rng = np.random.default_rng([seed, self.rank])
        if hasattr(self.trainLoader.sampler, "set_epoch"):
            self.trainLoader.sampler.set_epoch(epoch)

    def wrapModel(self, frozen):
        """The callable that runs the forward: the model, DistributedDataParallel under torchrun (rebuilt when
        freezing changes which parameters get gradients), torch.compile'd when mcfg.compile."""
        if self.wrappedFrozen == frozen:
            return
        forward = self.model
        if self.worldSize > 1:
            forward = DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.forward = torch.compile(forward) if self.mcfg.compile else forward
        self.wrappedFrozen = frozen

    def onSignal(self, signum, frame):
        if self.stopSignal is not None:  # a second signal: stop now
            raise KeyboardInterrupt
        self.stopSignal = signum
        warn("{} received: finishing the current step, then saving".format(signal.Signals(signum).name))

    def run(self):
        if self.isMain:
            os.makedirs(self.cacheDir, exist_ok=True)
        self.resume()
        if self.startEpoch >= self.mcfg.maxEpoch:
            log("training already finished ({} epochs in {}); use -nobuf to train again".format(self.mcfg.maxEpoch, self.cacheDir))
            return
        previous = {s: signal.signal(s, self.onSignal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            for epoch in range(self.startEpoch, self.mcfg.maxEpoch):
                self.runEpoch(epoch)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def setMosaic(self, epoch):
        """Mosaic (mcfg.mosaic) for all but the last mcfg.closeMosaicEpochs epochs. Loader workers hold their own copy
        of the dataset, so the loader is rebuilt around the same dataset when the value changes."""
        dataset = self.trainLoader.dataset
        wanted = float(self.mcfg.mosaic) if dataset.augment and epoch < self.mcfg.maxEpoch - self.mcfg.closeMosaicEpochs else 0.0
        if wanted != dataset.mosaic:
            dataset.mosaic = wanted
            self.trainLoader = makeDataLoader(self.mcfg, self.mcfg.trainSplitName, train=True, dataset=dataset)
            log("mosaic {} from epoch {}".format("on ({})".format(wanted) if wanted else "off", epoch + 1))

    def evaluationDue(self, epoch):
        """mAP on the validation split every mcfg.evalEveryEpochs epochs and always after the last one (with an
        evaluator)."""
        every = self.mcfg.evalEveryEpochs
        return self.evaluator is not None and every > 0 and ((epoch + 1) % every == 0 or epoch + 1 == self.mcfg.maxEpoch)

    def runEpoch(self, epoch):
        """Train one epoch, then (rank 0) validate, evaluate, save. The best checkpoint is chosen by fitness
        (FITNESS_WEIGHTS . (COCO AP50, AP50:95) on the validation split) when mAP is measured (mcfg.evalEveryEpochs),
        else by validation loss (mcfg.epochValidation), else it is the last epoch."""
        started = time.time()
        frozen = epoch in self.mcfg.backboneFreezeEpochs
        self.model.freezeBackbone() if frozen else self.model.unfreezeBackbone()
        self.wrapModel(frozen)
        self.setMosaic(epoch)
        self.seedEpoch(epoch)
        if hasattr(self.loss, "setEpoch"):  # distillation: weights that follow the epochs (mcfg.distilSchedule)
            self.loss.setEpoch(epoch)
        trainParts, lr, dataSeconds = self.trainEpoch(epoch, frozen)
        row = {"epoch": epoch + 1, "trainBox": trainParts[0], "trainCls": trainParts[1], "trainDfl": trainParts[2],
               "lr": lr, "frozen": int(frozen), "trainSeconds": time.time() - started, "dataSeconds": dataSeconds}
        if not self.isMain:  # rank 0 validates, evaluates and saves
            return
        validationStarted, metric = time.time(), None
        measuring = self.evaluator is not None and self.mcfg.evalEveryEpochs > 0  # best by fitness
        if self.validationLoader is not None:
            valParts = self.validate()
            row.update(valBox=valParts[0], valCls=valParts[1], valDfl=valParts[2])
            if not measuring:
                metric = -float(sum(w * p for w, p in zip(self.mcfg.lossWeights, valParts)))
        if self.evaluationDue(epoch):
            result = self.evaluator.evaluate(self.ema.module, self.mcfg.validationSplitName)
            metric = fitness(result)
            row.update(mAP50=result["mAP50"], mAP5095=result["mAP5095"], fitness=metric)
            log("validation: mAP50={:.3f} mAP50-95={:.3f} fitness={:.4f}".format(result["mAP50"], result["mAP5095"], metric))
        elif measuring:
            metric = SKIP_BEST  # no measurement this epoch: best stays
        row["validationSeconds"] = time.time() - validationStarted
        row["seconds"] = time.time() - started
        self.history.append(row)
        self.saveEpoch(epoch + 1, metric)

    def trainEpoch(self, epoch, frozen):
        """One pass over the training split -> (mean unweighted box, cls, dfl loss, last lr, seconds spent waiting for
        the loader)."""
        self.model.train()
        numBatches = len(self.trainLoader)
        total = torch.zeros(3, device=self.device)  # read on the host only every LOG_EVERY steps
        skip, self.batchesDone = self.batchesDone, 0
        if skip:  # resuming inside this epoch: replay the loader up to where the interrupted run stopped
            total += torch.as_tensor(self.partialParts, device=self.device)
        bar = tqdm(self.trainLoader, desc="epoch {}/{}".format(epoch + 1, self.mcfg.maxEpoch), leave=True,
                   dynamic_ncols=True, mininterval=0.5, disable=not self.isMain)
        lr, dataSeconds, waitStarted = 0.0, 0.0, time.perf_counter()
        for i, (images, targets, _) in enumerate(bar):
            dataSeconds += time.perf_counter() - waitStarted  # the step waited this long for the loader
            if i < skip:
                if i + 1 == skip:
                    setRngStates(self.resumeRng[0])
                    self.trainLoader.dataset.rng.bit_generator.state = self.resumeRng[1]
                continue
            if self.previewsLeft:
                self.writePreview(images, targets)
            lr = self.trainStep(epoch * numBatches + i, images, targets, total)
            if self.fault is not None and self.fault[1] == epoch * numBatches + i:
                os.kill(os.getpid(), self.fault[0])  # test-only (MARS_TEST_FAULT): a signal right after this step
            read = i % LOG_EVERY == 0 or i + 1 == numBatches
            if read:
                self.report(bar, total / (i + 1), lr, frozen, epoch * numBatches + i)
            if self.stopRequested(read):
                if self.isMain:
                    self.saveState(epoch, i + 1, total.tolist())
                bar.close()
                log("stopped by {} at epoch {} batch {}/{}; state saved in {}. Resume with the same command "
                    "(without -nobuf).".format(signal.Signals(self.stopSignal).name, epoch + 1, i + 1, numBatches,
                                               os.path.join(self.cacheDir, LAST_FILE)))
                raise TrainingInterrupted(self.stopSignal)
            waitStarted = time.perf_counter()
        return (total / max(1, numBatches)).tolist(), lr, dataSeconds

    def trainStep(self, step, images, targets, total):
        """One optimizer step; adds the unweighted loss parts to total (on the device). Returns the lr used.

        Nothing is read on the host: if the loss or the gradient norm is not finite, the fused optimizer skips the
        update (found_inf), the EMA stays put and self.skips counts it -- all decided on the device, and under torchrun
        identically on every rank."""
        lr = self.schedule.apply(self.optimizer, step)
        images = imagesToDevice(images, self.device, self.channelsLast)
        torch._foreach_copy_(self.normStash, self.normBuffers)  # BatchNorm statistics before this step's forward
        with torch.autocast(self.device.type, dtype=self.ampDtype, enabled=self.ampDtype is not None):
            loss = self.loss(self.forward(images), targets) * self.worldSize  # DDP averages gradients over ranks
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        gradNorm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.mcfg.gradientClip)
        badLoss, badGradient = anyRank(torch.stack((~torch.isfinite(loss), ~torch.isfinite(gradNorm))))
        skipped = badLoss | badGradient  # fp16: the grad scaler's overflow steps are skipped too
        self.optimizer.found_inf = skipped.float()
        self.optimizer.step()
        self.scaler.update()  # fp16: lowers the scale after an overflow
        self.ema.update(self.model, skipped, images.shape[0] * self.worldSize)
        self.restoreNormStatistics(skipped)
        total += torch.where(skipped, torch.zeros_like(self.loss.parts), self.loss.parts)
        # count non-finite losses (an fp16 overflow the scaler handles is not one): in all, in a row, longest run
        counted = badLoss if self.scaler.is_enabled() else skipped
        inRow = (self.skips[1] + 1) * counted
        self.skips.copy_(torch.stack((self.skips[0] + counted, inRow, torch.maximum(self.skips[2], inRow))))
        return lr

    def writePreview(self, images, targets):
        """<run>/train_batch.jpg (then train_batch2.jpg, ...): the augmented batch as the network gets it."""
        index = self.mcfg.previewBatches - self.previewsLeft
        name = "train_batch{}.jpg".format(index + 1 if index else "")
        writeBatchPreview(images, targets, self.mcfg.classList, os.path.join(self.mcfg.runDir(), name))
        self.previewsLeft -= 1

    def restoreNormStatistics(self, skipped):
        """A skipped step's forward already moved the BatchNorm running statistics (with a non-finite batch: to NaN);
        put back their values from before the step, decided on the device (no host read)."""
        for buffer, before in zip(self.normBuffers, self.normStash):
            buffer.copy_(torch.where(skipped, before, buffer))

    def report(self, bar, meanParts, lr, frozen, step):
        """The periodic host read: progress bar, and the non-finite steps counted since the last read."""
        values = torch.cat((meanParts, self.skips)).tolist()
        skipped, longest = int(values[3]), int(values[5])
        if skipped > self.skipsReported and self.isMain:
            warn("non-finite loss: {} step(s) skipped by step {} ({} in all, at most {} in a row)".format(
                skipped - self.skipsReported, step, skipped, longest))
            self.skipsReported = skipped
        if longest >= self.mcfg.maxNonFiniteSteps:
            raise MarsError("{} non-finite losses in a row; lower mcfg.baseLearningRate or check the data "
                            "(mcfg.maxNonFiniteSteps={})".format(longest, self.mcfg.maxNonFiniteSteps))
        distil = getattr(self.loss, "distilParts", None)  # distillation: (knowledge, response) of this step
        bar.set_postfix_str("box={:.3f} cls={:.3f} dfl={:.3f}{} lr={:.2e}{}".format(
            values[0], values[1], values[2], "" if distil is None else " kd={:.3f} resp={:.3f}".format(*distil.tolist()),
            lr, " frozen" if frozen else ""))

    def stopRequested(self, read):
        """A signal arrived: stop after this step. Under torchrun the ranks agree at the periodic reads only (a signal
        may reach them at different steps, and agreeing is a read)."""
        if self.worldSize == 1:
            return self.stopSignal is not None
        if not read:
            return False
        (running,) = allTrue([self.stopSignal is None], self.device)
        if not running:
            self.stopSignal = self.stopSignal or signal.SIGTERM
        return not running

    @torch.no_grad()
    def validate(self):
        """Mean unweighted (box, cls, dfl) loss of the EMA model on the validation split (BN in eval mode)."""
        model = self.ema.module
        model.eval()
        total, count = torch.zeros(3, device=self.device), 0
        for images, targets, _ in tqdm(self.validationLoader, desc="validation", leave=False, dynamic_ncols=True):
            images = imagesToDevice(images, self.device, self.channelsLast)
            with torch.autocast(self.device.type, dtype=self.ampDtype, enabled=self.ampDtype is not None):
                self.validationLoss(model(images), targets)
            total += self.validationLoss.parts
            count += 1
        parts = (total / max(1, count)).tolist()
        log("validation loss: box={:.4f} cls={:.4f} dfl={:.4f}".format(*parts))
        return parts
