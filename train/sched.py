"""Learning-rate schedule: linear warm-up, then cosine (or linear) decay, set per iteration; and the gradient
accumulation (batches per optimizer step), ramped up during the warm-up as Ultralytics 8.4.190 does."""
import math

WARMUP_MOMENTUM = 0.8  # SGD momentum at the start of warm-up
ADAMW_NOMINAL_BATCH_SIZE = 64  # AdamW with mcfg.nominalBatchSize 0: images per step all the same (nominalBatchSize)


def warmupIterations(warmupEpochs, itersPerEpoch, epochs, minIterations=0):
    """Ultralytics 8.4.190's rule (BaseTrainer._get_warmup_iterations): round(min(warmupEpochs, epochs - 1) *
    itersPerEpoch) iterations, the last epoch never warms up; 0 when that is not positive. minIterations > 0 is Mars's
    floor (mcfg.warmupMinIterations): a warm-up lasts at least that many iterations, the floor itself at most half the
    run (max(rule, min(minIterations, run // 2))); 0 = 8.4.190's rule exactly."""
    warmupEpochs = min(warmupEpochs, max(epochs - 1, 0))
    iterations = round(warmupEpochs * itersPerEpoch) if warmupEpochs > 0 else 0
    if iterations and minIterations > 0:
        iterations = max(iterations, min(minIterations, epochs * itersPerEpoch // 2))
    return iterations


def nominalBatchSize(mcfg):
    """Images per optimizer step the run accumulates gradients to: mcfg.nominalBatchSize (0: every batch is a step),
    except that AdamW always steps per ADAMW_NOMINAL_BATCH_SIZE images when it is 0 (an Adam step moves about lr per
    parameter whatever the batch, so a step per small batch would move it 64 / batch times further per 64 images)."""
    if mcfg.nominalBatchSize == 0 and mcfg.optimizerType.upper() == "ADAMW":
        return ADAMW_NOMINAL_BATCH_SIZE
    return mcfg.nominalBatchSize


def accumulation(nominal, globalBatch, totalIters):
    """Batches per optimizer step after the warm-up: max(round(nominal / globalBatch), 1), at most the run's iterations
    (Ultralytics' accumulate); 1 when nominal is 0. globalBatch: images per batch over all ranks."""
    if nominal <= 0:
        return 1
    return max(1, min(max(round(nominal / globalBatch), 1), totalIters))


def rampedAccumulation(step, warmup, accumulate):
    """Batches per optimizer step at iteration `step`: during the warm-up (step <= warmup) max(1, round(np.interp(step,
    [0, warmup], [1, accumulate]))), the same float arithmetic and half-to-even rounding as Ultralytics; after it (or
    without warm-up) accumulate."""
    if warmup <= 0 or step >= warmup:
        return accumulate
    return max(1, round((accumulate - 1) / warmup * step + 1))


class LearningRateSchedule(object):
    """lr(step) and momentum(step) for step in [0, maxEpoch * itersPerEpoch), and the batches per optimizer step.

    Call apply(optimizer, step) before each batch's forward; the optimizer step uses the lr of its last batch.
    Warm-up: warmupIterations(...) iterations in which the bias lr falls from mcfg.warmupBiasLearningRate and the other
    lrs rise from 0 to the decayed lr of that iteration, momentum 0.8 -> mcfg.optimizerMomentum, linear in the
    iteration; at step == warmup every value is on its target (as Ultralytics' ni <= nw, whose interpolation ends on
    the target). One difference: Ultralytics interpolates towards lr0 * lf(epoch) and decays once per epoch; Mars
    decays every iteration (decayed(step)), during the warm-up too.
    Accumulation (accumulation(step)): accumulate = batches per optimizer step after the warm-up, for nominalBatchSize
    (mcfg) images per step; stepImages = globalBatch * accumulate, the images the weight decay counts per step.
    globalBatch is mcfg.batchSize x ranks: Ultralytics 8.4.190 divides its nominal batch by the per-rank batch under DDP.
    """

    def __init__(self, mcfg, itersPerEpoch, globalBatch=None):
        self.base, self.min = mcfg.baseLearningRate, mcfg.minLearningRate
        self.total = max(1, mcfg.maxEpoch * itersPerEpoch)
        self.warmup = warmupIterations(mcfg.warmupEpochs, itersPerEpoch, mcfg.maxEpoch, mcfg.warmupMinIterations)
        self.warmupBias = mcfg.warmupBiasLearningRate
        self.momentum = mcfg.optimizerMomentum
        self.cosine = mcfg.schedulerType.upper() == "COS"
        globalBatch = globalBatch or mcfg.batchSize
        self.accumulate = accumulation(nominalBatchSize(mcfg), globalBatch, self.total)
        self.stepImages = globalBatch * self.accumulate

    def decayed(self, step):
        t = min(step / self.total, 1.0)
        f = (1 + math.cos(math.pi * t)) / 2 if self.cosine else 1 - t
        return self.min + (self.base - self.min) * f

    def accumulation(self, step):
        """Batches per optimizer step at iteration step (ramped from 1 during the warm-up)."""
        return rampedAccumulation(step, self.warmup, self.accumulate)

    def apply(self, optimizer, step):
        """Set every group's lr (and SGD momentum during warm-up); returns the conv-group lr."""
        target = self.decayed(step)
        for group in optimizer.param_groups:
            if step < self.warmup:  # step == warmup: x would be 1, the targets below
                x = step / self.warmup
                start = self.warmupBias if group.get("kind") == "bias" else 0.0
                group["lr"] = start + (target - start) * x
                if "momentum" in group:
                    group["momentum"] = WARMUP_MOMENTUM + (self.momentum - WARMUP_MOMENTUM) * x
            else:
                group["lr"] = target
                if "momentum" in group:
                    group["momentum"] = self.momentum
        return optimizer.param_groups[0]["lr"]
