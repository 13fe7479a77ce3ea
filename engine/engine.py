"""Modes of a run: train, eval, pipe (train then eval), predict."""
import json
import os

import cv2
import torch
from tqdm import tqdm

from dl.vocdataset import imreadBgr
from engine.evaluator import Evaluator
from engine.trainer.base import BEST_FILE
from factory.modelfactory import makeModel
from factory.trainerfactory import makeTrainer
from inference.painter import paintImage
from inference.predictor import Predictor
from misc.dist import isMain
from misc.img import IMAGE_SUFFIXES, boxesFromLetterbox, letterbox
from misc.log import addFileLog, log, setQuiet
from misc.misc import MarsError, atomicWrite, seedEverything
from model.base.yolomodel import YoloModel


def bestModel(mcfg):
    """The run's best (EMA) weights, for evaluation and prediction."""
    path = os.path.join(mcfg.cacheDir(), BEST_FILE)
    if not os.path.isfile(path):
        raise MarsError("no trained weights at {}; train first: python mars.py -cfg {} -train -root {}".format(
            path, mcfg.cfgname, mcfg.root))
    mcfg.pretrainedBackboneUrl = None  # the trained weights replace any initialisation
    return YoloModel(mcfg).load(path).eval()  # a distilled student is a plain YoloModel once trained


def train(mcfg):
    seedEverything(mcfg.seed)  # the initial weights depend on the seed only
    makeTrainer(mcfg, makeModel(mcfg)).run()


def evaluate(mcfg):
    Evaluator(mcfg).evaluate(bestModel(mcfg), mcfg.testSplitName, paint=mcfg.paintImages, outDir=mcfg.evalDir())


def listImages(path):
    if os.path.isdir(path):
        files = sorted(os.path.join(path, f) for f in os.listdir(path) if f.lower().endswith(IMAGE_SUFFIXES))
        if not files:
            raise MarsError("-predict folder {} has no images ({})".format(path, ", ".join(IMAGE_SUFFIXES)))
        return files
    if not os.path.isfile(path):
        raise MarsError("-predict path {} does not exist".format(path))
    return [path]


@torch.no_grad()
def predict(mcfg, path):
    """Painted images and detections.json (boxes in original-image pixels, score >= mcfg.paintScoreThreshold)."""
    imagePaths = listImages(path)
    predictor = Predictor(mcfg, bestModel(mcfg))
    outDir = os.path.join(mcfg.runDir(), "predict")
    os.makedirs(outDir, exist_ok=True)
    records = []
    for imagePath in tqdm(imagePaths, desc="predicting", dynamic_ncols=True):
        imageBgr = imreadBgr(imagePath)
        image, scale, pad = letterbox(imageBgr, mcfg.inputShape)
        tensor = torch.from_numpy(image[:, :, ::-1].transpose(2, 0, 1).copy())[None].to(mcfg.device).float() / 255
        det = predictor(tensor)[0].cpu()
        det = det[det[:, 4] >= mcfg.paintScoreThreshold]
        boxes = boxesFromLetterbox(det[:, :4], scale, pad, imageBgr.shape[:2])
        rows = torch.cat([det[:, 5:6], det[:, 4:5], boxes], 1).numpy()
        stem = os.path.splitext(os.path.basename(imagePath))[0]
        cv2.imwrite(os.path.join(outDir, stem + ".jpg"), paintImage(imageBgr, mcfg.classList, predRows=rows))
        records.append({"image": imagePath, "detections": [
            {"class": mcfg.classList[int(r[0])], "classIndex": int(r[0]), "score": round(float(r[1]), 4),
             "boxXyxy": [round(float(v), 1) for v in r[2:6]]} for r in rows]})
    atomicWrite(os.path.join(outDir, "detections.json"), lambda f: f.write(json.dumps(records, indent=1).encode()))
    log("predictions for {} images: {}".format(len(records), outDir))


def run(mcfg, mode, predictPath=None):
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
        predict(mcfg, predictPath)
