"""-inspect PATH: what the detector learns, drawn for an image or a folder of images under <run>/inspect/.

Per image (files named after the image's stem):
    <stem>_assignment.png  ground-truth boxes and the anchors the TaskAlignedAssigner makes positive for each
    <stem>_scores.png      per level, the highest class probability at every anchor, the top class at the peaks
    <stem>_distill.png     distillation configs: teacher vs student (CWD attention maps, or LD's per-anchor KL)
and summary.json: per image, per box the positive anchors (indexes over P3, P4, P5 concatenated) and their count per
level; per level the score statistics; for distillation the loss value of each map.
Weights: the run's best (EMA) weights; without any, the model as training would start it (freshly initialised, or from
mcfg.checkpointModelFile): a warning, and the titles say so.

Distillation configs also get, once per run, distill_mechanism.png and summary.json's "distillationMechanism": the
probe of train/distilprobe.py (what each training term does to the new classes' scores) on the first
MECHANISM_BATCHES batches of mcfg.trainSplitName (file order, no augmentation), at the start weights
(mcfg.checkpointModelFile, the teacher's) and, when the run has them, at its best weights.
"""
import json
import os

import numpy as np
import torch
from tqdm import tqdm

from dl.vocdataset import clipToImage, loadAnnotation, makeDataLoader
from engine.checkpoint import bestModel, bestWeightsPath
from engine.imagefiles import DecodedImages
from engine.inspectmaps import LEVEL_NAMES, assignment, cwdMaps, ldMaps, positivesPerBox, scoreMaps
from inference.inspectpanels import assignmentPanel, cwdPanel, ldPanel, mechanismPanel, scoreMapPanel
from misc.errors import MarsError
from misc.files import atomicWrite
from misc.img import boxesToLetterbox, imagesToDevice, networkInput
from misc.log import log, warn
from misc.seed import seedEverything
from model import makeModel
from model.distillation.studentmodel import featureDict
from model.distillation.teachermodel import YoloTeacherModel
from train.distilloss import DistillationDetectionLoss
from train.distilprobe import probeDistillation

MECHANISM_BATCHES = 4  # batches of mcfg.trainSplitName the distillation probe sums over
MECHANISM_BATCH_SIZE = 8  # at most this many images per probe batch (mcfg.batchSize when smaller)
MECHANISM_PANEL = "distill_mechanism.png"


def startWeightsLabel(mcfg):
    """What the model starts from: 'start weights <run of mcfg.checkpointModelFile>', else 'freshly initialised
    weights'."""
    return "start weights " + os.path.basename(os.path.dirname(os.path.dirname(mcfg.checkpointModelFile))) \
        if mcfg.checkpointModelFile else "freshly initialised weights"


def inspectionModels(mcfg):
    """(model in eval mode, teacher or None, weights label for titles and summary.json)."""
    path = bestWeightsPath(mcfg)
    if os.path.isfile(path):
        model, label = bestModel(mcfg), "best weights"
    else:
        start = startWeightsLabel(mcfg)
        warn("no trained weights at {}: inspecting the model as training starts it ({}, seed {}); train first for a "
             "model that has learnt something: python mars.py -cfg {} -train".format(path, start, mcfg.seed, mcfg.cfgname))
        seedEverything(mcfg.seed)
        model, label = makeModel(mcfg), "UNTRAINED: " + start  # makeModel loads mcfg.checkpointModelFile
    teacher = YoloTeacherModel(mcfg) if mcfg.modelName == "distillation" else None
    return model.eval(), teacher, label


def findAnnotation(mcfg, imagePath):
    """The VOC file of an image, found as the data set finds it (mcfg.annotationDir/<stem>.xml), else the .xml next
    to the image; None when neither exists."""
    stem = os.path.splitext(os.path.basename(imagePath))[0]
    candidates = ([os.path.join(mcfg.annotationDir, stem + ".xml")] if mcfg.annotationDir else []) + \
        [os.path.splitext(imagePath)[0] + ".xml"]
    return next((c for c in candidates if os.path.isfile(c)), None)


def readBoxes(mcfg, xmlPath, imagePath, origShape):
    """Boxes of one image as training reads them (classes filtered by mcfg.trainSelectedClasses, VOC difficult
    objects left out unless mcfg.useDifficult), clipped to the decoded image: classIndexes (n,) int64, boxesXyxy (n, 4)
    float32 in original-image pixels."""
    classIndex = {name: i for i, name in enumerate(mcfg.classList)}
    selected = None if mcfg.trainSelectedClasses is None else set(mcfg.trainSelectedClasses)
    _, classes, boxes, difficult, _, _ = loadAnnotation(xmlPath, imagePath, classIndex, selected, "trainSelectedClasses")
    keep = np.ones_like(difficult) if mcfg.useDifficult else ~difficult
    boxes, valid = clipToImage(boxes[keep], origShape)
    return classes[keep][valid], boxes[valid]


