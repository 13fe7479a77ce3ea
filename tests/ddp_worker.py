"""Run by tests/test_ddp.py, under torchrun (2 ranks, gloo) or alone: trains the tiny set, saves this rank's weights
and the sample indexes it loaded per epoch (seen<rank>.json).

    python tests/ddp_worker.py DATA_ROOT OUT_DIR BATCH_SIZE RUN_ROOT
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from engine.trainer.base import BaseTrainer  # noqa: E402
from misc.dist import initDistributed, rank  # noqa: E402
from misc.misc import seedEverything  # noqa: E402
from model.base.yolomodel import YoloModel  # noqa: E402
from tests.conftest import makeConfig  # noqa: E402
from train.loss import DetectionLoss  # noqa: E402


def recordIndexes(trainer):
    """-> a list that fills with [epoch, index] for every training sample this rank loads (the DistributedSampler's
    share: tests/test_ddp.py checks the sharding and set_epoch)."""
    seen, epoch = [], [None]
    dataset = trainer.trainLoader.dataset

    class Recording(type(dataset)):
        def __getitem__(self, index):
            seen.append([epoch[0], int(index)])
            return super().__getitem__(index)
    dataset.__class__ = Recording
    seedEpoch = trainer.seedEpoch

    def recordEpoch(e):
        epoch[0] = e
        seedEpoch(e)
    trainer.seedEpoch = recordEpoch
    return seen


def main(dataRoot, outDir, batchSize, runRoot):
    torch.set_num_threads(1)
    subsetMap = {"train": os.path.join(dataRoot, "train.txt")}
    mcfg = makeConfig("nano", nc=2, inputShape=(64, 64), imageDir=os.path.join(dataRoot, "images"),
                      annotationDir=os.path.join(dataRoot, "annotations"), classList=["red", "blue"],
                      subsetMap=subsetMap, batchSize=batchSize, dcore=0, augment=False, epochValidation=False,
                      warmupEpochs=0.0, maxEpoch=3, deterministic=True, root=runRoot, user="u", cfgname="ddp")
    mcfg.device = initDistributed(mcfg.device)
    seedEverything(mcfg.seed)
    model = YoloModel(mcfg)
    torch.save(model.state_dict(), os.path.join(outDir, "initial{}.pt".format(rank())))
    trainer = BaseTrainer(mcfg, model, DetectionLoss)
    seen = recordIndexes(trainer)
    trainer.run()
    with open(os.path.join(outDir, "seen{}.json".format(rank())), "w") as f:
        json.dump(seen, f)
    torch.save(trainer.model.state_dict(), os.path.join(outDir, "rank{}.pt".format(rank())))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])
