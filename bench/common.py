"""Helpers shared by the benchmarks: the speed benchmarks (bench/speed/*.py, run as python -m bench.speed.<name>)
and the studies (bench/versus.py, bench/distill.py). The library never imports this, and no benchmark imports
another (what two of them share lives here).

Every speed benchmark measures Mars and its reference in the same process, with the same torch thread count, alternating
the two (ABBA order per round) after a warm-up, and reports medians and the ratio. It prints the machine's load so a
reader can tell a measurement taken on a busy CPU.
"""
import argparse
import contextlib
import io
import logging
import os
import statistics
import time

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_VERBOSE", "False")
ROOT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import torch

DEFAULT_THREADS = torch.get_num_threads()  # before Ultralytics' import sets OMP_NUM_THREADS=1 for later pools


def rootArgument(parser):
    """-root, as mars.py has it: the run root outside the code folder (demo data in ROOT/demo-data)."""
    parser.add_argument("-root", default=os.environ.get("MARS_ROOT", os.path.join("~", "mars-runs")),
                        help="run root outside the code folder; demo data goes to ROOT/demo-data (default: $MARS_ROOT "
                             "or ~/mars-runs)")
    return parser


def baseParser(doc, repeats, warmup):
    """argparse parser with the options every speed benchmark takes: -root, --threads, --repeats, --warmup."""
    parser = rootArgument(argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter))
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads for both sides (0 = torch's "
                                                                "default, {} here)".format(DEFAULT_THREADS))
    parser.add_argument("--repeats", type=int, default=repeats, help="measured rounds per side (median reported)")
    parser.add_argument("--warmup", type=int, default=warmup, help="unmeasured rounds per side first")
    return parser


def setup(args, title):
    """Thread count, quiet Ultralytics, and a header line with the machine's state."""
    quietly(__import__, "ultralytics")  # its import sets OMP_NUM_THREADS; the thread count is set after it
    logging.getLogger("ultralytics").setLevel(logging.ERROR)
    torch.set_num_threads(args.threads or DEFAULT_THREADS)
    print("{} | torch {} | {} threads | {}".format(title, torch.__version__, torch.get_num_threads(), machineLoad()))


def machineLoad():
    """'load 1/5/15 min a b c, busy: pid name %cpu ...' (other processes above 20% CPU), for the record."""
    load = "load {:.2f} {:.2f} {:.2f} on {} cores".format(*os.getloadavg(), os.cpu_count())
    busy = []
    try:
        import subprocess
        out = subprocess.run(["ps", "-eo", "pid,pcpu,comm", "--sort=-pcpu"], capture_output=True, text=True, timeout=5).stdout
        for line in out.splitlines()[1:6]:
            pid, cpu, name = line.split(None, 2)
            if float(cpu) >= 20 and int(pid) != os.getpid():
                busy.append("{}({}%)".format(name, cpu))
    except (OSError, ValueError):
        pass
    return load + (", busy: " + " ".join(busy) if busy else "")


def quietly(fn, *a, **k):
    """fn(*a, **k) with stdout swallowed (pycocotools and Ultralytics print progress)."""
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*a, **k)


def alternate(fns, repeats, warmup):
    """Run each callable of fns warmup times, then repeats rounds in ABBA order (A B, B A, ...).

    Returns (wall, cpu): per callable, the measured wall-clock seconds and this process's CPU seconds (repeats each).
    CPU time hardly moves when other jobs share the cores and torch runs one thread, so it is the steadier figure
    on a busy machine; it misses work done in other processes (data loader workers). A callable may return its own
    wall-clock duration in seconds (a float) to exclude setup it does inside.
    """
    def timed(fn):
        wallStart, cpuStart = time.perf_counter(), time.process_time()
        result = fn()
        wall, cpu = time.perf_counter() - wallStart, time.process_time() - cpuStart
        return (result if isinstance(result, float) else wall), cpu

    for _ in range(warmup):
        for fn in fns:
            timed(fn)
    wall, cpu = [[] for _ in fns], [[] for _ in fns]
    for r in range(repeats):
        order = range(len(fns)) if r % 2 == 0 else reversed(range(len(fns)))
        for i in order:
            w, c = timed(fns[i])
            wall[i].append(w)
            cpu[i].append(c)
    return wall, cpu


def median(values):
    return statistics.median(values)


def printTable(title, rows, unit, higherIsBetter):
    """rows: [(label, ours, reference)] medians -> table with the ratio; ratio > 1 means Mars is better."""
    print()
    print(title)
    print("{:<34}{:>14}{:>14}{:>9}".format("", "Mars", "reference", "ratio"))
    for label, ours, ref in rows:
        ratio = ours / ref if higherIsBetter else ref / ours
        print("{:<34}{:>14}{:>14}{:>8.2f}x".format(label, fmt(ours, unit), fmt(ref, unit), ratio))
    print("ratio = {} (> 1: Mars faster)".format("Mars / reference" if higherIsBetter else "reference time / Mars time"))


def fmt(value, unit):
    if unit == "ms":
        return "{:.2f} ms".format(value * 1000)
    return "{:.1f} {}".format(value, unit)


def modelConfig(nc, inputShape, phase="nano"):
    """A finalized ModelConfig for building a model and a loss only (no data, no run root)."""
    from config.mconfig import ModelConfig
    mcfg = ModelConfig()
    mcfg.phase, mcfg.nc, mcfg.inputShape, mcfg.device = phase, nc, tuple(inputShape), "cpu"
    return mcfg.finalize()


