"""Run by tests/test_ddp.py, under torchrun (2 ranks, gloo) or alone: trains the tiny set, saves this rank's weights.

    python tests/ddp_worker.py DATA_ROOT OUT_DIR BATCH_SIZE RUN_ROOT
"""
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
    trainer.run()
    torch.save(trainer.model.state_dict(), os.path.join(outDir, "rank{}.pt".format(rank())))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])
