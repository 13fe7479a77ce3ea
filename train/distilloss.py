"""DistillationDetectionLoss: w0 * DetectionLoss + (w1 * Knowledge + w2 * Response) * B, teacher -> student.

Knowledge is the term mcfg.distilMethod selects:
    "cwd": channel-wise distillation of feature maps (Shu et al., ICCV 2021), summed over mcfg.distilFeatures;
    "ld":  localisation distillation of the box distributions (Zheng et al., CVPR 2022), where the teacher sees
           one of its classes.
Response matches the student's class logits of mcfg.teacherClassIndexes to the teacher's.

Response form: YOLOv8 scores every class with its own sigmoid (BCE training, no background class), so the
response is the binary KL divergence per anchor and per teacher class, KL(Bernoulli(sigmoid(zt/T)) ||
Bernoulli(sigmoid(zs/T))) * T^2, summed and divided by the teacher's summed probabilities (at least 1) -- the
soft-label twin of DetectionLoss's class term (BCE summed over anchors and classes / target score sum). A softmax
over the classes would instead turn the teacher's "nothing here" anchors (all scores near 0) into confident
uniform distributions and make the student copy noise among background logits; sigmoid/KL keeps "background"
and is exactly 0 when the logits agree. The box-distribution channels never enter the response. With
mcfg.distilResponseMask "all" every anchor takes part, those on objects of the new classes included (the teacher
learnt them as background). Before issue 18 (bench/distill.py, 3 student seeds on two demo presets,
docs/distillation.md), leaving those anchors out ("outsideNew"), keeping only confident ones ("confident"), or fading
the weights out (mcfg.distilSchedule "cosine") kept no more old classes (fewer on the easy preset) and learnt the new
ones no better.

Whether to train the response at all: the teacher was trained with all nc outputs but no label of the new classes,
so it calls every new-class object background, and the response's gradient through the layers the new classes share
lowers their scores (train/distilprobe.py measures it). On three demo presets over 3 seeds (docs/distillation.md) CWD
alone learnt the new classes better than CWD + response on each and beat plain fine-tuning on every class group, while
the response (with any of the masks, paths or directions below) did not on the easy preset: the default weights
(mcfg.distilLossWeights, kept by the cfgops distillation tags) give it 0. It is still computed and logged ("resp"): how far
the student's old-class scores drift from the teacher's.

Each distillation term is normalised (per channel, per unit of teacher probability, per unit of anchor weight), so
it does not grow with the batch or the input size; like DetectionLoss, which YOLOv8 multiplies by the batch size,
the weighted sum is multiplied by B.
"""
import math

import torch
import torch.nn.functional as F

from train.loss import DetectionLoss, float32Region


def channelWiseDivergence(studentFeat, teacherFeat, temperature=1.0):
    """CWD of one feature pair: each channel's spatial map -> softmax(map / T) over the H*W positions;
    KL(teacher || student) per channel, mean over batch and channels, times T^2.

    studentFeat, teacherFeat: (B, C, H, W) float, same shape; teacherFeat carries no gradient.
    Returns a scalar (0 for identical maps)."""
    assert studentFeat.shape == teacherFeat.shape, (studentFeat.shape, teacherFeat.shape)
    B, C, H, W = studentFeat.shape
    student = studentFeat.float().reshape(B * C, H * W) / temperature  # (B*C, H*W)
    teacher = teacherFeat.float().reshape(B * C, H * W) / temperature  # (B*C, H*W)
    teacherLogP = F.log_softmax(teacher, dim=1)
    kl = (teacherLogP.exp() * (teacherLogP - F.log_softmax(student, dim=1))).sum(1)  # (B*C,)
    return kl.mean() * temperature ** 2


def responseDivergence(studentLogits, teacherLogits, temperature=1.0, anchorMask=None, raiseOnly=False):
    """Binary KL between the teacher's and the student's per-class sigmoid scores (see the module docstring).

    studentLogits, teacherLogits: (B, A, k) class logits of the k teacher classes.
    anchorMask: None (every anchor) or (B, A) bool/0-1, the anchors that take part.
    raiseOnly: a student logit above the teacher's counts as equal to it (KL 0, no gradient), so the term only lifts
        the student's scores up to the teacher's and never lowers one.
    Returns a scalar: sum over the kept (B, A) and k of KL(pt || ps) * T^2 / max(1, sum of their pt),
    pt = sigmoid(zt / T); 0 (with a zero gradient, no NaN) when the mask keeps nothing."""
    assert studentLogits.shape == teacherLogits.shape, (studentLogits.shape, teacherLogits.shape)
    student = studentLogits.float() / temperature
    teacher = teacherLogits.float() / temperature
    if raiseOnly:
        student = torch.minimum(student, teacher)
    teacherP = teacher.sigmoid()
    kl = teacherP * (F.logsigmoid(teacher) - F.logsigmoid(student)) + \
        (1 - teacherP) * (F.logsigmoid(-teacher) - F.logsigmoid(-student))  # (B, A, k)
    if anchorMask is not None:
        keep = anchorMask.to(kl.dtype).unsqueeze(-1)  # (B, A, 1)
        kl, teacherP = kl * keep, teacherP * keep
    return kl.sum() / teacherP.sum().clamp(min=1) * temperature ** 2


