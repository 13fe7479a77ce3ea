"""Evaluation: predict a split batch by batch, compute mAP, write the report, paint images as they stream by."""
import os

import cv2
import torch
from tqdm import tqdm

from dl.vocdataset import makeDataLoader
from engine.gallery import writeErrorGallery
from eval.coco import writeCocoFiles
from eval.map import computeMap, confusionMatrix, matchDetections
from eval.report import errorLine, writeConfusionMatrix, writeErrors, writeReport
from eval.tide import tideBreakdown
from inference.painter import paintImage
from inference.predictor import Predictor
from misc.img import boxesFromLetterbox, imagesToDevice, imreadBgr
from misc.log import log


def detectionsToRows(detections, metas):
    """Per-image (n, 6) detections in network-input pixels -> (P, 7) rows (imageIndex, classIndex, score, x0, y0,
    x1, y1) in original-image pixels (imageIndex = the dataset index)."""
    rows = []
    for det, meta in zip(detections, metas):
        det = det.float().cpu()
        boxes = boxesFromLetterbox(det[:, :4], meta["scale"], meta["pad"], meta["origShape"])
        index = torch.full((len(det), 1), float(meta["index"]))
        rows.append(torch.cat([index, det[:, 5:6], det[:, 4:5], boxes], 1))
    return torch.cat(rows) if rows else torch.zeros(0, 7)


def gtRows(metas):
    """-> (G, 6) rows (imageIndex, classIndex, x0, y0, x1, y1) in original-image pixels, and (G,) bool: ignored
    (VOC difficult) ground truths."""
    rows = [torch.cat([torch.full((len(m["gt"]), 1), float(m["index"])), m["gt"]], 1) for m in metas]
    ignore = [m["gtIgnore"] for m in metas]
    return (torch.cat(rows), torch.cat(ignore)) if rows else (torch.zeros(0, 6), torch.zeros(0, dtype=torch.bool))


def imageRecords(metas, imageDir):
    """-> [(index, fileName, width, height)] of a batch: fileName relative to imageDir (the path itself when it lies
    elsewhere), width and height of the original image."""
    records = []
    for m in metas:
        relative = os.path.relpath(m["path"], imageDir) if imageDir else m["path"]
        fileName = m["path"] if relative.startswith("..") else relative
        records.append((m["index"], fileName.replace(os.sep, "/"), m["origShape"][1], m["origShape"][0]))
    return records


class Evaluator(object):
    def __init__(self, mcfg):
        self.mcfg = mcfg
        self.device = torch.device(mcfg.device)
        self.loaders = {}  # split name -> DataLoader, made once (training evaluates the validation split often)

    def loader(self, splitName):
        """The split's DataLoader in file order, made once (training evaluates the validation split often)."""
        if splitName not in self.loaders:
            self.loaders[splitName] = makeDataLoader(self.mcfg, splitName, train=False, shuffle=False)
        return self.loaders[splitName]

    @torch.no_grad()
    def evaluate(self, model, splitName, paint=False, outDir=None):
        """mAP of model on a split; with outDir, also the report files, the evaluation's inputs in COCO's format
        (detections.json, groundtruth.json: eval/coco.py), TIDE's error breakdown (errors.csv, result["errors"]:
        eval/tide.py), the worst images per error kind (errors/, errors.png: engine/gallery.py), and painted images
        when paint.
        Memory stays flat: images are dropped batch by batch, only detection rows are kept."""
        model.eval()
        predictor = Predictor(self.mcfg, model)
        loader = self.loader(splitName)
        allPreds, allGts, allIgnore, imageList, imagePaths = [], [], [], [], {}
        for images, _, metas in tqdm(loader, desc="evaluating {}".format(splitName), leave=False, dynamic_ncols=True):
            images = imagesToDevice(images, self.device)
            preds, (gts, ignore) = detectionsToRows(predictor(images), metas), gtRows(metas)
            allPreds.append(preds)
            allGts.append(gts)
            allIgnore.append(ignore)
            imageList += imageRecords(metas, self.mcfg.imageDir)
            imagePaths.update((int(m["index"]), m["path"]) for m in metas)
            if paint and outDir:
                self.paintBatch(preds, gts, metas, os.path.join(outDir, "painted"))
        preds, gts, ignore = torch.cat(allPreds), torch.cat(allGts), torch.cat(allIgnore)
        result = computeMap(preds, gts, self.mcfg.nc, vocIou=self.mcfg.minIou, scoreThreshold=self.mcfg.reportScoreThreshold,
                            gtIgnore=ignore)
        if outDir:
            table = writeReport(result, self.mcfg.classList, outDir)
            matrix = confusionMatrix(preds, gts, self.mcfg.nc, self.mcfg.minIou, self.mcfg.reportScoreThreshold,
                                     gtIgnore=ignore)
            writeConfusionMatrix(matrix, self.mcfg.classList, os.path.join(outDir, "confusion_matrix.png"))
            writeCocoFiles(outDir, preds, gts, ignore, imageList, self.mcfg.classList)
            tide = tideBreakdown(preds, gts, self.mcfg.nc, ignore, perImage=True)
            writeErrors(tide, self.mcfg.classList, os.path.join(outDir, "errors.csv"))
            writeErrorGallery(outDir, tide, preds, gts, imagePaths, self.mcfg.classList)
            result["errors"] = tide
            log(table)
            log(errorLine(tide))
            log("evaluation files: {}".format(outDir))
        return result

    def paintedBatch(self, preds, gts, metas):
        """-> [(stem, painted BGR image)] of a batch: ground truth purple, TP green, FP yellow (score >=
        reportScoreThreshold)."""
        shown = preds[preds[:, 2] >= self.mcfg.reportScoreThreshold]
        isTp = matchDetections(shown, gts, [self.mcfg.minIou])[:, 0]
        painted = []
        for meta in metas:
            index = float(meta["index"])
            mine, myGt = shown[:, 0] == index, gts[gts[:, 0] == index]
            image = paintImage(imreadBgr(meta["path"]), self.mcfg.classList, myGt[:, 1:].numpy(),
                               shown[mine][:, 1:].numpy(), isTp[mine].numpy())
            painted.append((os.path.splitext(os.path.basename(meta["path"]))[0], image))
        return painted

    def paintBatch(self, preds, gts, metas, folder):
        """Write each image of a batch, painted (paintedBatch), to folder/<stem>.jpg."""
        os.makedirs(folder, exist_ok=True)
        for stem, painted in self.paintedBatch(preds, gts, metas):
            cv2.imwrite(os.path.join(folder, stem + ".jpg"), painted)

    @torch.no_grad()
    def paintedImages(self, model, splitName, count):
        """The first count images of a split with model's detections painted (paintedBatch): [(stem, BGR image)]. The
        trainer shows them on TensorBoard after each measured epoch."""
        model.eval()
        predictor = Predictor(self.mcfg, model)
        painted = []
        for images, _, metas in self.loader(splitName):
            preds = detectionsToRows(predictor(imagesToDevice(images, self.device)), metas)
            painted += self.paintedBatch(preds, gtRows(metas)[0], metas)
            if len(painted) >= count:
                break
        return painted[:count]
