"""Mars against Ultralytics on the same data, in one run: accuracy and the time of an epoch.

    python bench/versus.py [-root DIR] [--cfg demo.nano.full] [--size 160] [--epochs 12] [--batch 16] [--seed 0]
                           [--ultralytics-recipe default|mars|both]

Both train the same network from scratch (YOLOv8, the config's phase) on the config's train split with the same input
size, batch, epochs and seed, each with its own data pipeline, threads and validation:
  * Mars: `python mars.py -cfg <cfg>.size@S.epoch@E.batch@B.seed@N -train -nobuf` (its defaults: torch's threads,
    mcfg.dcore loader workers, validation mAP every mcfg.evalEveryEpochs epochs, best by fitness);
  * Ultralytics: `YOLO("yolov8<n|s|..>.yaml").train(...)` on a YOLO-format copy of the same split (made from Mars's
    parsed data set: class selection and VOC difficult as Mars trains them), validating on the config's validation
    split -- with its own defaults (`default`: optimizer auto, mosaic 1.0, its threads and workers on a CPU) and/or
    with Mars's recipe where it has the same knob (`mars`: optimizer, lr, final lr, momentum, weight decay, warm-up,
    cosine, mosaic, flip, HSV, and nbs = Mars's images per optimizer step: the batch when Mars steps every batch, else
    its nominal batch). Both count batches per epoch from the same images and batch, so both warm up for
    round(min(warmup epochs, epochs - 1) x batches) iterations; the header says both sides' warm-up and step images.
Then every best checkpoint is evaluated by the same code on the config's test split: Mars's Evaluator (letterbox,
NMS settings, VOC mAP50 and COCO mAP50-95 = pycocotools); Ultralytics' weights are converted exactly
(tools/convert.py, tested to give identical outputs). Per model it prints mAP50, mAP50-95, seconds per epoch (mean
over epochs 2..E, validation included; first epoch separately), the command's wall time and its peak memory (largest
process RSS). Mars's epochs are broken down into step, loader wait and validation (results.csv columns).
Last line, for scripts: `mAP50: mars=0.xxx ultralytics=0.xxx  epoch seconds: mars=... ultralytics=...` (the better
Ultralytics recipe by mAP50). Run it alone on the machine: anything beside it skews both sides.
"""
import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

if __package__ in (None, ""):  # run as a file (python bench/...py): Mars and bench/ import from the repository root
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from bench.common import ROOT_DIR, machineLoad, rootArgument, writeYoloCopy  # noqa: E402

os.environ.setdefault("YOLO_OFFLINE", "1")
ULTRALYTICS_DEFAULTS = {"warmup_epochs": 3.0, "nbs": 64}  # its cfg/default.yaml (8.4.190), for the header


ULTRALYTICS_TRAIN = """
import json, sys
from ultralytics import YOLO
args = json.loads(sys.argv[1])
YOLO(args.pop("model")).train(**args)
"""


