"""Benchmark of stage 3: does distillation keep the old classes better than plain fine-tuning?

    python bench/distill.py [-root DIR] [--size 128] [--teacher-epochs 12] [--student-epochs 20] [--threads 1]

On the built-in demo data (generated under the root on first use):
  1. teacher: demo.nano.teacher -- all 20 class outputs, labels of A1..A10 only, the 600-image train split;
  2. from the teacher's best weights, on the 120-image `small` split with all 20 classes and the same epochs:
     (a) finetune: plain DetectionLoss (demo.nano.distillation with modelName "base", no teacher),
     (b) distill <method>: demo.nano.distillation (CWD + response) and demo.nano.distillation.ld (LD + response).
Every model is evaluated on the test split with the ground truth of all 20 classes; the table shows VOC mAP50
(all-point) over A1..A10, A11..A20 and all classes. The settings are the cfgops files' (weights, temperature,
freeze epochs, learning rate), except the input size and the epochs given here. Runs land in
ROOT/bench-distill-<size>px/; a finished teacher is reused (--nobuf trains it again), students always start over.
The last line, `retained A1-A10 mAP50: finetune=0.xxx distill=0.xxx  new A11-A20: finetune=0.xxx distill=0.xxx`,
compares plain fine-tuning with the first method of --methods (the default, cwd), for scripts. With the defaults and --threads 1: about 11 CPU minutes (measured table in README.md).
"""
import argparse
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from engine.evaluator import Evaluator  # noqa: E402
from factory.configfactory import makeConfig  # noqa: E402
from factory.modelfactory import makeModel  # noqa: E402
from factory.trainerfactory import makeTrainer  # noqa: E402
from misc.misc import MarsError  # noqa: E402
from model.base.yolomodel import YoloModel  # noqa: E402

OLD, NEW = list(range(10)), list(range(10, 20))  # A1..A10 (the teacher's classes), A11..A20
METHOD_CONFIGS = {"cwd": "demo.nano.distillation", "ld": "demo.nano.distillation.ld"}  # mcfg.distilMethod -> config


def parseArgs(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-root", default=os.environ.get("MARS_ROOT", os.path.join("~", "mars-runs")),
                        help="run root outside the code folder (default: $MARS_ROOT or ~/mars-runs)")
    parser.add_argument("--size", type=int, default=128, help="input size, pixels (multiple of 32)")
    parser.add_argument("--teacher-epochs", type=int, default=12)
    parser.add_argument("--student-epochs", type=int, default=20, help="epochs of every student (a) and (b)")
    parser.add_argument("--methods", default=",".join(METHOD_CONFIGS), help="distillation methods, comma-separated")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (0 = torch's default; 1 is faster on a busy machine)")
    parser.add_argument("--nobuf", action="store_true", help="train the teacher again even if it is cached")
    return parser.parse_args(argv)


def benchConfig(cfgname, args, user, runName, **fields):
    """The cfgops config cfgname with the bench's input size, run name and fields."""
    mcfg = makeConfig(cfgname, args.root, user)
    mcfg.cfgname, mcfg.inputShape = runName, (args.size, args.size)
    for knob, value in fields.items():
        setattr(mcfg, knob, value)
    return mcfg.finalize()


def trainRun(mcfg):
    """Train (the trainer resumes or skips a finished run unless mcfg.nobuf) -> seconds spent."""
    started = time.time()
    makeTrainer(mcfg, makeModel(mcfg)).run()
    return time.time() - started


def evaluateRun(mcfg):
    """VOC mAP50 of the run's best weights on the test split, ground truth of all 20 classes ->
    (A1..A10, A11..A20, all)."""
    mcfg.testSelectedClasses = None
    model = YoloModel(mcfg).load(os.path.join(mcfg.cacheDir(), "best_weights.pth"))  # a student alone, no teacher
    ap = Evaluator(mcfg).evaluate(model, mcfg.testSplitName)["ap50Voc"]

    def mean(indexes):
        values = [float(ap[i]) for i in indexes if not math.isnan(float(ap[i]))]
        return sum(values) / max(1, len(values))
    return mean(OLD), mean(NEW), mean(OLD + NEW)


def main(argv=None):
    args = parseArgs(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    methods = args.methods.split(",")
    unknown = [m for m in methods if m not in METHOD_CONFIGS]
    if unknown:
        raise MarsError("--methods: {} unknown; methods: {}".format(unknown, ", ".join(METHOD_CONFIGS)))
    user = "bench-distill-{}px".format(args.size)
    rows = []
    teacher = benchConfig("demo.nano.teacher", args, user, "demo.nano.teacher", maxEpoch=args.teacher_epochs,
                          nobuf=args.nobuf)
    seconds = trainRun(teacher)
    rows.append(("teacher (A1-A10 labels)", seconds) + evaluateRun(teacher))
    finetune = benchConfig("demo.nano.distillation", args, user, "demo.nano.finetune", maxEpoch=args.student_epochs,
                           modelName="base", teacherModelFile=None, nobuf=True)
    seconds = trainRun(finetune)
    rows.append(("(a) finetune", seconds) + evaluateRun(finetune))
    for method in methods:
        student = benchConfig(METHOD_CONFIGS[method], args, user, "demo.nano.distillation-" + method,
                              maxEpoch=args.student_epochs, nobuf=True)
        seconds = trainRun(student)
        rows.append(("(b) distill " + method, seconds) + evaluateRun(student))

    print()
    print("demo data, nano, {0}x{0} px; teacher {1} epochs on train (A1-A10 labels); students {2} epochs on small "
          "(all 20 classes); test split, VOC mAP50".format(args.size, args.teacher_epochs, args.student_epochs))
    print("{:<26}{:>9}{:>9}{:>9}{:>10}".format("model", "A1-A10", "A11-A20", "all", "train s"))
    for name, seconds, old, new, both in rows:
        print("{:<26}{:>9.3f}{:>9.3f}{:>9.3f}{:>10.0f}".format(name, old, new, both, seconds))
    default = rows[2]  # the first method given (the default configuration, cwd, unless --methods says otherwise)
    print("retained A1-A10 mAP50: finetune={:.3f} distill={:.3f}  new A11-A20: finetune={:.3f} distill={:.3f}".format(
        rows[1][2], default[2], rows[1][3], default[3]))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except MarsError as e:
        sys.stderr.write("bench/distill.py: error: {}\n".format(e))
        sys.exit(2)
