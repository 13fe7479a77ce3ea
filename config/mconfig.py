"""ModelConfig: every knob of a Mars run, its default and its unit, validated once in finalize(), final after it."""
import copy
import difflib
import os

from misc.errors import MarsError

PHASES = {
    # phase: (w width multiple, r last-stage ratio, n bottlenecks = 3 x depth multiple)
    "nano": (0.25, 2.0, 1),
    "small": (0.5, 2.0, 1),
    "medium": (0.75, 1.5, 2),
    "large": (1.0, 1.0, 3),
    "extended": (1.25, 1.0, 3),
}
PHASE_LETTERS = {"nano": "n", "small": "s", "medium": "m", "large": "l", "extended": "x"}  # Ultralytics' yolov8<letter>
OPTIMIZERS = ("SGD", "ADAMW")
SCHEDULERS = ("COS", "LINEAR")
DISTIL_METHODS = ("cwd", "ld")  # see train/distilloss.py
DISTIL_RESPONSE_MASKS = ("all", "outsideNew", "confident", "oldObjects")  # anchors of the response (train/distilloss.py)
DISTIL_RESPONSE_PATHS = ("network", "head")  # the layers the response trains (train/distilloss.py)
DISTIL_RESPONSE_DIRECTIONS = ("both", "raise")  # which way the response moves the student's scores (train/distilloss.py)
DISTIL_SCHEDULES = ("constant", "cosine")  # distillation weights over the student's epochs (train/distilloss.py)
DEMO_STYLES = ("easy", "hard", "fine")  # built-in demo data drawings (demo/easy.py, demo/hard.py; fine: demo/hard.py's
# drawing with its FINE_* settings)
DISTIL_FEATURES = ("feat0", "feat1", "feat2", "feat3", "C", "X", "Y", "Z")  # backbone feat0..feat3, neck C, X, Y, Z


RENAMED = {"paintScoreThreshold": "reportScoreThreshold"}  # old knob -> new knob, for users' config files