def parseArgs(argv):
    parser = rootArgument(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--cfg", default="demo.nano.full", help="Mars config name (its data, phase, recipe)")
    parser.add_argument("--size", type=int, default=0, help="input size in pixels (0 = the config's)")
    parser.add_argument("--epochs", type=int, default=0, help="epochs (0 = the config's)")
    parser.add_argument("--batch", type=int, default=0, help="batch size (0 = the config's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ultralytics-recipe", choices=("default", "mars", "both"), default="default")
    parser.add_argument("--keep", action="store_true", help="keep the YOLO-format copy and Ultralytics' runs")
    return parser.parse_args(argv)


def measured(command, env=None):
    """Run command (a list) through a child that reports the peak RSS of its children -> (exit code, wall seconds,
    peak MiB). The wrapper keeps each command's peak apart from the other commands'."""
    probe = ("import resource, subprocess, sys, json; code = subprocess.call(sys.argv[1:]); "
             "print('__peak__' + json.dumps(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); sys.exit(code)")
    started = time.time()
    result = subprocess.run([sys.executable, "-c", probe] + command, env=env, stdout=subprocess.PIPE, text=True)
    seconds = time.time() - started
    peak = 0.0
    for line in result.stdout.splitlines():
        if line.startswith("__peak__"):
            peak = json.loads(line[len("__peak__"):]) / 1024  # ru_maxrss is in KiB on Linux
        else:
            print(line)
    return result.returncode, seconds, peak


def marsRun(args, cfgname, root):
    """Train Mars with its command line; -> (mcfg, wall seconds, peak MiB)."""
    from cfgops import makeConfig
    from mars import userName
    code, seconds, peak = measured([sys.executable, os.path.join(ROOT_DIR, "mars.py"), "-cfg", cfgname, "-root", root,
                                    "-train", "-nobuf"], env=dict(os.environ, TQDM_DISABLE="1"))
    if code != 0:
        raise SystemExit("Mars training failed (exit {})".format(code))
    return makeConfig(cfgname, root, userName()), seconds, peak


def ultralyticsArgs(mcfg, args, data, project, recipe, trainImages=None):
    """Ultralytics train() arguments: the shared settings, plus Mars's recipe where Ultralytics has the knob (its
    warm-up: Mars's iterations for trainImages training images, mcfg.warmupMinIterations included)."""
    from config.mconfig import PHASE_LETTERS
    train = dict(model="yolov8{}.yaml".format(PHASE_LETTERS[mcfg.phase]), data=data, epochs=mcfg.maxEpoch,
                 imgsz=mcfg.inputShape[0], batch=mcfg.batchSize, seed=mcfg.seed, device="cpu", plots=False,
                 project=project, name=recipe, exist_ok=True, pretrained=False, amp=False, verbose=False, val=True)
    if recipe == "mars":
        from train.sched import nominalBatchSize
        nbs = nominalBatchSize(mcfg) or mcfg.batchSize  # accumulate max(round(nbs / batch), 1): Mars's
        train.update(optimizer="SGD" if mcfg.optimizerType.upper() == "SGD" else "AdamW", lr0=mcfg.baseLearningRate,
                     lrf=mcfg.minLearningRate / mcfg.baseLearningRate, momentum=mcfg.optimizerMomentum, nbs=nbs,
                     weight_decay=mcfg.optimizerWeightDecay * nbs / 64,  # it scales by batch x accumulate / nbs
                     warmup_epochs=marsWarmupEpochs(mcfg, trainImages) if trainImages else mcfg.warmupEpochs,
                     warmup_bias_lr=mcfg.warmupBiasLearningRate,
                     cos_lr=mcfg.schedulerType.upper() == "COS", mosaic=mcfg.mosaic,
                     close_mosaic=mcfg.closeMosaicEpochs, fliplr=mcfg.augFlip, hsv_h=mcfg.augHsv[0],
                     hsv_s=mcfg.augHsv[1], hsv_v=mcfg.augHsv[2], scale=(mcfg.augScale[1] - mcfg.augScale[0]) / 2)
    return train


def writeYoloData(mcfg, folder):
    """The YOLO-format copy of the train and validation splits and its data.yaml in folder -> (data.yaml path, number
    of training images)."""
    data, lists, counts = os.path.join(folder, "data.yaml"), {}, {}
    for key, split in (("train", mcfg.trainSplitName), ("val", mcfg.validationSplitName)):
        paths = writeYoloCopy(mcfg, split, os.path.join(folder, key), train=key == "train")
        lists[key], counts[key] = os.path.join(folder, key + ".txt"), len(paths)
        with open(lists[key], "w") as f:
            f.write("\n".join(paths) + "\n")
    with open(data, "w") as f:
        f.write("train: {}\nval: {}\nnames:\n{}".format(lists["train"], lists["val"], "".join(
            "  {}: {}\n".format(i, name) for i, name in enumerate(mcfg.classList))))
    return data, counts["train"]


def marsWarmupEpochs(mcfg, trainImages):
    """Ultralytics' warmup_epochs that give it Mars's warm-up iterations (train/sched.py, mcfg.warmupMinIterations
    included) over trainImages images: Mars's iterations / batches per epoch (8.4.190 rounds that product back)."""
    from train.sched import LearningRateSchedule
    batches = -(-trainImages // mcfg.batchSize)
    return LearningRateSchedule(mcfg, batches).warmup / batches


def ultralyticsWarmup(warmupEpochs, epochs, batches):
    """Ultralytics 8.4.190's warm-up iterations (BaseTrainer._get_warmup_iterations): all but the last epoch at most,
    no floor."""
    warmupEpochs = min(warmupEpochs, max(epochs - 1, 0))
    return round(warmupEpochs * batches) if warmupEpochs > 0 else 0


def recipeLines(mcfg, trainImages, recipes):
    """Header lines: batches per epoch, warm-up iterations and images per optimizer step of Mars (train/sched.py) and
    of Ultralytics under each recipe (8.4.190's rules: BaseTrainer._get_warmup_iterations, accumulate = max(round(nbs /
    batch), 1)), for trainImages training images on one process."""
    from train.sched import LearningRateSchedule
    ours = -(-trainImages // mcfg.batchSize)
    schedule = LearningRateSchedule(mcfg, ours)
    batches, warmups, steps = ["mars {}".format(ours)], ["mars {}".format(schedule.warmup)], ["mars {}".format(
        schedule.stepImages)]
    for recipe in recipes:
        train = dict(ULTRALYTICS_DEFAULTS, **ultralyticsArgs(mcfg, None, "", "", recipe, trainImages))
        theirs = -(-trainImages // train["batch"])
        batches.append("ultralytics {} {}".format(recipe, theirs))
        warmups.append("ultralytics {} {}".format(recipe, ultralyticsWarmup(train["warmup_epochs"], train["epochs"],
                                                                            theirs)))
        steps.append("ultralytics {} {}".format(recipe, train["batch"] * max(round(train["nbs"] / train["batch"]), 1)))
    return ["{} training images; batches per epoch: {}".format(trainImages, ", ".join(batches)),
            "warm-up iterations: " + ", ".join(warmups), "images per optimizer step: " + ", ".join(steps)]


def ultralyticsRun(mcfg, args, folder, data, recipe, trainImages):
    """Train Ultralytics on the YOLO copy of the data (writeYoloData); -> (best.pt path, results.csv path, wall
    seconds, peak MiB)."""
    project = os.path.join(folder, "runs")
    train = ultralyticsArgs(mcfg, args, data, project, recipe, trainImages)
    env = dict(os.environ, YOLO_OFFLINE="1", TQDM_DISABLE="1")
    code, seconds, peak = measured([sys.executable, "-c", ULTRALYTICS_TRAIN, json.dumps(train)], env=env)
    if code != 0:
        raise SystemExit("Ultralytics training failed (exit {})".format(code))
    run = os.path.join(project, recipe)
    return os.path.join(run, "weights", "best.pt"), os.path.join(run, "results.csv"), seconds, peak


def readCsv(path):
    with open(path) as f:
        return [{k.strip(): v.strip() for k, v in row.items()} for row in csv.DictReader(f)]


def epochSeconds(perEpoch):
    """[seconds of epoch 1, 2, ...] -> (mean over epochs 2.., first epoch)."""
    rest = perEpoch[1:] or perEpoch
    return sum(rest) / len(rest), perEpoch[0]


def evaluateMars(mcfg, stateDict):
    """Test-split result of a Mars state dict through Mars's Evaluator."""
    import torch
    from engine.evaluator import Evaluator
    from model.base.yolomodel import YoloModel
    mcfg = mcfg.copy(pretrainedBackboneUrl=None)
    model = YoloModel(mcfg)
    model.load_state_dict(stateDict)
    torch.set_num_threads(os.cpu_count())
    return Evaluator(mcfg).evaluate(model.eval(), mcfg.testSplitName)


def main(argv=None):
    args = parseArgs(argv)
    from cfgops import makeConfig
    from mars import userName
    import torch

    root = os.path.abspath(os.path.expanduser(args.root))
    base = makeConfig(args.cfg, root, "bench")  # the demo data is generated here, before any timing
    tags = ["size@{}".format(args.size or base.inputShape[0]), "epoch@{}".format(args.epochs or base.maxEpoch),
            "batch@{}".format(args.batch or base.batchSize), "seed@{}".format(args.seed)]
    cfgname = ".".join([args.cfg] + tags)
    print("bench/versus.py | {} | torch {} | {}".format(cfgname, torch.__version__, machineLoad()))
    recipes = ("default", "mars") if args.ultralytics_recipe == "both" else (args.ultralytics_recipe,)
    mcfg, folder = makeConfig(cfgname, root, userName()), tempfile.mkdtemp(prefix="mars-versus-")
    try:
        data, trainImages = writeYoloData(mcfg, folder)  # before any timing
        print("\n".join(recipeLines(mcfg, trainImages, recipes)))
        rows, breakdown = runAll(args, cfgname, root, folder, data, recipes, trainImages)
    finally:
        if args.keep:
            print("kept {}".format(folder))
        else:
            shutil.rmtree(folder, ignore_errors=True)
    print("\n{} on the test split ({}), same evaluator for every row; epoch seconds include validation".format(
        cfgname, mcfg.testSplitName))
    print("{:<12} {:<8} {:>7} {:>9} {:>9} {:>9} {:>8} {:>9}".format(
        "model", "recipe", "mAP50", "mAP50-95", "epoch s", "1st ep s", "wall s", "peak MiB"))
    for name, recipe, result, mean, first, wall, peak in rows:
        print("{:<12} {:<8} {:>7.3f} {:>9.3f} {:>9.1f} {:>9.1f} {:>8.0f} {:>9.0f}".format(
            name, recipe, result["mAP50"], result["mAP5095"], mean, first, wall, peak))
    print("mars epoch (epochs 2..): step {trainSeconds:.1f} s, of which waiting for the loader {dataSeconds:.1f} s; "
          "validation {validationSeconds:.1f} s".format(**breakdown))
    ours = rows[0]
    theirs = max(rows[1:], key=lambda r: r[2]["mAP50"])
    print("mAP50: mars={:.3f} ultralytics={:.3f}  mAP50-95: mars={:.3f} ultralytics={:.3f}  epoch seconds: mars={:.1f} "
          "ultralytics={:.1f}".format(ours[2]["mAP50"], theirs[2]["mAP50"], ours[2]["mAP5095"], theirs[2]["mAP5095"],
                                      ours[3], theirs[3]))
    return 0


def runAll(args, cfgname, root, folder, data, recipes, trainImages):
    """Train and evaluate Mars, then Ultralytics under each recipe -> (rows of the table, Mars's epoch breakdown)."""
    from engine.checkpoint import BEST_FILE
    from tools.convert import convertStateDict, loadSource
    import torch
    rows = []
    mcfg, wall, peak = marsRun(args, cfgname, root)
    history = readCsv(os.path.join(mcfg.runDir(), "results.csv"))
    perEpoch = [float(r["seconds"]) for r in history]
    mean, first = epochSeconds(perEpoch)
    breakdown = {k: sum(float(r[k] or 0) for r in history[1:] or history) / len(history[1:] or history)
                 for k in ("trainSeconds", "dataSeconds", "validationSeconds")}
    state = torch.load(os.path.join(mcfg.cacheDir(), BEST_FILE), map_location="cpu", weights_only=True)
    rows.append(("mars", "mars", evaluateMars(mcfg, state), mean, first, wall, peak))
    for recipe in recipes:
        best, results, wall, peak = ultralyticsRun(mcfg, args, folder, data, recipe, trainImages)
        times = [float(r["time"]) for r in readCsv(results)]  # cumulative seconds since its training started
        mean, first = epochSeconds([b - a for a, b in zip([0.0] + times[:-1], times)])
        converted, phase, nc, _ = convertStateDict(loadSource(best))
        assert (phase, nc) == (mcfg.phase, mcfg.nc), (phase, nc)
        rows.append(("ultralytics", recipe, evaluateMars(mcfg, converted), mean, first, wall, peak))
    return rows, breakdown


if __name__ == "__main__":
    sys.exit(main())