def demoConfig(root, inputShape, batchSize, dcore=0, **fields):
    """A finalized demo.nano config on the built-in demo data under root/demo-data (generated on first use)."""
    from cfgops import makeConfig
    mcfg = quietly(makeConfig, "demo.nano", root, "bench")
    return mcfg.copy(inputShape=tuple(inputShape), batchSize=batchSize, dcore=dcore, epochValidation=False, **fields)


def writeYoloCopy(mcfg, splitName, folder, train=True):
    """YOLO-format copy of a VOC split for Ultralytics, made from Mars's own parsed data set (so both train on the same
    targets: class selection, clipping, VOC difficult left out as Ultralytics' VOC conversion does):
    folder/images/<name> (symlinks) and folder/labels/<stem>.txt (class cx cy w h, normalised). Returns the list of
    image paths in folder/images."""
    from dl.vocdataset import VocDataset
    dataset = VocDataset(mcfg, splitName, train=train)
    os.makedirs(os.path.join(folder, "images"), exist_ok=True)
    os.makedirs(os.path.join(folder, "labels"), exist_ok=True)
    paths = []
    for imagePath, (height, width), classes, boxes, difficult in zip(dataset.imagePaths, dataset.origShapes,
                                                                     dataset.classIndexes, dataset.boxesXyxy,
                                                                     dataset.difficult):
        name = os.path.basename(imagePath)
        lines = ["{} {:.6f} {:.6f} {:.6f} {:.6f}".format(int(c), (x0 + x1) / 2 / width, (y0 + y1) / 2 / height,
                                                         (x1 - x0) / width, (y1 - y0) / height)
                 for c, (x0, y0, x1, y1) in zip(classes[~difficult], boxes[~difficult])]
        link = os.path.join(folder, "images", name)
        if not os.path.lexists(link):
            os.symlink(os.path.abspath(imagePath), link)
        with open(os.path.join(folder, "labels", os.path.splitext(name)[0] + ".txt"), "w") as f:
            f.write("\n".join(lines) + ("\n" if lines else ""))
        paths.append(link)
    return paths


def referenceModel(nc):
    """Ultralytics' YOLOv8n DetectionModel with default hyperparameters (model.args) attached."""
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel
    model = quietly(DetectionModel, "yolov8n.yaml", nc=nc, verbose=False)
    model.args = get_cfg()
    return model


def marsTargetsToReference(targets):
    """Mars collate targets (N, 6) (imageIndex, classIndex, x0, y0, x1, y1 normalised) -> Ultralytics batch entries
    batch_idx (N,), cls (N, 1), bboxes (N, 4) normalised xywh."""
    xyxy = targets[:, 2:6]
    xywh = torch.cat([(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]], 1)
    return {"batch_idx": targets[:, 0], "cls": targets[:, 1:2], "bboxes": xywh}


def drawBatches(mcfg, count):
    """count batches (images uint8 (B, 3, H, W), targets (N, 6)) from Mars' training data loader."""
    from dl.vocdataset import makeDataLoader
    batches = []
    while len(batches) < count:
        for images, targets, _ in makeDataLoader(mcfg, mcfg.trainSplitName, train=True):
            batches.append((images, targets))
            if len(batches) == count:
                break
    return batches


def marsStepper(mcfg, ampDtype=None):
    """A Mars trainer's trainStep as a function of (images, targets).

    ampDtype: the autocast dtype of the step (torch.float16 or torch.bfloat16; None: fp32). It replaces the one
    Mars' Trainer picks from mcfg.amp (bf16 where the GPU has it natively, else fp16), with a grad scaler for fp16 only as
    the Trainer has, so that a benchmark can give Mars and its reference the same precision."""
    from engine.trainer import makeTrainer
    from model import makeModel
    trainer = makeTrainer(mcfg, makeModel(mcfg))
    trainer.ampDtype = ampDtype
    trainer.scaler = torch.amp.GradScaler("cuda", enabled=ampDtype == torch.float16)
    trainer.model.unfreezeBackbone()
    if hasattr(trainer, "wrapModel"):  # builds the forward callable (DDP / compile wrappers) as runEpoch does
        trainer.wrapModel(False)
    trainer.model.train()
    total = torch.zeros(3, device=trainer.device)
    state = {"step": 0}

    def step(images, targets):
        trainer.trainStep(state["step"], images, targets, total)
        state["step"] += 1
    return step


def referenceStepper(batchSize, nc, device="cpu", ampDtype=None):
    """Ultralytics' per-batch training work (engine/trainer.py _do_train) as a function of (images, targets).

    ampDtype: the autocast dtype (None: fp32). torch.float16 with a grad scaler is Ultralytics' own AMP (its default
    on CUDA); torch.bfloat16 runs without a scaler (as Mars does; Ultralytics itself has no bf16 mode)."""
    from ultralytics.engine.trainer import BaseTrainer
    from ultralytics.utils.torch_utils import ModelEMA
    device = torch.device(device)
    model = referenceModel(nc).to(device)
    model.train()
    args = model.args
    optimizer = BaseTrainer.build_optimizer(None, model, name="SGD", lr=args.lr0, momentum=args.momentum,
                                            decay=args.weight_decay * batchSize / args.nbs)
    scaler = torch.amp.GradScaler(device.type, enabled=ampDtype == torch.float16)
    ema = ModelEMA(model)

    def step(images, targets):
        batch = {"img": images, **marsTargetsToReference(targets)}
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}  # DetectionTrainer.preprocess_batch
        batch["img"] = batch["img"].float() / 255
        with torch.autocast(device.type, dtype=ampDtype, enabled=ampDtype is not None):
            loss, _ = model.loss(batch)
        scaler.scale(loss.sum()).backward()
        scaler.unscale_(optimizer)  # BaseTrainer.optimizer_step
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=10.0)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
        ema.update(model)
    return step