def localisationDivergence(studentDist, teacherDist, anchorWeight, regMax, temperature=1.0):
    """Localisation distillation: per anchor and box side, KL(softmax(teacher bins / T) || softmax(student bins / T))
    over the regMax DFL bins, averaged over the 4 sides, weighted per anchor, times T^2.

    studentDist, teacherDist: (B, A, 4*regMax) box-distribution logits (sides l, t, r, b).
    anchorWeight: (B, A) >= 0, no gradient (the teacher's best score over its classes).
    Returns a scalar: sum of weight * KL / max(1, sum of weights)."""
    assert studentDist.shape == teacherDist.shape, (studentDist.shape, teacherDist.shape)
    B, A, _ = studentDist.shape
    student = studentDist.float().reshape(B, A, 4, regMax) / temperature  # (B, A, 4, regMax)
    teacher = teacherDist.float().reshape(B, A, 4, regMax) / temperature  # (B, A, 4, regMax)
    teacherLogP = F.log_softmax(teacher, dim=3)
    kl = (teacherLogP.exp() * (teacherLogP - F.log_softmax(student, dim=3))).sum(3).mean(2)  # (B, A)
    return (kl * anchorWeight).sum() / anchorWeight.sum().clamp(min=1) * temperature ** 2


class DistillationDetectionLoss(object):
    """DistillationDetectionLoss(mcfg, model)(outputs, targets) -> scalar.

    outputs: the student's train-mode dict ("preds", "feats", "teacherPreds", "teacherFeats"; see
        YoloStudentModel) -> w0 * DetectionLoss + (w1 * Knowledge + w2 * Response) * B with
        (w0, w1, w2) = mcfg.distilLossWeights;
    or plain head outputs [P3, P4, P5] (the eval-mode student, e.g. validation) -> w0 * DetectionLoss alone.
    targets: (N, 6) Mars collate rows, as for DetectionLoss.
    After each call self.parts holds the unweighted (box, cls, dfl) detection losses (detached (3,), what the
    trainer logs) and self.distilParts the unweighted (knowledge, response) terms (detached (2,), zeros for plain
    outputs).
    """

    def __init__(self, mcfg, model):
        self.detection = DetectionLoss(mcfg, model)
        self.regMax = model.regMax
        self.weights = tuple(float(w) for w in mcfg.distilLossWeights)
        self.temperature = float(mcfg.distilTemperature)
        self.method = mcfg.distilMethod
        assert self.method in ("cwd", "ld"), self.method  # checked by mcfg.finalize
        self.featureNames = tuple(mcfg.distilFeatures)
        self.teacherClassIndexes = list(mcfg.teacherClassIndexes)
        self.oldClasses = torch.tensor(self.teacherClassIndexes)  # (k,) on the CPU, where the loader's targets are
        self.oldIndex = self.oldClasses  # (k,) on the device of the predictions (oldLogits moves it once)
        self.schedule, self.maxEpoch, self.scale = mcfg.distilSchedule, mcfg.maxEpoch, 1.0
        self.responseMask = mcfg.distilResponseMask
        self.raiseOnly = mcfg.distilResponseDirection == "raise"
        self.confidence = float(mcfg.distilConfidence)
        self.parts = torch.zeros(3)
        self.distilParts = torch.zeros(2)

    def __call__(self, outputs, targets):
        """Float32 whatever the caller's autocast (as DetectionLoss)."""
        device = (outputs["preds"] if isinstance(outputs, dict) else outputs)[0].device
        with float32Region(device):
            return self.compute(outputs, targets)

    def setEpoch(self, epoch):
        """Called by the trainer at the start of each epoch (0-based): mcfg.distilSchedule "constant" keeps the
        knowledge and response weights; "cosine" scales them by (1 + cos(pi * epoch / maxEpoch)) / 2, from 1 at
        the first epoch down towards 0, so the labels have the last word."""
        self.scale = 1.0 if self.schedule == "constant" else (1 + math.cos(math.pi * epoch / self.maxEpoch)) / 2

    def responseAnchors(self, preds, targets, teacherOldLogits):
        """The anchors the response term reads (mcfg.distilResponseMask): None = every anchor ("all"), else (B, A)
        bool: "outsideNew" leaves out anchors inside a ground-truth box of a class the teacher does not know (the
        assigner's candidate rule: centre inside the box, small boxes widened), where the labels speak and the
        teacher can only answer with an old look-alike; "confident" keeps, of those, the anchors where the
        teacher's best old-class score is at least mcfg.distilConfidence; "oldObjects" keeps only the anchors inside
        a ground-truth box of a class the teacher knows (no background, no new-class object).

        preds: the student's level outputs (float32); targets: (N, 6) Mars collate rows; teacherOldLogits: (B, A, k)."""
        if self.responseMask == "all":
            return None
        isOld = torch.isin(targets[:, 1].long(), self.oldClasses.to(targets.device))
        inside = self.anchorsInBoxes(preds, targets[isOld if self.responseMask == "oldObjects" else ~isOld])
        if self.responseMask == "oldObjects":
            return inside
        keep = ~inside
        if self.responseMask == "confident":
            keep &= teacherOldLogits.detach().sigmoid().amax(2) >= self.confidence
        return keep

    def anchorsInBoxes(self, preds, targets):
        """(B, A) bool: the anchors inside some box of targets ((N, 6) Mars collate rows), by the assigner's
        candidate rule (centre inside the box, small boxes widened)."""
        gtLabels, gtBoxes, gtMask = self.detection.paddedTargets(preds, targets)
        anchorPoints, strideTensor = self.detection.anchors(preds)  # (A, 2) stride units, (A, 1)
        return self.detection.assigner.anchorsInside(anchorPoints * strideTensor, gtBoxes, gtMask.bool()).any(1)

    def oldLogits(self, logits):
        """(B, A, nc) -> (B, A, k): the classes the teacher knows. The index lives on the logits' device (copied there
        on the first call only): indexing with a Python list would copy it to the device at every step."""
        if self.oldIndex.device != logits.device:
            self.oldIndex = self.oldClasses.to(logits.device)
        return logits.index_select(-1, self.oldIndex)

    def compute(self, outputs, targets):
        if not isinstance(outputs, dict):  # eval-mode student: plain head outputs
            loss = self.detection(outputs, targets)
            self.parts, self.distilParts = self.detection.parts, torch.zeros(2)
            return self.weights[0] * loss
        return sum(self.terms(outputs, targets).values())

    def terms(self, outputs, targets):
        """The three weighted terms of the train-mode loss, each as it enters the sum (with gradients):
        {"detection": w0 * DetectionLoss, "knowledge": w1 * Knowledge * s * B, "response": w2 * Response * s * B}
        (s: mcfg.distilSchedule's scale). Everything in float32: the predictions under autocast (bf16 / fp16) are cast
        before they are flattened, so the anchors, the LD anchor weights and the "confident" threshold are float32.
        Sets self.parts and self.distilParts."""
        preds = [p.float() for p in outputs["preds"]]
        teacherPreds = [p.detach().float() for p in outputs["teacherPreds"]]
        B = preds[0].shape[0]
        detectionLoss = self.detection(preds, targets)
        predDist, predLogits = self.detection.flatten(preds)  # (B, A, 4*regMax), (B, A, nc)
        teacherDist, teacherLogits = self.detection.flatten(teacherPreds)
        teacherOld = self.oldLogits(teacherLogits)
        if "headLogits" in outputs:  # mcfg.distilResponsePath "head": the response trains the last class layer alone
            predLogits = torch.cat([p.float().flatten(2) for p in outputs["headLogits"]], 2).transpose(1, 2)
        response = responseDivergence(self.oldLogits(predLogits), teacherOld, self.temperature,
                                      self.responseAnchors(preds, targets, teacherOld), self.raiseOnly)
        if self.method == "cwd":
            knowledge = sum(channelWiseDivergence(outputs["feats"][name], outputs["teacherFeats"][name].detach(),
                                                  self.temperature) for name in self.featureNames)
        else:
            anchorWeight = teacherOld.sigmoid().amax(2)  # (B, A) teacher's best old-class score
            knowledge = localisationDivergence(predDist, teacherDist, anchorWeight, self.regMax, self.temperature)
        self.parts = self.detection.parts
        self.distilParts = torch.stack((knowledge, response)).detach()
        w0, w1, w2 = self.weights
        return {"detection": w0 * detectionLoss, "knowledge": w1 * knowledge * self.scale * B,
                "response": w2 * response * self.scale * B}
