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
    def update(self, model):
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.tau))
        modelState = model.state_dict()
        for key, value in self.module.state_dict().items():
            if value.dtype.is_floating_point:
                value.mul_(d).add_(modelState[key].detach(), alpha=1 - d)
            else:
                value.copy_(modelState[key])
