"""Learning-rate schedule: linear warm-up, then cosine (or linear) decay, set per iteration."""
import math

WARMUP_MOMENTUM = 0.8  # SGD momentum at the start of warm-up
# warm-up lasts at least this many iterations, at most half the run (older Ultralytics releases had this floor;
# 8.4.190 warms up for round(min(warmup_epochs, epochs - 1) * batches per epoch) iterations, no floor)
MIN_WARMUP_ITERATIONS = 100


def warmupIterations(warmupEpochs, itersPerEpoch, totalIters):
    """max(warmupEpochs epochs, 100 iterations), at most half the run; 0 when warmupEpochs is 0."""
    if warmupEpochs <= 0:
        return 0
    return min(max(round(warmupEpochs * itersPerEpoch), MIN_WARMUP_ITERATIONS), totalIters // 2)


class LearningRateSchedule(object):
    """lr(step) for step in [0, maxEpoch * itersPerEpoch); call apply(optimizer, step) before each optimizer step."""

    def __init__(self, mcfg, itersPerEpoch):
        self.base, self.min = mcfg.baseLearningRate, mcfg.minLearningRate
        self.total = max(1, mcfg.maxEpoch * itersPerEpoch)
        self.warmup = warmupIterations(mcfg.warmupEpochs, itersPerEpoch, self.total)
        self.warmupBias = mcfg.warmupBiasLearningRate
        self.momentum = mcfg.optimizerMomentum
        self.cosine = mcfg.schedulerType.upper() == "COS"

    def decayed(self, step):
        t = min(step / self.total, 1.0)
        f = (1 + math.cos(math.pi * t)) / 2 if self.cosine else 1 - t
        return self.min + (self.base - self.min) * f

    def apply(self, optimizer, step):
        """Set every group's lr (and SGD momentum during warm-up); returns the conv-group lr."""
        target = self.decayed(step)
        for group in optimizer.param_groups:
            if step < self.warmup:
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