class ModelConfig(object):
    """Every knob of a run (below, with its default and unit). A cfgops file sets them; finalize() checks them all
    and makes the config final: setting a knob afterwards, or a knob that does not exist, raises MarsError. A mode
    that needs other values makes a changed copy: mcfg.copy(knob=value)."""

    def __init__(self):
        # --- run identity (filled by cfgops.makeConfig) ---
        self.cfgname = None  # "<cfgops file>.<tags...>"
        self.root = None  # run root folder; the run lives in root/user/cfgname
        self.user = None  # user name used in the run path
        self.nobuf = False  # ignore cached checkpoints and start over

        # --- data ---
        self.imageDir = None  # folder of images
        self.annotationDir = None  # folder of Pascal VOC XML files, one per image
        self.classList = None  # list of class names; index = class id
        self.subsetMap = {}  # split name -> split file (one image stem per line)
        self.suffix = ".jpg"  # image file extension, tried first (.png, .jpeg, ... and upper case are looked for next)
        self.trainSplitName = "train"
        self.validationSplitName = "validation"
        self.testSplitName = "test"
        self.distilSplitName = "small"
        self.trainSelectedClasses = None  # class names kept as training targets; None = all
        self.testSelectedClasses = None  # class names kept as evaluation ground truth; None = all
        self.dcore = 2  # data loader worker processes (0 = load in the main process)
        self.augment = True  # training augmentation (scale/aspect jitter, flip, HSV)
        self.augScale = (0.6, 1.4)  # random scale range of the letterboxed image
        self.augAspect = 0.2  # random aspect jitter, +- fraction
        self.augFlip = 0.5  # probability of a horizontal flip
        self.augHsv = (0.015, 0.7, 0.4)  # hue, saturation, value gains
        self.mosaic = 0.0  # probability of a 4-image mosaic per training sample (Ultralytics: 1.0); see docs/versus.md
        self.closeMosaicEpochs = 10  # epochs at the end of training without mosaic
        self.minBoxSize = 2.0  # pixels (network input); smaller boxes after augmentation are dropped
        self.useDifficult = False  # VOC <difficult> objects: False = not targets, and ignored by evaluation (VOC protocol)

        self.demoData = False  # generate the built-in demo data under <root>/demo-data and point the data knobs there
        self.demoSize = (600, 100, 150, 120)  # demo images: train, validation, test, small (a subset of train)
        self.demoImageSize = 192  # pixels, square demo images
        self.demoStyle = "easy"  # "easy" | "hard" | "fine" (demo/hard.py: demoImageSize may be the (min, max) image side)

        # --- model ---
        self.modelName = "base"  # "base" or "distillation"
        self.phase = "nano"  # nano | small | medium | large | extended
        self.nc = None  # number of classes; defaults to len(classList)
        self.regMax = 16  # DFL bins per box side
        self.inputShape = (640, 640)  # (height, width) pixels, multiples of 32
        self.device = "cpu"  # "cpu", "cuda", "cuda:N"
        self.pretrainedBackboneUrl = None  # file:// URL or path of a backbone-only state dict
        self.checkpointModelFile = None  # state dict to start from (e.g. the teacher's best weights)
        self.teacherModelFile = None  # distillation: the teacher's weights
        self.teacherClassIndexes = None  # distillation: class ids the teacher knows

        # --- training ---
        self.maxEpoch = 200  # epochs
        self.startEpoch = 0  # epoch
        self.batchSize = 16  # images per batch
        self.backboneFreezeEpochs = []  # epoch indexes during which the backbone is frozen
        self.optimizerType = "SGD"  # "SGD" or "AdamW" (AdamW steps per 64 images when nominalBatchSize is 0, see below)
        self.optimizerMomentum = 0.937
        self.nominalBatchSize = 0  # images per optimizer step: gradients of round(this / (batchSize x ranks)) batches
        # are summed (at least 1; ramped from 1 during the warm-up; a step at every epoch's last batch); 64 = Ultralytics
        # 8.4.190's nbs; 0 = a step per batch with SGD, per 64 images with AdamW (train/sched.py nominalBatchSize)
        self.optimizerWeightDecay = 5e-4  # per batch of 64 images, applied to conv weights only
        self.schedulerType = "COS"
        self.baseLearningRate = 1e-2  # per batch
        self.minLearningRate = 1e-4  # per batch, reached at the last epoch
        self.warmupEpochs = 3.0  # epochs of linear warm-up: round(min(this, maxEpoch - 1) x batches per epoch)
        # iterations (Ultralytics 8.4.190's rule), at least warmupMinIterations; 0 = none
        self.warmupMinIterations = 100  # Mars's floor (at most half the run; measured better on the demo, README's
        # recipe table); 0 = 8.4.190's rule exactly, as the stage-3 configs (cfgops distillation tags) set it
        self.warmupBiasLearningRate = 0.1  # bias learning rate at the start of warm-up
        self.gradientClip = 10.0  # max gradient L2 norm
        self.emaDecay = 0.9999  # EMA decay per 64 images (ramped up: decay * (1 - exp(-updates / emaTau)))
        self.emaTau = 2000.0  # updates of 64 images (128,000 images); EMA decay ramp constant
        self.lossWeights = (7.5, 0.5, 1.5)  # box (CIoU), class (BCE), DFL
        self.talTopk = 10  # TaskAlignedAssigner candidates per box
        self.distilLossWeights = (1.0, 0.25, 0.0)  # detection, knowledge (CWD or LD), response: CWD alone, the response
        # computed and logged but not trained (it lowered the new classes' scores through the shared layers:
        # train/distilloss.py, docs/distillation.md); the cfgops ld tag uses (1, 4, 0.25)
        self.distilTemperature = 1.0  # softmax / sigmoid temperature of the distillation terms (1 = unsoftened)
        self.distilMethod = "cwd"  # term weighted by distilLossWeights[1]: "cwd" (features) or "ld" (box distributions)
        self.distilFeatures = ("feat1", "feat2", "feat3", "X", "Y", "Z")  # maps CWD compares (DISTIL_FEATURES)
        self.distilResponseMask = "all"  # response anchors: "all", "outsideNew" (not in new-class boxes), "confident",
        # "oldObjects" (only in old-class boxes)
        self.distilResponsePath = "network"  # what the response trains: "network" (every layer) or "head" (the old classes'
        # rows of the class branches' last convolution alone, so it cannot lower the new classes' scores through the
        # shared layers; measured below "network" on the demo presets: docs/distillation.md); the knobs of the response
        # act only when distilLossWeights[2] > 0 (0 by default)
        self.distilResponseDirection = "both"  # "both": old-class scores pulled to the teacher's from above and below;
        # "raise": only lifted up to the teacher's, never lowered (the labels alone lower them)
        self.distilConfidence = 0.25  # "confident": teacher's best old-class score at least this (0..1)
        self.distilSchedule = "constant"  # knowledge and response weights over the epochs: "constant" or "cosine" (1 -> 0)
        self.epochValidation = True  # compute validation loss each epoch
        self.evalEveryEpochs = 1  # epochs between validation mAP measurements (and after the last epoch); the best
        # checkpoint is the one of highest fitness = validation mAP50-95 (COCO), as Ultralytics 8.4.190 (0 = never:
        # best by validation loss)
        self.seed = 0
        self.maxNonFiniteSteps = 10  # consecutive non-finite losses (each step skipped) before the run stops
        self.deterministic = False  # torch deterministic algorithms (on the CPU a resume is then bitwise exact, any dcore)
        self.amp = True  # CUDA only: mixed precision, bf16 where the card has it natively (sm80+), else fp16 + grad scaler
        self.compile = False  # torch.compile the model for training
        self.syncBatchNorm = False  # torchrun: BatchNorm statistics over the batches of all ranks
        self.mainWaitMinutes = 120.0  # torchrun: how long the other ranks wait for rank 0 to validate and save an epoch
        self.previewBatches = 1  # first training batches drawn to <run>/train_batch.jpg (0 = off)

        # --- evaluation / prediction ---
        self.paintImages = False  # write painted test images
        self.minIou = 0.5  # IoU threshold of a true positive (VOC mAP50)
        self.scoreThreshold = 0.001  # minimum class score kept before NMS (evaluation)
        self.nmsIou = 0.7  # NMS IoU threshold
        self.maxDetections = 300  # per image after NMS
        self.reportScoreThreshold = 0.25  # minimum score of a reported detection: painted images, the report table's
        # precision / recall, -predict's detections.json, -inspect's score maps
        object.__setattr__(self, "_final", False)  # from here on, only the knobs above can be set; none after finalize

    def __setattr__(self, name, value):
        if "_final" not in self.__dict__:  # __init__ defines the knobs
            object.__setattr__(self, name, value)
            return
        if name not in self.__dict__:
            hint = RENAMED.get(name) or next(iter(difflib.get_close_matches(name, list(self.__dict__), 1)), None)
            raise MarsError("mcfg.{} is not a knob{}; the knobs are in config/mconfig.py".format(
                name, " (did you mean mcfg.{}?)".format(hint) if hint else ""))
        if self._final:
            raise MarsError("mcfg.{} cannot change once the config is final (finalize); make a changed copy: "
                            "mcfg.copy({}=...)".format(name, name))
        object.__setattr__(self, name, value)

    def copy(self, **changes):
        """A final copy of this config with some knobs changed (checked again by finalize)."""
        other = ModelConfig.__new__(ModelConfig)
        other.__dict__.update(copy.deepcopy(self.__dict__))
        other.__dict__["_final"] = False
        for name, value in changes.items():
            setattr(other, name, value)
        return other.finalize()

    # ------------------------------------------------------------------
    def runDir(self):
        return os.path.join(self.root, self.user, self.cfgname)

    def cacheDir(self):
        return os.path.join(self.runDir(), "__cache__")

    def evalDir(self):
        return os.path.join(self.runDir(), "eval")

    def widthDepth(self):
        """(w, r, n) of the phase."""
        return PHASES[self.phase]

    def finalize(self):
        """Check every knob; raise MarsError naming the knob and the fix. Makes the config final; returns self."""
        if self._final:
            return self
        if self.phase not in PHASES:
            raise MarsError("mcfg.phase={!r} is unknown; use one of {}".format(self.phase, ", ".join(PHASES)))
        if self.nc is None and self.classList:
            self.nc = len(self.classList)
        if not isinstance(self.nc, int) or self.nc < 1:
            raise MarsError("mcfg.nc={!r}: set mcfg.classList (or mcfg.nc) to at least one class".format(self.nc))
        shape = tuple(self.inputShape) if isinstance(self.inputShape, (list, tuple)) else None
        if shape is None or len(shape) != 2 or not all(isinstance(v, int) and v > 0 and v % 32 == 0 for v in shape):
            raise MarsError("mcfg.inputShape={!r} must be (height, width), each a positive multiple of 32 (e.g. (640, 640))".format(self.inputShape))
        self.inputShape = shape
        if self.regMax < 2:
            raise MarsError("mcfg.regMax={} must be at least 2 (YOLOv8 uses 16)".format(self.regMax))
        if self.classList is not None:
            if len(self.classList) != self.nc:
                raise MarsError("mcfg.classList has {} names but mcfg.nc={}; make them agree".format(len(self.classList), self.nc))
            if len(set(self.classList)) != len(self.classList):
                raise MarsError("mcfg.classList has duplicate names: {}".format(self.classList))
            for knob in ("trainSelectedClasses", "testSelectedClasses"):
                selected = getattr(self, knob)
                unknown = [c for c in (selected or []) if c not in self.classList]
                if unknown:
                    raise MarsError("mcfg.{} names {} not in mcfg.classList {}".format(knob, unknown, self.classList))
        if self.optimizerType.upper() not in OPTIMIZERS:
            raise MarsError("mcfg.optimizerType={!r}; use one of {}".format(self.optimizerType, OPTIMIZERS))
        if self.schedulerType.upper() not in SCHEDULERS:
            raise MarsError("mcfg.schedulerType={!r}; use one of {}".format(self.schedulerType, SCHEDULERS))
        for knob in ("maxEpoch", "batchSize"):
            value = getattr(self, knob)
            if not isinstance(value, int) or value < 1:
                raise MarsError("mcfg.{}={!r} must be a positive integer".format(knob, value))
        if type(self.warmupMinIterations) is not int or self.warmupMinIterations < 0:
            raise MarsError("mcfg.warmupMinIterations={!r} must be a non-negative integer of iterations (0 = Ultralytics "
                            "8.4.190's warm-up exactly)".format(self.warmupMinIterations))
        if type(self.nominalBatchSize) is not int or self.nominalBatchSize < 0:
            raise MarsError("mcfg.nominalBatchSize={!r} must be a non-negative integer of images per optimizer step "
                            "(64 = Ultralytics' nbs, 0 = a step per batch)".format(self.nominalBatchSize))
        if not isinstance(self.dcore, int) or self.dcore < 0:
            raise MarsError("mcfg.dcore={!r} must be a non-negative integer (0 = load in the main process)".format(self.dcore))
        if not (isinstance(self.mainWaitMinutes, (int, float)) and self.mainWaitMinutes > 0):
            raise MarsError("mcfg.mainWaitMinutes={!r} must be a positive number of minutes".format(self.mainWaitMinutes))
        if not all(isinstance(e, int) for e in self.backboneFreezeEpochs):
            raise MarsError("mcfg.backboneFreezeEpochs must be a list of epoch indexes, e.g. list(range(0, 10))")
        if len(self.lossWeights) != 3:
            raise MarsError("mcfg.lossWeights={!r} must be three numbers (box, class, dfl)".format(self.lossWeights))
        if len(self.distilLossWeights) != 3:
            raise MarsError("mcfg.distilLossWeights={!r} must be three numbers (detection, knowledge (CWD or LD), response)".format(self.distilLossWeights))
        self.finalizeDistillation()
        self.finalizeDemo()
        if self.talTopk < 1:
            raise MarsError("mcfg.talTopk={} must be at least 1".format(self.talTopk))
        if not (0.0 < self.minIou < 1.0):
            raise MarsError("mcfg.minIou={} must be in (0, 1)".format(self.minIou))
        if self.baseLearningRate <= 0 or self.minLearningRate < 0:
            raise MarsError("mcfg.baseLearningRate / minLearningRate must be positive")
        object.__setattr__(self, "_final", True)
        return self

    def finalizeDemo(self):
        """Check the demo data knobs (cfgops.makeConfig calls it before generating the data)."""
        if self.demoStyle not in DEMO_STYLES:
            raise MarsError("mcfg.demoStyle={!r} is unknown; use one of {}".format(self.demoStyle, ", ".join(DEMO_STYLES)))
        size = self.demoImageSize
        pair = self.demoStyle != "easy" and isinstance(size, (list, tuple))  # hard, fine: (min, max) image side
        sides = list(size) if pair else [size]
        if not (len(sides) in (1, 2) and all(isinstance(v, int) and v > 0 for v in sides) and sides == sorted(sides)):
            raise MarsError("mcfg.demoImageSize={!r} must be a positive int (pixels){}".format(
                self.demoImageSize, "" if self.demoStyle == "easy" else " or (min, max) image side, e.g. (320, 640)"))

    def finalizeDistillation(self):
        """Check the distillation knobs (the teacher file itself is checked by cfgops.makeConfig and the teacher model)."""
        if not (isinstance(self.distilTemperature, (int, float)) and self.distilTemperature > 0):
            raise MarsError("mcfg.distilTemperature={!r} must be a positive number (1.0 = unsoftened)".format(self.distilTemperature))
        if self.distilMethod not in DISTIL_METHODS:
            raise MarsError("mcfg.distilMethod={!r} is unknown; use one of {}".format(self.distilMethod, ", ".join(DISTIL_METHODS)))
        if self.distilResponseMask not in DISTIL_RESPONSE_MASKS:
            raise MarsError("mcfg.distilResponseMask={!r} is unknown; use one of {}".format(self.distilResponseMask, ", ".join(DISTIL_RESPONSE_MASKS)))
        if self.distilResponsePath not in DISTIL_RESPONSE_PATHS:
            raise MarsError("mcfg.distilResponsePath={!r} is unknown; use one of {}".format(self.distilResponsePath, ", ".join(DISTIL_RESPONSE_PATHS)))
        if self.distilResponseDirection not in DISTIL_RESPONSE_DIRECTIONS:
            raise MarsError("mcfg.distilResponseDirection={!r} is unknown; use one of {}".format(self.distilResponseDirection, ", ".join(DISTIL_RESPONSE_DIRECTIONS)))
        if self.distilSchedule not in DISTIL_SCHEDULES:
            raise MarsError("mcfg.distilSchedule={!r} is unknown; use one of {}".format(self.distilSchedule, ", ".join(DISTIL_SCHEDULES)))
        if not (isinstance(self.distilConfidence, (int, float)) and 0 <= self.distilConfidence <= 1):
            raise MarsError("mcfg.distilConfidence={!r} must be a number in [0, 1]".format(self.distilConfidence))
        unknown = [name for name in self.distilFeatures if name not in DISTIL_FEATURES]
        if unknown or not self.distilFeatures:
            raise MarsError("mcfg.distilFeatures={!r} must name at least one of {}".format(self.distilFeatures, ", ".join(DISTIL_FEATURES)))
        self.distilFeatures = tuple(self.distilFeatures)
        if self.modelName != "distillation":
            return
        if not self.teacherModelFile:
            raise MarsError("mcfg.modelName='distillation' needs mcfg.teacherModelFile (the teacher run's best_weights.pth)")
        indexes = self.teacherClassIndexes
        if not indexes or not all(isinstance(i, int) and 0 <= i < self.nc for i in indexes) or len(set(indexes)) != len(indexes):
            raise MarsError("mcfg.teacherClassIndexes={!r} must list the distinct class ids the teacher knows, each in [0, {}) "
                            "(e.g. list(range(10)))".format(indexes, self.nc))
