"""YoloStudentModel: a YoloModel that, when training, also returns its features and its frozen teacher's outputs."""
from config.mconfig import DISTIL_FEATURES
from model.base.yolomodel import YoloModel
from model.distillation.teachermodel import YoloTeacherModel


def featureDict(backboneFeats, neckFeats):
    """(feat0..feat3), (C, X, Y, Z) -> {"feat0": (B, 128w, H/4, W/4), ..., "Z": (B, 512wr, H/32, W/32)}."""
    return dict(zip(DISTIL_FEATURES, tuple(backboneFeats) + tuple(neckFeats)))


class TeacherHandle(object):
    """Holds the teacher outside the student's module tree, so the student's state_dict(), parameters(),
    train()/eval() and the optimizer never see it. copy.deepcopy (as ModelEma does) shares the handle instead of
    copying the teacher: the EMA copy of the student neither duplicates nor averages it."""

    def __init__(self, teacher):
        self.teacher = teacher

    def __deepcopy__(self, memo):
        return self


class YoloStudentModel(YoloModel):
    """The student of a distillation run, built like YoloModel(mcfg) (its weights are set from
    mcfg.checkpointModelFile by model.makeModel), with a YoloTeacherModel loaded from mcfg.teacherModelFile.

    forward, eval mode: (B, 3, H, W) -> [P3, P4, P5] (B, 4*regMax + nc, Hi, Wi), exactly as YoloModel, so
        validation, evaluation and prediction use the student alone.
    forward, train mode: (B, 3, H, W) -> dict
        "preds": the student's [P3, P4, P5] (B, 4*regMax + nc, Hi, Wi),
        "feats": the student's {"feat0".."feat3", "C", "X", "Y", "Z"} maps (shapes in featureDict),
        "teacherPreds", "teacherFeats": the same from the teacher, detached,
        and with mcfg.distilResponsePath "head": "headLogits", per level (B, nc, Hi, Wi) the class logits its last
        class convolution makes of the class-branch features detached (equal to the logits in "preds", but a loss
        on them trains that last layer alone: train/distilloss.py).
    The student's checkpoints hold the student alone and load into a plain YoloModel.
    """

    def __init__(self, mcfg):
        super().__init__(mcfg)
        self.teacherHandle = TeacherHandle(YoloTeacherModel(mcfg))
        self.headLogits = mcfg.distilResponsePath == "head"

    @property
    def teacher(self):
        return self.teacherHandle.teacher

    def _apply(self, fn, *args, **kwargs):
        """.to(device), .float(), ... move the teacher with the student."""
        super()._apply(fn, *args, **kwargs)
        if "teacherHandle" in self.__dict__:
            self.teacher._apply(fn, *args, **kwargs)
        return self

    def forward(self, x):
        if not self.training:
            return super().forward(x)
        classFeatures = [] if self.headLogits else None
        preds, backboneFeats, neckFeats = self.forwardFeatures(x, classFeatures)
        teacherPreds, teacherBackboneFeats, teacherNeckFeats = self.teacher(x)
        outputs = {"preds": preds, "feats": featureDict(backboneFeats, neckFeats),
                   "teacherPreds": teacherPreds, "teacherFeats": featureDict(teacherBackboneFeats, teacherNeckFeats)}
        if self.headLogits:
            outputs["headLogits"] = [cls[2](f.detach()) for cls, f in zip(self.head.clsBranches, classFeatures)]
        return outputs
