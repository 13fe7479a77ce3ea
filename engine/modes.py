"""The modes of a run (mars.py's flags): train, eval, pipe (train then eval), predict, inspect, summary."""
import json
import os

import cv2
import torch
from tqdm import tqdm

from engine.checkpoint import bestModel
from engine.evaluator import Evaluator
from engine.imagefiles import DecodedImages
from engine.trainer import makeTrainer
from inference.painter import paintImage
from inference.predictor import Predictor
from misc.dist import isMain
from misc.files import atomicWrite
from misc.img import boxesFromLetterbox, imagesToDevice, networkInput
from misc.log import addFileLog, log, setQuiet
from misc.seed import seedEverything
from model import makeModel


def train(mcfg):
    seedEverything(mcfg.seed)  # the initial weights depend on the seed only
    makeTrainer(mcfg, makeModel(mcfg)).run()


def evaluate(mcfg):
    Evaluator(mcfg).evaluate(bestModel(mcfg), mcfg.testSplitName, paint=mcfg.paintImages, outDir=mcfg.evalDir())


@torch.no_grad()
def predict(mcfg, path):
    """Painted images and detections.json (boxes in original-image pixels, score >= mcfg.reportScoreThreshold).
    In a folder, an image that cannot be decoded is skipped (warned about, counted in the last line)."""
    images = DecodedImages(path, "-predict")
    predictor = Predictor(mcfg, bestModel(mcfg))
    outDir = os.path.join(mcfg.runDir(), "predict")
    os.makedirs(outDir, exist_ok=True)
    records = []
    for imagePath, imageBgr in tqdm(images, desc="predicting", dynamic_ncols=True):
        image, scale, pad = networkInput(imageBgr, mcfg.inputShape)  # uint8 (3, h, w) RGB, letterboxed
        det = predictor(imagesToDevice(image[None], mcfg.device))[0].cpu()
        det = det[det[:, 4] >= mcfg.reportScoreThreshold]
        boxes = boxesFromLetterbox(det[:, :4], scale, pad, imageBgr.shape[:2])
        rows = torch.cat([det[:, 5:6], det[:, 4:5], boxes], 1).numpy()
        stem = os.path.splitext(os.path.basename(imagePath))[0]
        cv2.imwrite(os.path.join(outDir, stem + ".jpg"), paintImage(imageBgr, mcfg.classList, predRows=rows))
        records.append({"image": imagePath, "detections": [
            {"class": mcfg.classList[int(r[0])], "classIndex": int(r[0]), "score": round(float(r[1]), 4),
             "boxXyxy": [round(float(v), 1) for v in r[2:6]]} for r in rows]})
    atomicWrite(os.path.join(outDir, "detections.json"), lambda f: f.write(json.dumps(records, indent=1).encode()))
    images.finish("predictions", outDir)


def run(mcfg, mode, path=None):
    """Run a mode; path is the image or folder of -predict and -inspect."""
    if not isMain():  # torchrun: the other ranks only train, quietly
        setQuiet()
        if mode in ("train", "pipe"):
            train(mcfg)
        return
    os.makedirs(mcfg.runDir(), exist_ok=True)
    addFileLog(os.path.join(mcfg.runDir(), "log.txt"))
    log("run {} -> {}".format(mcfg.cfgname, mcfg.runDir()))
    if mode in ("train", "pipe"):
        train(mcfg)
    if mode in ("eval", "pipe"):
        evaluate(mcfg)
    if mode == "predict":
        predict(mcfg, path)
    if mode == "inspect":
        from engine.inspection import inspect  # matplotlib, only for this mode
        inspect(mcfg, path)
    if mode == "summary":
        from engine.summary import writeSummary
        writeSummary(mcfg)
