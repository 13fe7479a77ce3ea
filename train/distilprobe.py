"""Why distillation's response term can cost the new classes: a first-order probe of a stage-3 student.

probeDistillation(model, loss, batches, oldClasses, nc) measures, summed over a few batches, what each training term
of DistillationDetectionLoss.terms() does to the student's parameters, and so to its scores of the classes the
teacher never learnt ("new"; the teacher's classes, mcfg.teacherClassIndexes, are "old").

Terms T (each exactly as it enters the training sum, weights included):
    detection, knowledge, response   the three terms of DistillationDetectionLoss.terms();
    detectionOld, detectionNew       the detection term's gradient through the old / new class-logit channels of the
                                     predictions only: d(detection)/d(preds) with the other channels zeroed, carried
                                     back into the parameters;
    detectionBox                     the same through the box-distribution channels. detectionOld + detectionNew +
                                     detectionBox = detection exactly (the detection term reads the predictions alone),
                                     and on the class layers (classBranch, old/newClassRows) detectionOld + detectionNew
                                     = detection.
G_T is T's gradient over every trainable student parameter (summed over the batches).

Parameter groups: backbone, neck, classBranch (the first two Convs of every head.clsBranches[i]), oldClassRows /
newClassRows (the rows, weight and bias, of the last class Conv2d of every level for the old / new classes), boxBranch
(head.boxBranches); "features" = backbone + neck, "all" = every trainable parameter.

Push on the new classes: two objectives of the student's class logits z (B, A, nc):
    objects     the mean, over (image, anchor, class c) with c new and the anchor one the TaskAlignedAssigner makes
                positive for a ground-truth box of class c (the anchors whose scores make the detections the AP
                counts), of z[image, anchor, c];
    background  the mean, over anchors inside no ground-truth box (of any class), of the MEAN over the new classes of z.
pushObjects(T) = -<G_T, grad(objects)>: to first order, how much a plain SGD step on T alone (theta -= lr G_T) changes
the objective per unit learning rate: the objective moves by lr * push (positive raises the new-class logits there,
negative lowers them). pushBackground(T) likewise; raising background logits means false positives.

The probe changes nothing: torch.autograd.grad only (every .grad stays as it was), no optimizer; the model runs in train
mode (the student's train-mode outputs, teacher included) with every BatchNorm in eval mode (running statistics
neither used from the batch nor updated); modes and the loss's parts are restored; no autocast (float32 parameters).
"""
import contextlib

import torch
import torch.nn as nn

from misc.bbox import distToBox, dflDecode
from misc.img import imagesToDevice
from train.loss import float32Region

BASE_TERMS = ("detection", "knowledge", "response")  # the keys of DistillationDetectionLoss.terms()
DETECTION_PARTS = ("detectionOld", "detectionNew", "detectionBox")  # the detection term by prediction channels
TERMS = ("detection", "detectionOld", "detectionNew", "detectionBox", "knowledge", "response")
GROUPS = ("backbone", "neck", "classBranch", "oldClassRows", "newClassRows", "boxBranch")
NORM_GROUPS = GROUPS + ("features", "all")  # the keys of gradientNorms[T]
COSINE_GROUPS = ("classBranch", "features")  # the keys of cosineWithDetectionNew[T]
REGIONS = ("newObjects", "oldObjects", "background")  # the keys of oldClassScores[who]


