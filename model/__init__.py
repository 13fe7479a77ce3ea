"""Mars models.

Glossary used in every docstring:
    B       batch size
    A       anchor points over all levels (sum of H_i * W_i; 8400 at 640x640)
    nc      number of classes
    M       max boxes per image (labels padded to M)
    regMax  DFL bins per box side (16)
    w, r, n width multiple, last-stage ratio, bottlenecks of the phase
"""
from misc.errors import MarsError
from model.base.yolomodel import YoloModel
from model.distillation.studentmodel import YoloStudentModel

MODELS = {"base": YoloModel, "distillation": YoloStudentModel}  # mcfg.modelName -> model class


def makeModel(mcfg):
    """mcfg.modelName's model ("base": YoloModel, "distillation": YoloStudentModel), from mcfg.checkpointModelFile
    when it names one."""
    if mcfg.modelName not in MODELS:
        raise MarsError("mcfg.modelName={!r} is unknown; models: {}".format(mcfg.modelName, ", ".join(MODELS)))
    model = MODELS[mcfg.modelName](mcfg)
    if mcfg.checkpointModelFile:
        model.load(mcfg.checkpointModelFile)
    return model
