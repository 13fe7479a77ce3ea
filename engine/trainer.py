"""The training loop: one plain loop from batch to optimizer.step(), with EMA, checkpoints, CSV and curves.

Per epoch: freeze/unfreeze the backbone, seed the epoch's randomness; per batch: to device, autocast forward, loss,
(scaled) backward -- the gradients of the batches of one optimizer step add up (mcfg.nominalBatchSize) -- and at the
step's last batch: clip, step, EMA; progress bar about every LOG_EVERY batches; at epoch end: validate, checkpoint,
results.csv, curves.png, and <run>/tensorboard/ when tensorboard is installed (engine/tensorboard.py).

Inside a step the host never reads a value from the device (on a GPU such a read waits for every queued kernel):
a step with a non-finite loss or gradient is skipped on the device (the fused optimizer's found_inf, EMA weight 0)
and counted there; the counts and losses are read at the periodic progress-bar reads.
"""
import contextlib
import os
import signal
import time

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from dl.vocdataset import makeDataLoader
from engine.checkpoint import Checkpointer
from engine.curves import writeCurves, writeHistoryCsv
from engine.device import autocastDtype, setDeterminism
from engine.evaluator import Evaluator
from engine.preview import writeBatchPreview
from engine.signals import TrainingInterrupted, testFault
from engine.tensorboard import VALIDATION_IMAGES, makeBoardWriter
from misc.dist import allTrue, anyRank, isMain, mainWaiter, rank, worldSize
from misc.errors import MarsError
from misc.img import imagesToDevice
from misc.log import log, warn
from misc.seed import seedEverything
from train.distilloss import DistillationDetectionLoss
from train.ema import ModelEma
from train.loss import DetectionLoss
from train.opt import makeOptimizer
from train.sched import LearningRateSchedule

LOSSES = {"base": DetectionLoss, "distillation": DistillationDetectionLoss}  # mcfg.modelName -> loss
SKIP_BEST = "skip"  # saveState's metric for an epoch without a measurement
LOG_EVERY = 10  # batches between progress-bar reads of the loss (each read waits for the device), at optimizer steps
CURVES_EVERY = 10.0  # seconds: curves.png is redrawn after an epoch at most this often, and after the last epoch


def fitness(result):
    """Evaluator result -> the number the best checkpoint maximises: the validation mAP50-95 (COCO) alone, as
    Ultralytics 8.4.190 (utils/metrics.py Metric.fitness, weights 0, 0, 0, 1 on P, R, mAP50, mAP50-95; older releases
    used 0.1 mAP50 + 0.9 mAP50-95). results.csv's fitness column is its mAP5095 column."""
    return result["mAP5095"]