def collateTargets(classes, boxesInput, inputShape):
    """classes (n,), boxesInput (n, 4) network-input pixels -> (n, 6) Mars collate rows of image 0."""
    H, W = inputShape
    rows = np.zeros((len(classes), 6), dtype=np.float32)
    rows[:, 1] = classes
    rows[:, 2:6] = boxesInput / np.array([W, H, W, H], dtype=np.float32)
    return torch.from_numpy(rows)


@torch.no_grad()
def inspectImage(mcfg, model, teacher, label, imagePath, imageBgr, outDir):
    """Panels of one image; returns its summary.json record."""
    stem = os.path.splitext(os.path.basename(imagePath))[0]
    image, scale, pad = networkInput(imageBgr, mcfg.inputShape)  # uint8 (3, h, w) RGB, letterboxed
    imageRgb = image.permute(1, 2, 0).numpy()  # (h, w, 3) for drawing
    preds, backboneFeats, neckFeats = model.forwardFeatures(imagesToDevice(image[None], mcfg.device))
    title = "{} - {} ({})".format(os.path.basename(imagePath), mcfg.cfgname, label)
    record = {"image": imagePath, "scale": scale, "pad": list(pad), "panels": {}}

    xmlPath = findAnnotation(mcfg, imagePath)
    record["annotation"] = xmlPath
    boxesInput, names = None, []
    if xmlPath is not None:
        classes, boxesOrig = readBoxes(mcfg, xmlPath, imagePath, imageBgr.shape[:2])
        boxesInput = boxesToLetterbox(boxesOrig, scale, pad)
        names = [mcfg.classList[int(c)] for c in classes]
        assigned = assignment(mcfg, model, preds, collateTargets(classes, boxesInput, mcfg.inputShape))
        positives = positivesPerBox(assigned, len(names))
        record["boxes"] = [{"class": name, "boxXyxy": [round(float(v), 2) for v in orig],
                            "boxXyxyInput": [round(float(v), 2) for v in box], "positives": p["counts"],
                            "anchorIndexes": p["anchorIndexes"]}
                           for name, orig, box, p in zip(names, boxesOrig, boxesInput, positives)]
    else:
        assigned, positives = None, []
        record["boxes"] = None
        title += " - no annotation"
    record["panels"]["assignment"] = stem + "_assignment.png"
    assignmentPanel(imageRgb, boxesInput, names, positives, assigned, "assignment: " + title,
                    os.path.join(outDir, record["panels"]["assignment"]))

    levels = scoreMaps(preds, model.strides, model.regMax, mcfg.classList, mcfg.reportScoreThreshold)
    record["scoreMaps"] = {name: {"shape": list(level["maxScore"].shape), "max": round(float(level["maxScore"].max()), 5),
                                  "mean": round(float(level["maxScore"].mean()), 5),
                                  "peakXyInput": list(level["peaks"][0][0]), "peakClass": level["peaks"][0][1]}
                           for name, level in zip(LEVEL_NAMES, levels)}
    record["panels"]["scores"] = stem + "_scores.png"
    scoreMapPanel(imageRgb, levels, boxesInput, "score maps: " + title, os.path.join(outDir, record["panels"]["scores"]))

    if teacher is not None:
        record["distillation"] = distillationPanel(mcfg, teacher, image, preds, backboneFeats, neckFeats,
                                                   "teacher vs student: " + title,
                                                   os.path.join(outDir, stem + "_distill.png"))
        record["panels"]["distillation"] = stem + "_distill.png"
    return record


def distillationPanel(mcfg, teacher, image, preds, backboneFeats, neckFeats, title, path):
    """Teacher vs student maps of the distillation term mcfg.distilMethod selects; returns its summary record."""
    teacherPreds, teacherBackbone, teacherNeck = teacher(imagesToDevice(image[None], mcfg.device))
    T = float(mcfg.distilTemperature)
    if mcfg.distilMethod == "cwd":
        student, teacherFeats = featureDict(backboneFeats, neckFeats), featureDict(teacherBackbone, teacherNeck)
        features = [(name, tuple(student[name].shape), cwdMaps(student[name], teacherFeats[name], T))
                    for name in mcfg.distilFeatures]
        cwdPanel(features, title, path)
        return {"method": "cwd", "temperature": T, "features": {
            name: {"shape": list(shape), "cwd": maps["value"]} for name, shape, maps in features}}
    levels, value = ldMaps(preds, teacherPreds, mcfg.regMax, mcfg.teacherClassIndexes, T)
    ldPanel(levels, value, title, path)
    return {"method": "ld", "temperature": T, "ld": value}


