"""-summary: one row per block of the model (name, output shape at mcfg.inputShape, parameters, GFLOPs), totals.

GFLOPs are counted as Ultralytics' model.info() reports them (thop's operation counts, times 2): every convolution's
multiply-accumulates (output elements x input channels per group x kernel area; bias not counted) plus 4 operations per
BatchNorm element (normalise and scale-shift of the unfused model), the sum doubled. Activations, additions,
concatenations and nearest upsampling count 0. The shapes and counts come from one forward pass of a batch of one
on the meta device (no memory, no arithmetic), observed with forward hooks.
"""
import copy
import os

import torch
import torch.nn as nn

from misc.files import atomicWrite
from misc.log import log
from model.base.yolomodel import YoloModel

BATCHNORM_OPS = 4  # operations per element of an unfused BatchNorm, as thop counts them


def blocks(model):
    """[(name, module)]: the backbone's and neck's blocks with parameters, in forward order, then the head."""
    named = [("backbone." + n, m) for n, m in model.backbone.named_children()]
    named += [("neck." + n, m) for n, m in model.neck.named_children()]
    return [(n, m) for n, m in named if any(True for _ in m.parameters())] + [("head", model.head)]


def moduleOps(module, output):
    """Multiply-accumulates (or BatchNorm operations) of one leaf module's forward call."""
    if isinstance(module, nn.Conv2d):
        kernelArea = module.kernel_size[0] * module.kernel_size[1]
        return output.numel() * (module.in_channels // module.groups) * kernelArea
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return output.numel() * BATCHNORM_OPS
    return 0


def shapeText(output):
    """(1, 64, 80, 80) -> '1x64x80x80'; a list of tensors -> their shapes joined by spaces."""
    if isinstance(output, (list, tuple)):
        return " ".join(shapeText(o) for o in output)
    return "x".join(str(v) for v in output.shape)


@torch.no_grad()
def modelSummary(model, inputShape):
    """Rows for a YoloModel at inputShape (h, w): [(name, output shape text, parameters, GFLOPs)] per block, and the
    totals (parameters, GFLOPs). The model is copied to the meta device; the caller's model is not touched."""
    meta = copy.deepcopy(model).to("meta").eval()
    ops, shapes, handles = {}, {}, []
    for name, block in blocks(meta):
        ops[name] = 0
        handles.append(block.register_forward_hook(
            lambda module, args, output, name=name: shapes.__setitem__(name, shapeText(output))))
        for leaf in block.modules():
            handles.append(leaf.register_forward_hook(
                lambda module, args, output, name=name: ops.__setitem__(name, ops[name] + moduleOps(module, output))))
    meta(torch.zeros((1, 3) + tuple(inputShape), device="meta"))
    for handle in handles:
        handle.remove()
    rows = [(name, shapes[name], sum(p.numel() for p in block.parameters()), 2 * ops[name] / 1e9)
            for name, block in blocks(model)]
    return rows, (sum(p.numel() for p in model.parameters()), sum(r[3] for r in rows))


def summaryText(rows, totals, title):
    """The table as text: one line per block, totals last."""
    width = max(len(r[0]) for r in rows) + 2
    lines = [title, "{:<{w}}{:<34}{:>12}{:>10}".format("block", "output shape", "params", "GFLOPs", w=width)]
    lines += ["{:<{w}}{:<34}{:>12,}{:>10.3f}".format(name, shape, params, gflops, w=width)
              for name, shape, params, gflops in rows]
    lines.append("{:<{w}}{:<34}{:>12,}{:>10.3f}".format("total", "", totals[0], totals[1], w=width))
    return "\n".join(lines)


def writeSummary(mcfg):
    """Print the summary of mcfg's model (no weights needed: the architecture alone) and write <run>/model.txt."""
    model = YoloModel(mcfg.copy(pretrainedBackboneUrl=None, device="cpu"))  # the architecture only: no weight file
    rows, totals = modelSummary(model, mcfg.inputShape)
    text = summaryText(rows, totals, "{}: YOLOv8 {} with {} classes at {}x{} (batch 1)".format(
        mcfg.cfgname, mcfg.phase, mcfg.nc, *mcfg.inputShape))
    log(text)
    path = os.path.join(mcfg.runDir(), "model.txt")
    atomicWrite(path, lambda f: f.write((text + "\n").encode()))
    log("model summary: {}".format(path))
    return rows, totals