class Trainer(object):
    """Trains mcfg's model with lossFactory(mcfg, model) on mcfg.trainSplitName; evaluator (optional) measures mAP.

    State: the model (DDP / compile wrapper in self.forward, the DDP module in self.ddp), its EMA, the optimizer, the
    grad scaler (fp16 only), the learning-rate and accumulation schedule, the training loader (its EpochBatchSampler
    says which samples an epoch holds), the loss and the validation loss; the loop's position (startEpoch, and
    batchesDone / epochPosition / partialParts inside an interrupted epoch), bestMetric and history (one results.csv
    row per epoch); the non-finite step counts (self.skips, on the device); the optimizer step being accumulated
    (self.badLoss, self.stepImages); the checkpointer (engine/checkpoint.py).

    Order of calls: run() -> resume() -> per epoch runEpoch(): freeze or unfreeze the backbone, wrapModel(),
    setMosaic(), seedEpoch(), trainEpoch() -> trainStep() per batch, optimizerStep() at a step's last batch (report()
    about every LOG_EVERY batches, stopRequested() after each optimizer step: saveState() and TrainingInterrupted on a
    signal) -> on rank 0 endEpoch(): validate(), the evaluator's mAP when due, saveEpoch() (checkpoints, results.csv,
    curves.png), the row to self.board (<run>/tensorboard/, when tensorboard is installed) -> every rank waits for
    rank 0 (waitForMain) before the next epoch.
    """

    def __init__(self, mcfg, model, lossFactory, evaluator=None):
        self.mcfg, self.model, self.evaluator = mcfg, model, evaluator
        self.device = torch.device(mcfg.device)
        cuda = self.device.type == "cuda"
        setDeterminism(mcfg.deterministic, self.device.type)
        self.rank, self.worldSize, self.isMain = rank(), worldSize(), isMain()
        self.waitForMain = mainWaiter(mcfg.mainWaitMinutes)  # torchrun: the others wait while rank 0 validates
        if self.worldSize > 1 and mcfg.syncBatchNorm:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # new BN modules: before optimizer and EMA
            self.model = model
        self.channelsLast = cuda
        if self.channelsLast:
            model.to(memory_format=torch.channels_last)
        self.ampDtype = autocastDtype(self.device, mcfg.amp)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.ampDtype == torch.float16)
        self.trainLoader = makeDataLoader(mcfg, mcfg.trainSplitName, train=True)
        self.validationLoader = makeDataLoader(mcfg, mcfg.validationSplitName, train=False) if mcfg.epochValidation else None
        self.loss = lossFactory(mcfg, model)
        self.validationLoss = lossFactory(mcfg, model)
        self.schedule = LearningRateSchedule(mcfg, len(self.trainLoader), mcfg.batchSize * self.worldSize)
        self.optimizer = makeOptimizer(mcfg, model, self.schedule.stepImages)
        self.ema = ModelEma(model, mcfg.emaDecay, mcfg.emaTau)
        self.forward, self.ddp, self.wrappedFrozen = model, None, None  # DDP: rebuilt when the frozen set changes
        self.history, self.bestMetric, self.startEpoch = [], None, mcfg.startEpoch
        self.batchesDone, self.epochPosition, self.partialParts = 0, 0, None  # where an interrupted epoch stopped
        self.stopSignal, self.lastCurves = None, 0.0
        self.skips = torch.zeros(3, device=self.device)  # non-finite steps: in all, in a row now, longest run
        self.badLoss, self.stepImages = None, 0  # the optimizer step being accumulated: a non-finite loss, images
        self.skipsReported = 0
        self.normBuffers = [b for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                            for b in m.buffers()]  # running mean / var / count: a skipped step puts them back
        self.normStash = [b.clone() for b in self.normBuffers]
        self.fault = testFault()
        self.checkpointer = Checkpointer(mcfg, self.model, self.ema, self.optimizer, self.scaler)
        self.previewsLeft = mcfg.previewBatches if self.isMain else 0  # first batches drawn to <run>/train_batch*.jpg
        self.board = None  # rank 0 with tensorboard installed: <run>/tensorboard/ (engine/tensorboard.py), set by run()

    # --- checkpoints -----------------------------------------------------
    def position(self, epochsDone, batchesDone=0, partialParts=None, epochPosition=0):
        """Where the loop stands, as the checkpoint keeps it (engine/checkpoint.py)."""
        return {"epoch": epochsDone, "batchesDone": batchesDone, "epochPosition": epochPosition,
                "partialParts": partialParts, "worldSize": self.worldSize, "bestMetric": self.bestMetric,
                "history": self.history}

    def checkpoint(self, epochsDone, batchesDone=0, partialParts=None, epochPosition=0):
        """The checkpoint dict of this position: everything a resume needs."""
        return self.checkpointer.state(self.position(epochsDone, batchesDone, partialParts, epochPosition))

    def resume(self):
        """Continue from __cache__/last_epoch_weights.pth unless mcfg.nobuf (the checkpointer restores the model, EMA,
        optimizer and scaler; the position is the loop's)."""
        position = self.checkpointer.load()
        if position is None:
            return
        self.startEpoch, self.batchesDone, self.epochPosition = (position[k] for k in ("epoch", "batchesDone",
                                                                                     "epochPosition"))
        self.partialParts, self.bestMetric = position["partialParts"], position["bestMetric"]
        self.history = list(position["history"])
        if self.batchesDone and position["worldSize"] != self.worldSize:
            log("the checkpoint was saved mid-epoch by {} rank(s), this run has {}: the epoch's remaining {} samples "
                "are shared out among them".format(position["worldSize"], self.worldSize,
                                                   len(self.trainLoader.dataset) - self.epochPosition))

    def saveState(self, epochsDone, batchesDone=0, partialParts=None, metric=None, epochPosition=0):
        """Write last (full state) and, at an epoch end, best (EMA weights) when metric improved (metric None: every
        epoch is the best; SKIP_BEST: not measured this epoch, best stays), plus info.txt."""
        best = batchesDone == 0 and metric is not SKIP_BEST and (metric is None or self.bestMetric is None or
                                                                  metric > self.bestMetric)
        if best:
            self.bestMetric = metric
        self.checkpointer.save(self.position(epochsDone, batchesDone, partialParts, epochPosition), best)

    def saveEpoch(self, epochsDone, metric):
        self.saveState(epochsDone, metric=metric)
        writeHistoryCsv(self.history, os.path.join(self.mcfg.runDir(), "results.csv"))
        if epochsDone == self.mcfg.maxEpoch or time.time() - self.lastCurves >= CURVES_EVERY:
            writeCurves(self.history, os.path.join(self.mcfg.runDir(), "curves.png"))
            self.lastCurves = time.time()

    # --- loop ------------------------------------------------------------
    def seedEpoch(self, epoch):
        """The epoch's data (order, images, augmentation, mosaic partners) are a function of (mcfg.seed, epoch,
        position) alone (dl/sampler.py); a resumed epoch starts at the first position not yet trained. The global
        generators are seeded per epoch for anything else."""
        seedEverything(self.mcfg.seed + epoch)
        self.trainLoader.batch_sampler.setEpoch(epoch, self.epochPosition)

    def wrapModel(self, frozen):
        """The callable that runs the forward: the model, DistributedDataParallel under torchrun (rebuilt when
        freezing changes which parameters get gradients), torch.compile'd when mcfg.compile."""
        if self.wrappedFrozen == frozen:
            return
        forward, self.ddp = self.model, None
        if self.worldSize > 1:
            deviceIds = [self.device.index] if self.device.type == "cuda" else None
            forward = self.ddp = DistributedDataParallel(self.model, device_ids=deviceIds)
        self.forward = torch.compile(forward) if self.mcfg.compile else forward
        self.wrappedFrozen = frozen

    def onSignal(self, signum, frame):
        if self.stopSignal is not None:  # a second signal: stop now
            raise KeyboardInterrupt
        self.stopSignal = signum
        warn("{} received: finishing the current step, then saving".format(signal.Signals(signum).name))

    def run(self):
        self.resume()
        if self.startEpoch >= self.mcfg.maxEpoch:
            log("training already finished ({} epochs in {}); use -nobuf to train again".format(self.mcfg.maxEpoch,
                                                                                           self.mcfg.cacheDir()))
            return
        previous = {s: signal.signal(s, self.onSignal) for s in (signal.SIGINT, signal.SIGTERM)}
        self.board = makeBoardWriter(self.mcfg, self.startEpoch) if self.isMain else None
        try:
            for epoch in range(self.startEpoch, self.mcfg.maxEpoch):
                self.runEpoch(epoch)
        finally:
            if self.board is not None:
                self.board.close()
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
        """Train one epoch, then (rank 0) validate, evaluate, save. The best checkpoint is chosen by fitness (the
        validation mAP50-95) when mAP is measured (mcfg.evalEveryEpochs), else by validation loss
        (mcfg.epochValidation), else it is the last epoch."""
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
        if self.isMain:  # rank 0 validates, evaluates and saves; the other ranks wait for it
            self.endEpoch(epoch, row, started)
        self.waitForMain()

    def endEpoch(self, epoch, row, started):
        """Rank 0 after an epoch: validation loss, mAP when due, the best and last checkpoints, results.csv, curves."""
        validationStarted, metric = time.time(), None
        measuring = self.evaluator is not None and self.mcfg.evalEveryEpochs > 0  # best by fitness (mAP50-95)
        if self.validationLoader is not None:
            valParts = self.validate()
            row.update(valBox=valParts[0], valCls=valParts[1], valDfl=valParts[2])
            if not measuring:
                metric = -float(sum(w * p for w, p in zip(self.mcfg.lossWeights, valParts)))
        if self.evaluationDue(epoch):
            result = self.evaluator.evaluate(self.ema.module, self.mcfg.validationSplitName)
            metric = fitness(result)
            row.update(mAP50=result["mAP50"], mAP5095=result["mAP5095"], fitness=metric)
            log("validation: mAP50={:.3f} mAP50-95={:.4f} (fitness)".format(result["mAP50"], result["mAP5095"]))
        elif measuring:
            metric = SKIP_BEST  # no measurement this epoch: best stays
        row["validationSeconds"] = time.time() - validationStarted
        row["seconds"] = time.time() - started
        self.history.append(row)
        self.saveEpoch(epoch + 1, metric)
        if self.board is not None:
            if "mAP50" in row:  # measured this epoch: a few validation images painted as -eval paints them
                self.board.keepValidation(self.evaluator.paintedImages(self.ema.module, self.mcfg.validationSplitName,
                                                                       VALIDATION_IMAGES))
            self.board.writeEpoch(row)

    def trainEpoch(self, epoch, frozen):
        """One pass over the training split -> (mean unweighted box, cls, dfl loss, last lr, seconds spent waiting for
        the loader).

        Optimizer steps: after batch i when i - lastStep >= schedule.accumulation(global step) (lastStep: the batch of
        the epoch's previous optimizer step, -1 at its start; Ultralytics' ni - last_opt_step >= accumulate) or when i
        is the epoch's last batch -- unlike Ultralytics, which carries a partial accumulation into the next epoch, an
        epoch ends on a step, so a checkpoint never holds half an accumulated gradient. A signal stops the run after an
        optimizer step only, and a resumed epoch starts on a step's first batch (lastStep = first - 1)."""
        self.model.train()
        numBatches = len(self.trainLoader)
        total = torch.zeros(3, device=self.device)  # read on the host only at the periodic reads
        first, self.batchesDone, self.epochPosition = self.batchesDone, 0, 0
        if first:  # resuming inside this epoch: the loader starts at the first sample not yet trained (seedEpoch)
            total += torch.as_tensor(self.partialParts, device=self.device)
        remaining = len(self.trainLoader.batch_sampler.stepPositions())
        lastBatch, lastStep = first + remaining - 1, first - 1
        bar = tqdm(self.trainLoader, desc="epoch {}/{}".format(epoch + 1, self.mcfg.maxEpoch), leave=True,
                   dynamic_ncols=True, mininterval=0.5, disable=not self.isMain, initial=first, total=first + remaining)
        lr, dataSeconds, waitStarted = 0.0, 0.0, time.perf_counter()
        for i, (images, targets, _) in enumerate(bar, start=first):
            dataSeconds += time.perf_counter() - waitStarted  # the step waited this long for the loader
            if self.previewsLeft:
                self.writePreview(images, targets)
            if self.board is not None and i == first:
                self.board.keepBatch(images, targets)  # the epoch's first batch, on the board with its row
            step = epoch * numBatches + i
            stepping = i - lastStep >= self.schedule.accumulation(step) or i == lastBatch
            lr = self.trainStep(step, images, targets, total, opening=i == lastStep + 1, stepping=stepping)
            if self.fault is not None and self.fault[1] == step:
                os.kill(os.getpid(), self.fault[0])  # test-only (MARS_TEST_FAULT): a signal right after this batch
            if stepping:
                read = i // LOG_EVERY > lastStep // LOG_EVERY or i == lastBatch  # a multiple of LOG_EVERY batches passed
                lastStep = i
                if read:
                    self.report(bar, total / (i + 1), lr, frozen, step)
                if self.stopRequested(read):
                    self.stop(epoch, i, first, numBatches, total, bar)
            waitStarted = time.perf_counter()
        return (total / max(1, numBatches)).tolist(), lr, dataSeconds

    def stop(self, epoch, i, first, numBatches, total, bar):
        """A signal after the optimizer step of batch i: save where the epoch stands and raise TrainingInterrupted."""
        if self.isMain:
            position = self.trainLoader.batch_sampler.positionAfter(i + 1 - first)  # first sample not trained
            self.saveState(epoch, i + 1, total.tolist(), epochPosition=position)
        bar.close()
        log("stopped by {} at epoch {} batch {}/{}; state saved in {}. Resume with the same command "
            "(without -nobuf).".format(signal.Signals(self.stopSignal).name, epoch + 1, i + 1, numBatches,
                                       self.checkpointer.lastPath))
        raise TrainingInterrupted(self.stopSignal)

    def trainStep(self, step, images, targets, total, opening=True, stepping=True):
        """One batch at global iteration step: lr, forward, loss, backward -> the lr used. Gradients add up over the
        batches of one optimizer step: opening (its first batch) zeroes them and stashes the BatchNorm statistics,
        stepping (its last) takes the optimizer step (optimizerStep); the defaults make the batch a whole step. Under
        torchrun the batches before the last one skip DDP's gradient all-reduce (no_sync). Adds the unweighted loss
        parts to total (on the device) when this batch's loss is finite.

        Nothing is read on the host: a non-finite loss is remembered on the device (self.badLoss) for the step."""
        lr = self.schedule.apply(self.optimizer, step)
        images = imagesToDevice(images, self.device, self.channelsLast)
        if opening:
            self.optimizer.zero_grad(set_to_none=True)
            if self.normStash:  # BatchNorm statistics before the step's forwards
                torch._foreach_copy_(self.normStash, self.normBuffers)
            self.stepImages = 0
        sync = self.ddp.no_sync() if self.ddp is not None and not stepping else contextlib.nullcontext()
        with sync:
            with torch.autocast(self.device.type, dtype=self.ampDtype, enabled=self.ampDtype is not None):
                loss = self.loss(self.forward(images), targets) * self.worldSize  # DDP averages gradients over ranks
            self.scaler.scale(loss).backward()
        bad = ~torch.isfinite(loss.detach())
        self.badLoss = bad if opening else self.badLoss | bad
        total += torch.where(bad, torch.zeros_like(self.loss.parts), self.loss.parts)
        self.stepImages += images.shape[0] * self.worldSize
        if stepping:
            self.optimizerStep()
        return lr

    def optimizerStep(self):
        """The optimizer step over the gradients its batches added up: unscale, clip their norm (mcfg.gradientClip),
        step, EMA for the step's images (all batches, all ranks), skip counts.

        If a batch's loss or the gradient norm is not finite, the fused optimizer skips the update (found_inf), the EMA
        stays put, the BatchNorm statistics go back to their values before the step's first batch and self.skips
        counts one step -- all decided on the device, and under torchrun identically on every rank."""
        self.scaler.unscale_(self.optimizer)
        gradNorm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.mcfg.gradientClip)
        badLoss, badGradient = anyRank(torch.stack((self.badLoss, ~torch.isfinite(gradNorm))))
        skipped = badLoss | badGradient  # fp16: the grad scaler's overflow steps are skipped too
        self.optimizer.found_inf = skipped.float()
        self.optimizer.step()
        # non-finite steps (in all, in a row, longest run): a non-finite loss or gradient -- but under the fp16 grad
        # scaler a gradient overflow at a scale above 1 is the scaler's business (it lowers the scale); at a scale
        # of 1 or less the gradient is not finite even unscaled, so those count (else the scale would halve forever)
        counted = skipped
        if self.scaler.is_enabled():
            counted = badLoss | (badGradient & (self.scaler._scale.reshape(()) <= 1))  # the scale of this step
        self.scaler.update()  # fp16: lowers the scale after an overflow
        self.restoreNormStatistics(skipped)  # before the EMA reads them: 0 x NaN would poison the average
        self.ema.update(self.model, skipped, self.stepImages)
        inRow = (self.skips[1] + 1) * counted
        self.skips.copy_(torch.stack((self.skips[0] + counted, inRow, torch.maximum(self.skips[2], inRow))))

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


def makeTrainer(mcfg, model):
    """The trainer of mcfg.modelName's loss, with the evaluator that measures mAP after each epoch."""
    return Trainer(mcfg, model, LOSSES[mcfg.modelName], Evaluator(mcfg))