class ParameterLayout(object):
    """The trainable parameters of a student as one flat vector (P,) (model.parameters() order, each flattened
    row-major), and each group of NORM_GROUPS as a (P,) bool mask on the parameters' device."""

    def __init__(self, model, oldClasses, nc):
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.offsets, start = {}, 0
        for p in self.params:
            self.offsets[id(p)] = (start, p.numel())
            start += p.numel()
        self.size = start
        device = self.params[0].device
        self.masks = {g: torch.zeros(self.size, dtype=torch.bool, device=device) for g in GROUPS}
        isOld = classFlags(oldClasses, nc, device)
        self.mark("backbone", model.backbone.parameters())
        self.mark("neck", model.neck.parameters())
        for box, cls in zip(model.head.boxBranches, model.head.clsBranches):
            self.mark("boxBranch", box.parameters())
            self.mark("classBranch", list(cls[0].parameters()) + list(cls[1].parameters()))
            for p in cls[2].parameters():  # weight (nc, cCls, 1, 1), bias (nc,): row c belongs to class c
                rows = isOld.repeat_interleave(p.numel() // nc)  # (p.numel(),)
                self.mark("oldClassRows", [p], rows)
                self.mark("newClassRows", [p], ~rows)
        coverage = sum(m.long() for m in self.masks.values())
        assert bool((coverage == 1).all()), "every trainable parameter lies in exactly one group"
        self.masks["features"] = self.masks["backbone"] | self.masks["neck"]
        self.masks["all"] = torch.ones(self.size, dtype=torch.bool, device=device)

    def mark(self, group, params, elements=None):
        """Put params (or, with elements (numel,) bool, those of their elements) into group; frozen ones are skipped."""
        for p in params:
            if id(p) in self.offsets:
                start, n = self.offsets[id(p)]
                self.masks[group][start:start + n] = True if elements is None else elements

    def flat(self, grads):
        """torch.autograd.grad's tuple (None for an unused parameter) -> (P,) float32."""
        return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1).float()
                          for g, p in zip(grads, self.params)])

    def gradient(self, outputs, gradOutputs=None):
        """(P,) gradient of a scalar (or of tensors weighted by gradOutputs, a vector-Jacobian product); the graph is
        kept for the next call; zeros when nothing reaches the parameters."""
        outputs = [outputs] if torch.is_tensor(outputs) else list(outputs)
        if not any(o.requires_grad for o in outputs):
            return torch.zeros(self.size, device=self.masks["all"].device)
        grads = torch.autograd.grad(outputs, self.params, grad_outputs=gradOutputs, retain_graph=True,
                                    allow_unused=True)
        return self.flat(grads)


def classFlags(classes, nc, device):
    """(nc,) bool: True for the listed class indexes."""
    flags = torch.zeros(nc, dtype=torch.bool, device=device)
    flags[torch.as_tensor(list(classes), dtype=torch.long, device=device)] = True
    return flags


