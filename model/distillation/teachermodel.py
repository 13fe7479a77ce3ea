"""YoloTeacherModel: a frozen YoloModel loaded from mcfg.teacherModelFile, used only to teach a student."""

import torch

from misc.errors import MarsError
from model.base.yolomodel import YoloModel


class YoloTeacherModel(YoloModel):
    """The teacher of a distillation run: same phase and class count as the student, weights from
    mcfg.teacherModelFile (loaded with weights_only=True), always in eval mode (BatchNorm statistics frozen) and
    without gradients, whatever train()/requires_grad_() is called on it.

    forward: (B, 3, H, W) float in [0, 1] -> (head outputs [P3, P4, P5] (B, 4*regMax + nc, Hi, Wi),
        backbone feats (feat0..feat3), neck feats (C, X, Y, Z)), every tensor computed without autograd (detached).
    """

    def __init__(self, mcfg):
        if not mcfg.teacherModelFile:
            raise MarsError("mcfg.modelName={!r} needs mcfg.teacherModelFile (the teacher run's best_weights.pth)".format(
                mcfg.modelName))
        super().__init__(mcfg.copy(pretrainedBackboneUrl=None))  # every tensor comes from the teacher file
        try:
            self.load(mcfg.teacherModelFile)
        except MarsError as e:
            raise MarsError("teacher (mcfg.teacherModelFile): {}".format(e)) from e
        self.requires_grad_(False)
        self.train(False)

    def train(self, mode=True):
        """Always eval mode: the teacher's BatchNorm statistics never change."""
        return super().train(False)

    def requires_grad_(self, requires_grad=True):
        """Always False: the teacher never trains."""
        return super().requires_grad_(False)

    @torch.no_grad()
    def forward(self, x):
        return self.forwardFeatures(x)
