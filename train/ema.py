"""Exponential moving average of the weights (used for validation, evaluation and the saved best model)."""
import copy
import math

import torch

NOMINAL_BATCH_SIZE = 64  # images: the EMA counts in units of this many images (its own unit, not mcfg.nominalBatchSize)


class ModelEma(object):
    """ema = d * ema + (1 - d) * model over floating-point parameters and buffers (integer buffers are copied).

    The average is counted in images, not optimizer steps, so its horizon in epochs does not depend on the batch
    size, the number of ranks or the gradient accumulation (Ultralytics averages once per optimizer step, of 64
    images by its nominal batch): the trainer updates once per optimizer step with n = the images of all the batches
    (all ranks) that step accumulated; after a step of n images,
    updates += n / nominalBatchSize, d = decay * (1 - exp(-updates / tau)) per nominal batch, and the step applies
    d ** (n / nominalBatchSize). Once the ramp has saturated (d constant), four steps of 16 images move the average
    exactly as one step of 64 would with the same weights; during the ramp each step uses its own count.
    """

    def __init__(self, model, decay=0.9999, tau=2000.0, updates=0.0, nominalBatchSize=NOMINAL_BATCH_SIZE):
        self.module = copy.deepcopy(model).eval()
        self.module.requires_grad_(False)
        self.decay, self.tau, self.updates = decay, tau, float(updates)
        self.nominalBatchSize = nominalBatchSize

    def stepDecay(self, numImages):
        """Advance the update count by numImages and return the decay of this step (the weight kept by the average)."""
        fraction = numImages / self.nominalBatchSize
        self.updates += fraction
        return (self.decay * (1 - math.exp(-self.updates / self.tau))) ** fraction

    @torch.no_grad()
    def update(self, model, skipped=None, numImages=NOMINAL_BATCH_SIZE):
        """One averaging step towards model's current state, for an optimizer step of numImages images (all its
        accumulated batches, all ranks).

        skipped: optional 0-dim bool tensor on the model's device, True when the training step was skipped: the
        average then stays as it is (the update count still advances; nothing is read on the host)."""
        d = self.stepDecay(numImages)
        weight = 1 - d if skipped is None else (~skipped).float() * (1 - d)
        modelState = model.state_dict()
        averaged, current, counters, counterValues = [], [], [], []
        for key, value in self.module.state_dict().items():
            if value.dtype.is_floating_point:
                averaged.append(value)
                current.append(modelState[key].detach())
            else:
                counters.append(value)
                counterValues.append(modelState[key])
        step = torch._foreach_sub(current, averaged)  # ema += weight * (model - ema), three fused list operations
        torch._foreach_mul_(step, weight)
        torch._foreach_add_(averaged, step)
        if counters:  # BatchNorm's num_batches_tracked (a model without BatchNorm has none)
            torch._foreach_copy_(counters, counterValues)
