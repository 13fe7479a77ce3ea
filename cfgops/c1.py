"""MAR20: 20 military aircraft types (A1..A20) in satellite images, Pascal VOC boxes.

Data root: $MARS_DATA, else DATA_ROOT below. Expected layout:
    <root>/images/<stem>.jpg, <root>/annotations/<stem>.xml, <root>/splits/v5/{train,validation,test,small}.txt
Tags: full (train from scratch, all classes), pretrained (stage 2: start from the official backbone converted to
resources/pretrained/backbone/backbone_<phase>.pth, frozen for the first 10 epochs), teacher (labels of A1..A10 only), distillation (student on the
small split with all 20 classes, taught by the teacher; CWD alone, the response off), ld (with distillation: localisation
distillation of the box distributions instead of CWD, with the response), mosaic (4-image mosaic, probability 1), plus the common tags (nano..extended, cpu, cuda@N, batch@N, epoch@N, size@N, seed@N, dcore@N).
"""
import os

from config.mconfig import ModelConfig
from config.tags import applyCommonTags, pretrainedBackbonePath
from misc.errors import MarsError

DATA_ROOT = os.path.join("~", "data", "MAR20")  # used when MARS_DATA is not set
TAGS = ("full", "pretrained", "teacher", "distillation", "ld", "mosaic")


def mcfg(tags):
    mcfg = ModelConfig()
    root = os.path.expanduser(os.environ.get("MARS_DATA", DATA_ROOT))
    mcfg.imageDir = os.path.join(root, "images")
    mcfg.annotationDir = os.path.join(root, "annotations")
    mcfg.classList = ["A{}".format(i) for i in range(1, 21)]
    mcfg.subsetMap = {name: os.path.join(root, "splits", "v5", name + ".txt") for name in ("train", "validation", "test", "small")}
    mcfg.phase = "nano"
    mcfg.inputShape = (640, 640)
    mcfg.device = "cuda" if "cpu" not in tags else "cpu"
    mcfg.dcore = 8
    mcfg.batchSize = 16
    mcfg.paintImages = True
    if "full" in tags or "teacher" in tags:
        mcfg.maxEpoch = 200
    if "distillation" in tags:
        mcfg.maxEpoch = 100
    applyCommonTags(mcfg, tags, TAGS, "c1")  # after the file's epochs, so that epoch@N wins
    if "mosaic" in tags:  # 4-image mosaic on every training sample (Ultralytics' default), off for the last 10 epochs
        mcfg.mosaic = 1.0
    phase = mcfg.phase

    if "full" in tags:
        mcfg.backboneFreezeEpochs = []
    if "pretrained" in tags:  # stage 2: an official backbone (tools/convert.py ... --backbone-only), frozen at first
        mcfg.pretrainedBackboneUrl = pretrainedBackbonePath(phase)
        mcfg.backboneFreezeEpochs = list(range(10))
    if "teacher" in tags:
        mcfg.trainSelectedClasses = ["A{}".format(i) for i in range(1, 11)]
        mcfg.testSelectedClasses = mcfg.trainSelectedClasses
    if "distillation" in tags:
        mcfg.modelName = "distillation"
        mcfg.checkpointModelFile = "c1.{}.teacher/__cache__/best_weights.pth".format(phase)
        mcfg.teacherModelFile = mcfg.checkpointModelFile
        mcfg.teacherClassIndexes = list(range(10))
        mcfg.trainSplitName = mcfg.distilSplitName
        mcfg.backboneFreezeEpochs = list(range(mcfg.maxEpoch // 4))  # the first quarter: 25 of 100 epochs
        mcfg.warmupMinIterations = 0  # 8.4.190's warm-up: a floor of 100 iterations is half of a 30-epoch student's run and
        # cost the new classes (docs/distillation.md)
        mcfg.epochValidation = False
        # mcfg.distilLossWeights: config/mconfig.py's (1, 0.25, 0), CWD alone (the response off: docs/distillation.md)
        if "ld" in tags:  # localisation distillation of the box distributions instead of CWD, with the response
            mcfg.distilMethod, mcfg.distilLossWeights = "ld", (1.0, 4.0, 0.25)
    elif "ld" in tags:
        raise MarsError("tag ld chooses a distillation method; use it with the tag distillation, e.g. c1.nano.distillation.ld")
    return mcfg
