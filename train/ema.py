"""Exponential moving average of the weights (used for validation, evaluation and the saved best model)."""
import copy
import math

import torch


class ModelEma(object):
    """ema = d * ema + (1 - d) * model over floating-point parameters and buffers, with d ramped up as
    decay * (1 - exp(-updates / tau)) so early averages are not dominated by the random initialisation."""

    def __init__(self, model, decay=0.9999, tau=2000.0, updates=0):
        self.module = copy.deepcopy(model).eval()
        self.module.requires_grad_(False)
        self.decay, self.tau, self.updates = decay, tau, updates

    @torch.no_grad()
    def update(self, model, skipped=None):
        """One averaging step towards model's current state.

        skipped: optional 0-dim bool tensor on the model's device, True when the training step was skipped: the
        average then stays as it is. It is applied on the device (weight 0), so nothing is read on the host."""
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.tau))
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
        torch._foreach_copy_(counters, counterValues)