def mechanismBatches(mcfg):
    """The first MECHANISM_BATCHES (images uint8 (B, 3, H, W), targets (N, 6)) batches of mcfg.trainSplitName in file
    order, without augmentation, with the training's classes (mcfg.trainSelectedClasses)."""
    probeConfig = mcfg.copy(testSelectedClasses=mcfg.trainSelectedClasses, dcore=0)  # train=False reads test classes
    loader = makeDataLoader(probeConfig, mcfg.trainSplitName, train=False, shuffle=False,
                            batchSize=min(mcfg.batchSize, MECHANISM_BATCH_SIZE))
    return [(images, targets) for (images, targets, _), _ in zip(loader, range(MECHANISM_BATCHES))]


def probeWeights(mcfg, student, batches, epoch):
    """probeDistillation of the student as it is now: a fresh DistillationDetectionLoss at that epoch's
    mcfg.distilSchedule scale (the start: epoch 0, trained weights: the last epoch), the teacher's classes."""
    loss = DistillationDetectionLoss(mcfg, student)
    loss.setEpoch(epoch)
    return probeDistillation(student, loss, batches, mcfg.teacherClassIndexes, mcfg.nc)


def mechanismLine(name, probe):
    """One log line: each term's push on the new-class objects and background."""
    fmt = lambda v: "n/a" if v is None else "{:+.3g}".format(v)
    return "distillation probe ({}): push on new-class objects / background: {}".format(name, ", ".join(
        "{} {} / {}".format(t, fmt(probe["pushObjects"][t]), fmt(probe["pushBackground"][t]))
        for t in ("detectionNew", "knowledge", "response")))


def distillationMechanism(mcfg, outDir, label):
    """The distillation probe at the start weights and, when the run has best weights, at them (the module docstring);
    draws MECHANISM_PANEL under outDir. label: the inspection's weights label. Returns summary.json's record:
    split, batchSize, panel, start {"weights": label, ...probe dict} and, with best weights, trained {...}; or
    {"skipped": reason} when the split cannot be read."""
    try:
        batches = mechanismBatches(mcfg)
    except MarsError as e:
        warn("distillation probe skipped: {}".format(e))
        return {"skipped": str(e)}
    seedEverything(mcfg.seed)
    student = makeModel(mcfg)  # YoloStudentModel with its teacher, from mcfg.checkpointModelFile (the start weights)
    trained = os.path.isfile(bestWeightsPath(mcfg))
    start = startWeightsLabel(mcfg) if trained else label
    probes = [("start: " + start, probeWeights(mcfg, student, batches, 0))]
    record = {"split": mcfg.trainSplitName, "batchSize": int(batches[0][0].shape[0]) if batches else 0,
              "panel": MECHANISM_PANEL, "start": dict(weights=start, **probes[0][1])}
    log(mechanismLine("start", probes[0][1]))
    if trained:
        student.load(bestWeightsPath(mcfg))
        probes.append(("trained: best weights", probeWeights(mcfg, student, batches, mcfg.maxEpoch - 1)))
        record["trained"] = dict(weights="best weights", **probes[1][1])
        log(mechanismLine("trained", probes[1][1]))
    mechanismPanel(probes, "what each distillation term does to the new classes - {} ({} images of split {}, "
                   "response path {})".format(mcfg.cfgname, probes[0][1]["images"], mcfg.trainSplitName,
                                              mcfg.distilResponsePath), os.path.join(outDir, MECHANISM_PANEL))
    return record


def inspect(mcfg, path):
    """Panels and summary.json under <run>/inspect/ for an image or a folder of images (see the module docstring)."""
    images = DecodedImages(path, "-inspect")
    model, teacher, label = inspectionModels(mcfg)
    outDir = os.path.join(mcfg.runDir(), "inspect")
    os.makedirs(outDir, exist_ok=True)
    records = [inspectImage(mcfg, model, teacher, label, imagePath, imageBgr, outDir)
               for imagePath, imageBgr in tqdm(images, desc="inspecting", dynamic_ncols=True)]
    summary = {"config": mcfg.cfgname, "weights": label, "inputShape": list(mcfg.inputShape), "levels": {
        name: {"stride": s} for name, s in zip(LEVEL_NAMES, model.strides)}, "images": records,
        "skipped": images.skipped}
    if mcfg.modelName == "distillation":
        summary["distillationMechanism"] = distillationMechanism(mcfg, outDir, label)
    atomicWrite(os.path.join(outDir, "summary.json"), lambda f: f.write(json.dumps(summary, indent=1).encode()))
    images.finish("inspection panels", outDir)
