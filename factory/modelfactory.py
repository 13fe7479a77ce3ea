"""mcfg.modelName -> model."""
from misc.misc import MarsError
from model.base.yolomodel import YoloModel
from model.distillation.studentmodel import YoloStudentModel

MODELS = {"base": YoloModel, "distillation": YoloStudentModel}


def makeModel(mcfg):
    if mcfg.modelName not in MODELS:
        raise MarsError("mcfg.modelName={!r} is unknown; models: {}".format(mcfg.modelName, ", ".join(MODELS)))
    model = MODELS[mcfg.modelName](mcfg)
    if mcfg.checkpointModelFile:
        model.load(mcfg.checkpointModelFile)
    return model
