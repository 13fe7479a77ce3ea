"""Built-in demo: a MAR20-shaped synthetic data set (A1..A20 aircraft silhouettes), generated under the run root
on first use, sized so a nano model trains and evaluates on a CPU in minutes.

Tags: full, pretrained, teacher, distillation, ld (as in c1.py; pretrained freezes 3 epochs), tiny (a seconds-long smoke run on 32 small images), mosaic (4-image mosaic, probability 1), hard (the MAR20-like style of demo/hard.py: 400/80/120/100 images of 320-640 px with 4-20 small aircraft in shared liveries, clutter and occlusion, input 320; combines with the others, e.g. demo.nano.hard.distillation), fine (fine-grained: 400/80/120/100 images of 320 px with 8-12 aircraft of 20-40 px, all in one light grey livery, input 320: the regime of issue 18's independent check, a weak teacher and fine-grained types; demo.nano.fine.distillation), plus the common tags (nano..extended, cpu, cuda@N, batch@N, epoch@N, size@N, seed@N, dcore@N).
"""
from config.mconfig import ModelConfig
from config.tags import applyCommonTags, pretrainedBackbonePath
from misc.errors import MarsError

TAGS = ("full", "pretrained", "teacher", "distillation", "ld", "mosaic", "tiny", "hard", "fine")


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
    if "hard" in tags:  # closer to real remote sensing: the data set to tune distillation on
        mcfg.demoStyle, mcfg.demoSize, mcfg.demoImageSize = "hard", (400, 80, 120, 100), (320, 640)
        mcfg.inputShape = (320, 320)
    if "fine" in tags:  # fine-grained types in one tone, about 10 small aircraft per image (MAR20 at 320 px)
        if "hard" in tags:
            raise MarsError("tags hard and fine are two data styles; use one of them, e.g. demo.nano.fine.teacher")
        mcfg.demoStyle, mcfg.demoSize, mcfg.demoImageSize = "fine", (400, 80, 120, 100), 320
        mcfg.inputShape = (320, 320)
    if "tiny" in tags:
        mcfg.demoSize, mcfg.demoImageSize = (16, 8, 8, 8), ((160, 256) if "hard" in tags else 128)
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
        # the teacher run: same phase, data style (hard, fine) and size (tiny) as this run, e.g. demo.nano.hard.teacher
        teacherRun = ".".join(["demo", phase] + [t for t in ("hard", "fine", "tiny") if t in tags] + ["teacher"])
        mcfg.modelName = "distillation"
        mcfg.checkpointModelFile = teacherRun + "/__cache__/best_weights.pth"
        mcfg.teacherModelFile = mcfg.checkpointModelFile
        mcfg.teacherClassIndexes = list(range(10))
        mcfg.trainSplitName = mcfg.distilSplitName
        mcfg.backboneFreezeEpochs = list(range(mcfg.maxEpoch // 4))  # the first quarter (5 of bench/distill.py's 20)
        mcfg.warmupMinIterations = 0  # 8.4.190's warm-up: a floor of 100 iterations is half of a 30-epoch student's run and
        # cost the new classes (docs/distillation.md)
        # mcfg.distilLossWeights: config/mconfig.py's (1, 0.25, 0), CWD alone (the response off: docs/distillation.md)
        if "ld" in tags:  # localisation distillation of the box distributions instead of CWD, with the response
            mcfg.distilMethod, mcfg.distilLossWeights = "ld", (1.0, 4.0, 0.25)
    elif "ld" in tags:
        raise MarsError("tag ld chooses a distillation method; use it with the tag distillation, e.g. demo.nano.distillation.ld")
    return mcfg
