"""Optimizer with YOLOv8's three parameter groups."""
import torch
import torch.nn as nn


def parameterGroups(model):
    """-> (convWeights, normWeights, biases): weight decay applies to the first group only."""
    convWeights, normWeights, biases = [], [], []
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if name == "bias":
                biases.append(param)
            elif isinstance(module, nn.modules.batchnorm._BatchNorm):
                normWeights.append(param)
            else:
                convWeights.append(param)
    return convWeights, normWeights, biases


def makeOptimizer(mcfg, model, stepImages=None):
    """SGD (nesterov) or AdamW over the three groups. Weight decay is mcfg.optimizerWeightDecay per 64 images, scaled to
    the images of one optimizer step, stepImages = global batch (mcfg.batchSize x ranks) x batches accumulated per step
    (LearningRateSchedule.stepImages; default mcfg.batchSize), because the loss is summed over the images: Ultralytics'
    weight_decay * batch * accumulate / nbs with nbs 64 (with another nbs Ultralytics counts the decay per nbs images,
    Mars per 64 whatever mcfg.nominalBatchSize). With mcfg.nominalBatchSize 0, AdamW still accumulates to a nominal
    batch of 64 images (train/sched.py nominalBatchSize), as Ultralytics' AdamW does. Every group records its 'kind'.
    Fused: one kernel per step, and it skips the update on the device when the trainer sets optimizer.found_inf (a
    non-finite step) -- see engine/trainer.py."""
    convWeights, normWeights, biases = parameterGroups(model)
    decay = mcfg.optimizerWeightDecay * (stepImages or mcfg.batchSize) / 64
    groups = [dict(params=convWeights, weight_decay=decay, kind="conv"),
              dict(params=normWeights, weight_decay=0.0, kind="norm"),
              dict(params=biases, weight_decay=0.0, kind="bias")]
    if mcfg.optimizerType.upper() == "SGD":
        optimizer = torch.optim.SGD(groups, lr=mcfg.baseLearningRate, momentum=mcfg.optimizerMomentum, nesterov=True,
                                    fused=True)
        for param in convWeights + normWeights + biases:
            # zero momentum gives the same first step as SGD's lazy start (buffer = gradient), and it stays defined
            # when that first step is skipped (the fused kernel leaves a lazily made buffer uninitialised then)
            optimizer.state[param]["momentum_buffer"] = torch.zeros_like(param)
        return optimizer
    return torch.optim.AdamW(groups, lr=mcfg.baseLearningRate, betas=(mcfg.optimizerMomentum, 0.999), fused=True)
