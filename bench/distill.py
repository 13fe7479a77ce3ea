"""Benchmark of stage 3: does distillation keep the old classes better than plain fine-tuning?

    python bench/distill.py [-root DIR] [--preset easy|hard|fine] [--size N] [--teacher-epochs N] [--student-epochs N]
                            [--threads 1] [--seeds 1] [--joint] [--methods finetune,cwd,ld]
                            [--reuse-students] [--student-set KNOB=VALUE ...]

On built-in demo data (generated under the root on first use): --preset easy is demo.nano (192 px images, 1-5
aircraft coloured by type; by default input 128, teacher 12 and students 20 epochs), --preset hard is
demo.nano.hard (320-640 px images, 4-20 small aircraft in shared liveries, clutter, occlusion; input 320, teacher
and students 30 epochs), --preset fine is demo.nano.fine (320 px images, 8-12 aircraft of 20-40 px in one light grey
livery: fine-grained types told apart by silhouette alone; input 320, teacher and students 30 epochs).
  1. teacher: <preset>.teacher -- all 20 class outputs, labels of A1..A10 only, the train split;
  2. from the teacher's best weights, on the `small` split with all 20 classes, each student of --methods:
     finetune: plain DetectionLoss (<preset>.distillation with modelName "base", no teacher),
     cwd / ld: <preset>.distillation (CWD alone) and <preset>.distillation.ld (LD + response), as configured,
     and the variants of METHODS below (the same configs with knobs changed, e.g. cwd-response: CWD + response).
  3. with --joint, the upper reference: <preset>.full trained on the train split with all 20 labels for the
     teacher's epochs (what one model learns when every label is there from the start).
With --seeds N every student is trained N times (mcfg.seed 0..N-1: initial shuffle and augmentation; the data and
the teacher stay fixed), and the table shows mean and standard deviation over the seeds.
Every model is evaluated on the test split with the ground truth of all 20 classes; the table shows VOC mAP50
(all-point) over A1..A10, A11..A20 and all classes. The settings are the cfgops files' (weights, temperature,
learning rate), with the tag epoch@<epochs> (so a student's frozen backbone is the first quarter of its epochs) and
the input size given here. Runs land in ROOT/bench-distill-<preset>-<size>px/; a finished teacher is reused
(--nobuf trains it again), students start over (--reuse-students: a finished one is evaluated again).
The last line, `retained A1-A10 mAP50: finetune=0.xxx distill=0.xxx  new A11-A20: finetune=0.xxx distill=0.xxx`,
compares finetune with the first distillation method of --methods (means over the seeds), for scripts.
Times on the 2-core machine, --threads 1, in docs/distillation.md.
"""
import argparse
import ast
import math
import os
import sys
import time

import torch

if __package__ in (None, ""):  # run as a file (python bench/...py): Mars and bench/ import from the repository root
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from bench.common import rootArgument  # noqa: E402
from cfgops import makeConfig  # noqa: E402
from engine.evaluator import Evaluator  # noqa: E402
from engine.trainer import makeTrainer  # noqa: E402
from misc.errors import MarsError  # noqa: E402
from model import makeModel  # noqa: E402
from model.base.yolomodel import YoloModel  # noqa: E402

OLD, NEW = list(range(10)), list(range(10, 20))  # A1..A10 (the teacher's classes), A11..A20
# method -> (tags after demo.nano[.hard|.fine], knobs set on top of the config); "cwd" and "ld" are the cfgops tags:
# CWD alone (the default since issue 18) and LD + response. Every other cwd-* method is a variant of the response, so it
# puts the response back at the weight it had before (RESPONSE): "cwd-response" is that earlier default; "-head": the
# response trains the last class layer alone (mcfg.distilResponsePath); "-raise": it only lifts the student's scores.
RESPONSE = {"distilLossWeights": (1.0, 0.25, 0.25)}
METHODS = {
    "cwd": ("distillation", {}),
    "ld": ("distillation.ld", {}),
    "cwd-response": ("distillation", RESPONSE),
    "cwd-outside": ("distillation", dict(RESPONSE, distilResponseMask="outsideNew")),
    "ld-outside": ("distillation.ld", {"distilResponseMask": "outsideNew"}),
    "cwd-confident": ("distillation", dict(RESPONSE, distilResponseMask="confident")),
    "cwd-cosine": ("distillation", dict(RESPONSE, distilSchedule="cosine")),
    "cwd-head": ("distillation", dict(RESPONSE, distilResponsePath="head")),
    "ld-head": ("distillation.ld", {"distilResponsePath": "head"}),
    "cwd-oldobjects": ("distillation", dict(RESPONSE, distilResponseMask="oldObjects")),
    "cwd-raise": ("distillation", dict(RESPONSE, distilResponseDirection="raise")),
    "ld-raise": ("distillation.ld", {"distilResponseDirection": "raise"}),
    "ld-cosine": ("distillation.ld", {"distilSchedule": "cosine"}),
}
# preset -> (config prefix, default input size, teacher epochs, student epochs); a 12-epoch hard teacher knows nothing
PRESETS = {"easy": ("demo.nano", 128, 12, 20), "hard": ("demo.nano.hard", 320, 30, 30),
           "fine": ("demo.nano.fine", 320, 30, 30)}


