"""mcfg.modelName -> trainer with the matching loss."""
from engine.evaluator import Evaluator
from engine.trainer.base import BaseTrainer
from train.distilloss import DistillationDetectionLoss
from train.loss import DetectionLoss

LOSSES = {"base": DetectionLoss, "distillation": DistillationDetectionLoss}


def makeTrainer(mcfg, model):
    return BaseTrainer(mcfg, model, LOSSES[mcfg.modelName], Evaluator(mcfg))
