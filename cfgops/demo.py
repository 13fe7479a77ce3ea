"""Built-in demo: a MAR20-shaped synthetic data set (A1..A20 aircraft silhouettes), generated under the run root
on first use, sized so a nano model trains and evaluates on a CPU in minutes.

Tags: full, pretrained, teacher, distillation, ld (as in c1.py; pretrained freezes 3 epochs), tiny (a seconds-long smoke run on 32 small images), mosaic (4-image mosaic, probability 1), plus the common tags (nano..extended, cpu, cuda@N, batch@N, epoch@N, size@N, seed@N).
"""
from config.mconfig import ModelConfig
from config.tags import applyCommonTags, pretrainedBackbonePath
from misc.misc import MarsError

TAGS = ("full", "pretrained", "teacher", "distillation", "ld", "mosaic", "tiny")


def mcfg(tags):
    mcfg = ModelConfig()
    mcfg.demoData = True  # imageDir, annotationDir, classList, subsetMap point at <root>/demo-data
    mcfg.classList = ["A{}".format(i) for i in range(1, 21)]
    mcfg.phase = "nano"
    mcfg.inputShape = (160, 160)
    mcfg.device = "cpu"
    mcfg.dcore = 1
    mcfg.batchSize = 16
    mcfg.maxEpoch = 12
    mcfg.warmupEpochs = 1.0
    mcfg.baseLearningRate = 0.01
    mcfg.minLearningRate = 0.001
    mcfg.epochValidation = False
    mcfg.paintImages = True
    if "tiny" in tags:
        mcfg.demoSize, mcfg.demoImageSize = (16, 8, 8, 8), 128
        mcfg.inputShape, mcfg.batchSize, mcfg.maxEpoch, mcfg.dcore = (96, 96), 4, 2, 0
        mcfg.deterministic = True
    applyCommonTags(mcfg, tags, TAGS, "demo")
    if "mosaic" in tags:  # 4-image mosaic on every training sample (Ultralytics' default), off for the last 10 epochs
        mcfg.mosaic = 1.0
    phase = mcfg.phase

    if "pretrained" in tags:  # stage 2: an official backbone (tools/convert.py ... --backbone-only), frozen at first
        mcfg.pretrainedBackboneUrl = pretrainedBackbonePath(phase)
        mcfg.backboneFreezeEpochs = list(range(3))
    if "teacher" in tags:
        mcfg.trainSelectedClasses = ["A{}".format(i) for i in range(1, 11)]
        mcfg.testSelectedClasses = mcfg.trainSelectedClasses
    if "distillation" in tags:
        # the teacher run: same phase and data size (tiny) as this run, e.g. demo.nano.tiny.teacher
        teacherRun = ".".join(["demo", phase] + (["tiny"] if "tiny" in tags else []) + ["teacher"])
        mcfg.modelName = "distillation"
        mcfg.checkpointModelFile = teacherRun + "/__cache__/best_weights.pth"
        mcfg.teacherModelFile = mcfg.checkpointModelFile
        mcfg.teacherClassIndexes = list(range(10))
        mcfg.trainSplitName = mcfg.distilSplitName
        mcfg.backboneFreezeEpochs = list(range(5))
        mcfg.distilLossWeights = (1.0, 0.25, 0.25)  # detection, cwd, response: tuned with bench/distill.py
        if "ld" in tags:  # localisation distillation of the box distributions instead of CWD
            mcfg.distilMethod, mcfg.distilLossWeights = "ld", (1.0, 4.0, 0.25)
    elif "ld" in tags:
        raise MarsError("tag ld chooses a distillation method; use it with the tag distillation, e.g. demo.nano.distillation.ld")
    return mcfg