def parseArgs(argv):
    parser = rootArgument(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--preset", choices=tuple(PRESETS), default="easy",
                        help="demo data: easy (demo.nano, 192 px images), hard (demo.nano.hard, 320-640 px, small objects) or fine "
                        "(demo.nano.fine, 320 px, 20-40 px aircraft in one tone)")
    parser.add_argument("--size", type=int, default=0, help="input size, pixels (multiple of 32; 0 = 128 easy, 320 hard and fine)")
    parser.add_argument("--teacher-epochs", type=int, default=0, help="0 = the preset's: 12 easy, 30 hard and fine")
    parser.add_argument("--student-epochs", type=int, default=0, help="every student's; 0 = the preset's: 20 easy, 30 hard and fine")
    parser.add_argument("--methods", default="finetune,cwd,ld",
                        help="students, comma-separated: finetune (plain fine-tuning) and distillation methods from: "
                        + ", ".join(METHODS))
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (0 = torch's default; 1 is faster on a busy machine)")
    parser.add_argument("--nobuf", action="store_true", help="train the teacher again even if it is cached")
    parser.add_argument("--seeds", type=int, default=1, help="student seeds (mean and standard deviation over them)")
    parser.add_argument("--joint", action="store_true", help="also train the joint upper reference (all 20 labels)")
    parser.add_argument("--reuse-students", action="store_true",
                        help="evaluate a student that has finished all its epochs under ROOT again instead of training it "
                        "anew (same run name: preset, method, seed); by default every student starts over")
    parser.add_argument("--student-set", action="append", default=[], metavar="KNOB=VALUE",
                        help="set an mcfg knob on every student (repeatable; VALUE a Python literal), e.g. "
                        "warmupMinIterations=100 or nominalBatchSize=64; the run names get -KNOBVALUE appended")
    return parser.parse_args(argv)


def studentKnobs(pairs):
    """--student-set ["knob=value", ...] -> ({knob: value}, run-name suffix such as "-warmupMinIterations100")."""
    knobs, suffix = {}, ""
    for pair in pairs:
        knob, sep, text = pair.partition("=")
        try:
            value = ast.literal_eval(text) if sep and knob.isidentifier() else None
        except (ValueError, SyntaxError):
            value = None
        if value is None:
            raise MarsError("--student-set {!r}: write KNOB=VALUE with VALUE a Python literal, e.g. "
                            "warmupMinIterations=100".format(pair))
        knobs[knob] = value
        suffix += "-{}{}".format(knob, "".join(c for c in str(value) if c.isalnum() or c in "."))
    return knobs, suffix


def benchConfig(cfgname, epochs, args, user, runName, **fields):
    """The cfgops config cfgname with the tag epoch@<epochs> (so the config's epoch-dependent knobs, such as the
    distillation's frozen first quarter, follow), the bench's input size, run name and fields."""
    mcfg = makeConfig("{}.epoch@{}".format(cfgname, epochs), args.root, user)
    return mcfg.copy(cfgname=runName, inputShape=(args.size, args.size), **fields)


def trainRun(mcfg):
    """Train (the trainer resumes or skips a finished run unless mcfg.nobuf) -> seconds spent."""
    started = time.time()
    makeTrainer(mcfg, makeModel(mcfg)).run()
    return time.time() - started


def evaluateRun(mcfg):
    """VOC mAP50 of the run's best weights on the test split, ground truth of all 20 classes ->
    (A1..A10, A11..A20, all)."""
    mcfg = mcfg.copy(testSelectedClasses=None)
    model = YoloModel(mcfg).load(os.path.join(mcfg.cacheDir(), "best_weights.pth"))  # a student alone, no teacher
    ap = Evaluator(mcfg).evaluate(model, mcfg.testSplitName)["ap50Voc"]

    def mean(indexes):
        values = [float(ap[i]) for i in indexes if not math.isnan(float(ap[i]))]
        return sum(values) / max(1, len(values))
    return mean(OLD), mean(NEW), mean(OLD + NEW)


def meanSd(values):
    """-> (mean, sample standard deviation or None for a single value)."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def formatMeanSd(mean, sd):
    return "{:.3f}".format(mean) if sd is None else "{:.3f} +- {:.3f}".format(mean, sd)


def main(argv=None):
    args = parseArgs(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    methods = [m for m in args.methods.split(",") if m]  # "" = the teacher (and --joint) only
    unknown = [m for m in methods if m not in METHODS and m != "finetune"]
    if unknown:
        raise MarsError("--methods: {} unknown; methods: finetune, {}".format(unknown, ", ".join(METHODS)))
    if args.seeds < 1:
        raise MarsError("--seeds {} must be at least 1".format(args.seeds))
    knobs, suffix = studentKnobs(args.student_set)
    prefix, defaultSize, teacherEpochs, studentEpochs = PRESETS[args.preset]
    args.size = args.size or defaultSize
    args.teacher_epochs, args.student_epochs = args.teacher_epochs or teacherEpochs, args.student_epochs or studentEpochs
    user = "bench-distill-{}-{}px".format(args.preset, args.size)
    rows = []  # (name, seconds, [(A1-A10, A11-A20, all) per seed])
    teacher = benchConfig(prefix + ".teacher", args.teacher_epochs, args, user, prefix + ".teacher",
                          nobuf=args.nobuf)
    teacher.copy(**knobs)  # an unknown knob or a bad value stops here, before anything trains
    rows.append(("teacher (A1-A10 labels)", trainRun(teacher), [evaluateRun(teacher)]))
    if args.joint:
        joint = benchConfig(prefix + ".full", args.teacher_epochs, args, user, prefix + ".joint", nobuf=args.nobuf)
        rows.append(("joint (all labels, train)", trainRun(joint), [evaluateRun(joint)]))
    students = [("(a) finetune", prefix + ".distillation", prefix + ".finetune",
                 dict(modelName="base", teacherModelFile=None))] if "finetune" in methods else []
    students += [("(b) distill " + m, prefix + "." + METHODS[m][0], prefix + ".distillation-" + m, METHODS[m][1])
                 for m in methods if m != "finetune"]
    for name, cfgname, runName, fields in students:
        results, seconds = [], 0.0
        for seed in range(args.seeds):
            student = benchConfig(cfgname, args.student_epochs, args, user, "{}{}-s{}".format(runName, suffix, seed),
                                  nobuf=not args.reuse_students, seed=seed, **dict(fields, **knobs))
            seconds += trainRun(student)
            results.append(evaluateRun(student))
        rows.append((name, seconds / args.seeds, results))

    print()
    print("{4} demo data, nano, {0}x{0} px; teacher {1} epochs on train (A1-A10 labels); students {2} epochs on small "
          "(all 20 classes), {3} seed(s){5}; test split, VOC mAP50, mean +- sd over seeds".format(
              args.size, args.teacher_epochs, args.student_epochs, args.seeds, args.preset,
              "".join(", {}={!r}".format(k, v) for k, v in knobs.items())))
    print("{:<27}{:>15}{:>15}{:>15}{:>9}".format("model", "A1-A10", "A11-A20", "all", "train s"))
    summary = {}
    for name, seconds, results in rows:
        stats = [meanSd([r[k] for r in results]) for k in range(3)]
        summary[name] = stats
        print("{:<27}{}{:>9.0f}".format(name, "".join("{:>15}".format(formatMeanSd(*m)) for m in stats), seconds))
    if "finetune" not in methods or len(students) < 2:
        return 0
    finetune, default = summary[students[0][0]], summary[students[1][0]]  # default: the first method after finetune
    print("retained A1-A10 mAP50: finetune={:.3f} distill={:.3f}  new A11-A20: finetune={:.3f} distill={:.3f}".format(
        finetune[0][0], default[0][0], finetune[1][0], default[1][0]))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except MarsError as e:
        sys.stderr.write("bench/distill.py: error: {}\n".format(e))
        sys.exit(2)
