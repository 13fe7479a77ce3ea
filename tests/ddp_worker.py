"""Run by tests/test_ddp.py, under torchrun (gloo) or alone: trains a tiny set, saves this rank's weights and what it
loaded (seen<rank>.json: [epoch, image index, epoch position, image checksum] per training sample).

    python tests/ddp_worker.py DATA_ROOT OUT_DIR BATCH_SIZE RUN_ROOT [--augment] [--epochs N]
                               [--slow-validation SECONDS] [--timeout SECONDS]

--slow-validation: rank 0's evaluator sleeps that long after epoch 1 (a long validation); --timeout: the process
group's collective timeout (torch's default otherwise). A run stopped by MARS_TEST_FAULT=SIGTERM@N writes its files
too and exits 0 with "interrupted" in interrupted<rank>.txt.
"""
import argparse
import json
import os
import sys
import time
from datetime import timedelta

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from engine.signals import TrainingInterrupted  # noqa: E402
from engine.trainer import Trainer  # noqa: E402
from misc.dist import initDistributed, rank  # noqa: E402
from misc.seed import seedEverything  # noqa: E402
from model.base.yolomodel import YoloModel  # noqa: E402
from tests.helpers import makeConfig  # noqa: E402
from train.loss import DetectionLoss  # noqa: E402


def recordSamples(trainer):
    """-> a list that fills with [epoch, index, position, checksum] for every training sample this rank loads."""
    seen = []
    dataset = trainer.trainLoader.dataset

    class Recording(type(dataset)):
        def __getitem__(self, item):
            sample = super().__getitem__(item)
            index, (_, epoch, position) = item
            seen.append([epoch, index, position, int(sample[0].long().sum()) + int((sample[1] * 1000).long().sum())])
            return sample
    dataset.__class__ = Recording
    return seen


class SlowEvaluator(object):
    """An evaluator whose first evaluation takes `seconds` (rank 0 validating for long); fixed numbers."""

    def __init__(self, seconds):
        self.seconds, self.calls = seconds, 0

    def evaluate(self, model, splitName):
        if self.calls == 0:
            time.sleep(self.seconds)
        self.calls += 1
        return {"mAP50": 0.5, "mAP5095": 0.25, "mAP50Coco": 0.5}

    def paintedImages(self, model, splitName, count):
        return []  # the TensorBoard pictures: none here


def main():
    parser = argparse.ArgumentParser()
    for name in ("dataRoot", "outDir", "batchSize", "runRoot"):
        parser.add_argument(name)
    parser.add_argument("--augment", action="store_true")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--slow-validation", type=float, default=0.0)
    parser.add_argument("--timeout", type=float, default=0.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.timeout and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("gloo", timeout=timedelta(seconds=args.timeout))
    subsetMap = {"train": os.path.join(args.dataRoot, "train.txt")}
    mcfg = makeConfig("nano", nc=2, inputShape=(64, 64), imageDir=os.path.join(args.dataRoot, "images"),
                      annotationDir=os.path.join(args.dataRoot, "annotations"), classList=["red", "blue"],
                      subsetMap=subsetMap, batchSize=int(args.batchSize), dcore=0, augment=args.augment,
                      mosaic=1.0 if args.augment else 0.0, closeMosaicEpochs=1, epochValidation=False,
                      warmupEpochs=0.0, maxEpoch=args.epochs, deterministic=True, root=args.runRoot, user="u",
                      cfgname="ddp", evalEveryEpochs=1 if args.slow_validation else 0)
    mcfg = mcfg.copy(device=initDistributed(mcfg.device))
    seedEverything(mcfg.seed)
    model = YoloModel(mcfg)
    torch.save(model.state_dict(), os.path.join(args.outDir, "initial{}.pt".format(rank())))
    evaluator = SlowEvaluator(args.slow_validation) if args.slow_validation else None
    trainer = Trainer(mcfg, model, DetectionLoss, evaluator)
    seen = recordSamples(trainer)
    try:
        trainer.run()
    except TrainingInterrupted:
        with open(os.path.join(args.outDir, "interrupted{}.txt".format(rank())), "w") as f:
            f.write("interrupted")
    with open(os.path.join(args.outDir, "seen{}.json".format(rank())), "w") as f:
        json.dump(seen, f)
    torch.save(trainer.model.state_dict(), os.path.join(args.outDir, "rank{}.pt".format(rank())))


if __name__ == "__main__":
    main()