@contextlib.contextmanager
def trainModeEvalNorm(model):
    """The model in train mode with every BatchNorm in eval mode; every module's mode restored afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def channelMasks(preds, regMax, isOld):
    """Per detection part, the (1, C, 1, 1) 0/1 masks of the prediction channels it keeps, C = 4*regMax + nc:
    detectionOld the old class logits, detectionNew the new ones, detectionBox the box distribution."""
    R, nc = 4 * regMax, isOld.numel()
    isBox = torch.cat([torch.ones(R, dtype=torch.bool, device=isOld.device), torch.zeros_like(isOld)])
    isOldChannel = torch.cat([torch.zeros(R, dtype=torch.bool, device=isOld.device), isOld])
    isNewChannel = ~(isBox | isOldChannel)
    dtype = preds[0].dtype
    return {name: flags.to(dtype).reshape(1, R + nc, 1, 1) for name, flags in
            zip(DETECTION_PARTS, (isOldChannel, isNewChannel, isBox))}


def anchorRegions(detection, preds, targets, isOld):
    """Which anchors lie where.

    detection: a DetectionLoss; preds: [P3, P4, P5] (B, 4*regMax + nc, Hi, Wi); targets: (N, 6) Mars collate rows;
    isOld: (nc,) bool. Returns objects (B, A, nc) bool (the assigner makes the anchor positive for a box of class c, c
    new: as the detection loss assigns them, from the predictions' boxes and scores) and {"newObjects", "oldObjects",
    "background"}: (B, A) bool (by the assigner's candidate rule, DistillationDetectionLoss.anchorsInBoxes: inside
    some new-class box / some old-class box / no box)."""
    gtLabels, gtBoxes, gtMask = detection.paddedTargets(preds, targets)  # (B, M, 1), (B, M, 4) pixels, (B, M, 1)
    anchorPoints, strideTensor = detection.anchors(preds)  # (A, 2) stride units, (A, 1)
    inside = detection.assigner.anchorsInside(anchorPoints * strideTensor, gtBoxes, gtMask.bool())  # (B, M, A)
    labels = gtLabels[..., 0].long()  # (B, M); padding rows are never inside
    oldBox = isOld[labels].unsqueeze(-1)  # (B, M, 1)
    predDist, predLogits = detection.flatten([p.detach().float() for p in preds])  # (B, A, 4*regMax), (B, A, nc)
    predBoxes = distToBox(dflDecode(predDist, detection.proj(predDist.device)), anchorPoints)  # (B, A, 4) stride units
    targetLabels, _, _, fgMask, _ = detection.assigner.assignDense(
        predLogits, (predBoxes * strideTensor).type(gtBoxes.dtype), anchorPoints * strideTensor, gtLabels, gtBoxes,
        gtMask, logits=True)  # (B, A) class of the box an anchor is positive for, (B, A) positive
    positiveClass = nn.functional.one_hot(targetLabels.long().clamp(0, isOld.numel() - 1), isOld.numel()).bool()
    objects = positiveClass & fgMask.unsqueeze(-1) & ~isOld  # (B, A, nc)
    regions = {"newObjects": (inside & ~oldBox).any(1), "oldObjects": (inside & oldBox).any(1),
               "background": ~inside.any(1)}
    return objects, regions


class ProbeSums(object):
    """What probeDistillation adds up over the batches: per term its value and gradient G_T (P,), the gradients of the
    summed objective logits, their counts, and per region the teacher's / student's summed best old-class scores."""

    def __init__(self, layout):
        zeros = lambda: torch.zeros(layout.size, device=layout.masks["all"].device)
        self.values = {t: 0.0 for t in BASE_TERMS}
        self.grads = {t: zeros() for t in TERMS}
        self.objectGrad, self.backgroundGrad = zeros(), zeros()
        self.objectSum = self.backgroundSum = 0.0
        self.objectCount = self.backgroundCount = 0
        self.scores = {who: {r: 0.0 for r in REGIONS} for who in ("teacher", "student")}
        self.anchors = {r: 0 for r in REGIONS}
        self.batches = self.images = 0


def probeBatch(model, loss, layout, sums, images, targets, isOld):
    """Add one batch to sums. images: (B, 3, H, W) float in [0, 1] (or the loader's uint8) on any device;
    targets: (N, 6) Mars collate rows."""
    device = layout.masks["all"].device
    x = imagesToDevice(images, device) if images.dtype == torch.uint8 else images.to(device)
    outputs = model(x)
    preds = outputs["preds"]
    terms = loss.terms(outputs, targets)
    for name in BASE_TERMS:
        sums.values[name] += float(terms[name].detach())
        sums.grads[name] += layout.gradient(terms[name])
    predGrads = torch.autograd.grad(terms["detection"], preds, retain_graph=True, allow_unused=True)
    predGrads = [torch.zeros_like(p) if g is None else g for g, p in zip(predGrads, preds)]
    for name, mask in channelMasks(preds, loss.regMax, isOld).items():
        sums.grads[name] += layout.gradient(preds, [g * mask for g in predGrads])

    detection = loss.detection
    objects, regions = anchorRegions(detection, preds, targets, isOld)
    _, logits = detection.flatten([p.float() for p in preds])  # (B, A, nc), with gradients
    objectSum = (logits * objects).sum()
    background = regions["background"] & bool((~isOld).any())  # no new class: no background objective
    backgroundSum = (logits[..., ~isOld].sum(-1) / max(1, int((~isOld).sum())) * background).sum()
    sums.objectGrad += layout.gradient(objectSum)
    sums.backgroundGrad += layout.gradient(backgroundSum)
    values = logits.detach().double()  # the objectives' values summed in float64 (float32 sums of thousands of
    # logits round to 1e-5, the size of a small push's change)
    sums.objectSum += float((values * objects).sum())
    sums.backgroundSum += float((values[..., ~isOld].sum(-1) / max(1, int((~isOld).sum())) * background).sum())
    sums.objectCount += int(objects.sum())
    sums.backgroundCount += int(background.sum())

    _, teacherLogits = detection.flatten([p.detach().float() for p in outputs["teacherPreds"]])
    for who, z in (("teacher", teacherLogits), ("student", logits.detach())):
        best = z[..., isOld].sigmoid().amax(-1)  # (B, A) best old-class score
        for region, mask in regions.items():
            sums.scores[who][region] += float((best * mask).sum())
    for region, mask in regions.items():
        sums.anchors[region] += int(mask.sum())
    sums.batches += 1
    sums.images += x.shape[0]


def ratio(numerator, denominator):
    """numerator / denominator as a float, None when the denominator is 0."""
    return float(numerator) / denominator if denominator else None


def cosine(a, b):
    """Cosine of two vectors (in float64, clamped to [-1, 1]), None when either is exactly 0."""
    a, b = a.double(), b.double()
    na, nb = float(a.norm()), float(b.norm())
    return min(1.0, max(-1.0, float(a @ b) / (na * nb))) if na > 0 and nb > 0 else None


def summarise(sums, layout, oldClasses, nc):
    """The JSON-able dict of probeDistillation (keys in its docstring)."""
    objectGrad = sums.objectGrad / sums.objectCount if sums.objectCount else None
    backgroundGrad = sums.backgroundGrad / sums.backgroundCount if sums.backgroundCount else None
    push = lambda g, objective: None if objective is None else 0.0 - float(g.double() @ objective.double())  # no -0
    detectionNew = sums.grads["detectionNew"]
    old = {int(c) for c in oldClasses}
    return {
        "batches": sums.batches, "images": sums.images,
        "oldClasses": sorted(old),
        "newClasses": [c for c in range(nc) if c not in old],
        "values": dict(sums.values),
        "gradientNorms": {t: {g: float(sums.grads[t][layout.masks[g]].norm()) for g in NORM_GROUPS} for t in TERMS},
        "pushObjects": {t: push(sums.grads[t], objectGrad) for t in TERMS},
        "pushBackground": {t: push(sums.grads[t], backgroundGrad) for t in TERMS},
        "cosineWithDetectionNew": {t: {g: cosine(sums.grads[t][layout.masks[g]], detectionNew[layout.masks[g]])
                                       for g in COSINE_GROUPS} for t in TERMS},
        "newClassLogits": {"objects": ratio(sums.objectSum, sums.objectCount),
                           "background": ratio(sums.backgroundSum, sums.backgroundCount),
                           "objectPairs": sums.objectCount, "backgroundAnchors": sums.backgroundCount},
        "oldClassScores": {who: {r: ratio(sums.scores[who][r], sums.anchors[r]) for r in REGIONS}
                           for who in ("teacher", "student")},
        "anchors": dict(sums.anchors),
    }


def probeDistillation(model, loss, batches, oldClasses, nc):
    """What each distillation term does to the new classes, summed over batches (see the module docstring).

    model: a YoloStudentModel (float32 parameters; its mode is set for the probe and restored); loss: a
    DistillationDetectionLoss of it; batches: iterable of (images (B, 3, H, W) float in [0, 1] or the loader's
    uint8, targets (N, 6) Mars collate rows[, ...]); oldClasses: the teacher's class indexes; nc: the class count.

    Returns a JSON-able dict (T in TERMS, g in NORM_GROUPS; a value is None where its denominator is 0):
        batches, images                  what was summed over;
        oldClasses, newClasses           class indexes;
        values[t]                        t in (detection, knowledge, response): the weighted term, summed;
        gradientNorms[T][g]              ||G_T|| over group g;
        pushObjects[T], pushBackground[T] -<G_T, grad(objective)>: the change of the mean new-class logit at
                                         new-class objects / on background (mean over the new classes) per unit
                                         learning rate of an SGD step on T alone (+ raises);
        cosineWithDetectionNew[T][g]     cos(G_T, G_detectionNew) over g in (classBranch, features);
        newClassLogits                   objects, background: the two objectives' values; objectPairs,
                                         backgroundAnchors: how many (anchor, class) pairs / anchors they average;
        oldClassScores[who][r]           who in (teacher, student): the best old-class sigmoid score averaged over
                                         the anchors of region r in (newObjects, oldObjects, background);
        anchors[r]                       the anchor count of region r (an anchor in a new and an old box counts in
                                         both).
    """
    layout, sums = probeSums(model, loss, batches, oldClasses, nc)
    return summarise(sums, layout, oldClasses, nc)


def probeSums(model, loss, batches, oldClasses, nc):
    """probeDistillation's measurements before they are summarised: (ParameterLayout, ProbeSums), the flat gradients
    G_T included (arguments as probeDistillation)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the student has no trainable parameters to probe")
    bad = sorted({str(p.dtype) for p in params if p.dtype != torch.float32})
    if bad:
        raise ValueError("probeDistillation needs float32 parameters, found {}".format(", ".join(bad)))
    layout = ParameterLayout(model, oldClasses, nc)
    sums = ProbeSums(layout)
    device = params[0].device
    isOld = classFlags(oldClasses, nc, device)
    savedParts = (loss.parts, loss.distilParts)
    try:
        with trainModeEvalNorm(model), torch.enable_grad(), float32Region(device):
            for batch in batches:
                probeBatch(model, loss, layout, sums, batch[0], batch[1], isOld)
    finally:
        loss.parts, loss.distilParts = savedParts
    return layout, sums
