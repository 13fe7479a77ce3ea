"""TensorBoard curves, when the optional `tensorboard` package is installed: <run>/tensorboard/ gets, per epoch, the
numbers of the results.csv row (losses, learning rate, mAP, time split), the epoch's first training batch as
engine/preview.py draws it, and, after an epoch whose mAP is measured, the first VALIDATION_IMAGES validation images
painted with the EMA model's detections as -eval paints them (ground truth purple, TP green, FP yellow). Without tensorboard nothing is imported or written, and one line says so at the start.

Only rank 0 writes (the trainer makes a BoardWriter there only). The step is the 1-based epoch, as in results.csv.
"""
import os

import cv2

from engine.preview import batchGrid
from misc.log import log, warn

BOARD_DIR = "tensorboard"  # under mcfg.runDir()
BATCH_TAG = "images/train_batch"
BATCH_SIDE = 960  # pixels: the batch grid is scaled down to this side at most (the event file keeps each epoch's)
VALIDATION_IMAGES = 4  # the first validation images, painted with the EMA model's detections after measured epochs
VALIDATION_SIDE = 640  # pixels: each painted validation image is scaled down to this side at most
TAGS = {  # results.csv column (the trainer's row) -> scalar tag; columns not listed (epoch, frozen) are not written
    "trainBox": "loss/trainBox", "trainCls": "loss/trainCls", "trainDfl": "loss/trainDfl",
    "valBox": "loss/valBox", "valCls": "loss/valCls", "valDfl": "loss/valDfl",
    "lr": "lr/lr",
    "mAP50": "metrics/mAP50", "mAP5095": "metrics/mAP50-95",
    "fitness": "metrics/fitness",  # = mAP50-95, the best checkpoint's measure (engine/trainer.py fitness)
    "trainSeconds": "time/trainSeconds", "dataSeconds": "time/dataSeconds",
    "validationSeconds": "time/validationSeconds", "seconds": "time/seconds",
}


def summaryWriterClass():
    """torch.utils.tensorboard.SummaryWriter, or None when the tensorboard package cannot be imported. tensorboard is
    imported first, so that without it torch.utils.tensorboard is never imported either."""
    try:
        import tensorboard  # noqa: F401  (the optional extra: pip install tensorboard)
    except ImportError:
        return None
    from torch.utils.tensorboard import SummaryWriter
    return SummaryWriter


def makeBoardWriter(mcfg, startEpoch=0):
    """A BoardWriter on <run>/tensorboard/, or None (one log line) when tensorboard is not installed. startEpoch: the
    epochs already done (a resume); events of later epochs left by an earlier run there are dropped (purge_step)."""
    writerClass = summaryWriterClass()
    if writerClass is None:
        log("tensorboard is not installed: no TensorBoard curves (pip install tensorboard)")
        return None
    return BoardWriter(writerClass, os.path.join(mcfg.runDir(), BOARD_DIR), mcfg.classList, startEpoch)


class BoardWriter(object):
    """Writes the trainer's epoch rows and the epoch's first training batch; flushed after every epoch."""

    def __init__(self, writerClass, path, classList, startEpoch=0):
        self.path, self.classList, self.batchImage, self.validationImages = path, classList, None, []
        self.writer = writerClass(log_dir=path, purge_step=startEpoch + 1)
        log("tensorboard: {}".format(path))

    def keepBatch(self, images, targets):
        """The epoch's first training batch (uint8 (B, 3, H, W) RGB, Mars collate targets), drawn by batchGrid now and
        written with the epoch's row."""
        grid = batchGrid(images, targets, self.classList, maxSide=BATCH_SIDE)
        self.batchImage = cv2.cvtColor(grid, cv2.COLOR_BGR2RGB)

    def keepValidation(self, painted):
        """painted: [(stem, BGR image)] (Evaluator.paintedImages), written with the epoch's row as images/validation/<stem>."""
        self.validationImages = []
        for stem, image in painted:
            scale = min(1.0, VALIDATION_SIDE / max(image.shape[:2]))
            if scale < 1.0:
                image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            self.validationImages.append((stem, cv2.cvtColor(image, cv2.COLOR_BGR2RGB)))

    def writeEpoch(self, row):
        """row: the trainer's results.csv row (a dict with "epoch", 1-based). A failed write warns; training goes on."""
        step = row["epoch"]
        try:
            for key, tag in TAGS.items():
                if key in row:
                    self.writer.add_scalar(tag, float(row[key]), step)
            if self.batchImage is not None:
                self.writer.add_image(BATCH_TAG, self.batchImage, step, dataformats="HWC")
                self.batchImage = None
            for stem, image in self.validationImages:
                self.writer.add_image("images/validation/{}".format(stem), image, step, dataformats="HWC")
            self.validationImages = []
            self.writer.flush()
        except Exception as e:  # a full disk or a network file system: the curves are not worth the training
            warn("tensorboard: epoch {} not written to {} ({}: {})".format(step, self.path, type(e).__name__, e))

    def close(self):
        self.writer.close()
