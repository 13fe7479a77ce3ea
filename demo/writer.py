"""The demo data set on disk: a small synthetic data set shaped like MAR20, generated once and reused.

Layout (as MAR20):
    dataDir/images/<stem>.jpg            top-down "satellite" views
    dataDir/annotations/<stem>.xml       Pascal VOC, classes A1 ... A20, boxes in image pixels
    dataDir/splits/v5/{train,validation,test,small}.txt
Three drawings (mcfg.demoStyle): "easy" (demo/easy.py: 192 px squares, 1-5 aircraft, a colour per type), "hard"
(demo/hard.py: 320-640 px images, 4-20 small aircraft in shared liveries, clutter, shadows, occlusion) and "fine"
(demo/hard.py's scenes with its FINE_* settings: 8-12 aircraft of 20-40 px, all in one light grey livery, so the
20 types differ by their silhouette alone). Everything
follows from the seed (numpy Generator). The folder is written under a temporary name and renamed when complete,
so an interrupted run never leaves a half data set behind.
"""
import json
import os
import shutil
import tempfile

import cv2
import numpy as np
from tqdm import tqdm

from config.mconfig import DEMO_STYLES
from demo import hard
from demo.easy import drawImage
from demo.shapes import NUM_CLASSES, ClassDeck, aircraftParts, classNames
from misc.errors import MarsError
from misc.log import log
from misc.xml import vocXmlText

DEMO_VERSION = 1  # bump when the easy drawing changes, so cached demo data is regenerated (hard: hard.HARD_VERSION)
MARKER = "demo-complete.json"
SPLITS = ("train", "validation", "test", "small")


def checkStyle(style):
    if style not in DEMO_STYLES:
        raise MarsError("demo data style {!r} is unknown; use one of {}".format(style, ", ".join(DEMO_STYLES)))


def chooseSmallSplit(imageClasses, numSmall, rng):
    """Indexes (sorted) of about numSmall images whose classes together cover every class that appears.

    imageClasses: list of sets of class indexes per candidate image. Classes are covered rarest first by the
    first image (in a random order) that has them; the rest is filled at random. The cover wins when it needs
    more than numSmall images.
    """
    order = list(rng.permutation(len(imageClasses)))
    counts = {}
    for classes in imageClasses:
        for c in classes:
            counts[c] = counts.get(c, 0) + 1
    chosen, covered = [], set()
    for c in sorted(counts, key=lambda c: (counts[c], c)):
        if c not in covered:
            pick = next(i for i in order if c in imageClasses[i])
            chosen.append(pick)
            covered |= imageClasses[pick]
    rest = [i for i in order if i not in set(chosen)]
    chosen += rest[:max(0, numSmall - len(chosen))]
    return sorted(int(i) for i in chosen)


def generateDemoData(dataDir, seed=0, numTrain=600, numValidation=100, numTest=150, numSmall=120, imageSize=192,
                     objectsPerImage=None, style="easy"):
    """Write the demo data set into dataDir (which must not exist or be empty). Returns dataDir.

    style "easy": square images of imageSize pixels, objectsPerImage (min, max) defaults to (1, 5); "hard"
    (demo/hard.py): each image side drawn in imageSize = (min, max) pixels (an int: that size), objectsPerImage
    defaults to (4, 20); "fine": as "hard" with hard.FINE_OBJECTS_PER_IMAGE, FINE_LENGTH_RANGE and one FINE_LIVERY.
    """
    checkStyle(style)
    rng = np.random.default_rng(seed)
    names = classNames()
    typeParts = [aircraftParts(k) for k in range(NUM_CLASSES)]
    classDeck = ClassDeck(rng)
    if style in ("hard", "fine"):
        sideMin, sideMax = hard.sideRange(imageSize)
        fine = style == "fine"
        lengthRange, livery = (hard.FINE_LENGTH_RANGE, hard.FINE_LIVERY) if fine else (hard.LENGTH_RANGE, None)
        objectsPerImage = objectsPerImage or (hard.FINE_OBJECTS_PER_IMAGE if fine else hard.OBJECTS_PER_IMAGE)

        def drawOne():
            width, height = (int(v) for v in rng.integers(sideMin, sideMax + 1, 2))
            image, objects, _ = hard.drawHardImage(rng, width, height, classDeck, typeParts, objectsPerImage,
                                                   lengthRange, livery)
            return image, objects
    else:
        def drawOne():
            return drawImage(rng, imageSize, classDeck, objectsPerImage or (1, 5), typeParts)

    for sub in ("images", "annotations", os.path.join("splits", "v5")):
        os.makedirs(os.path.join(dataDir, sub), exist_ok=True)
    counts = (("train", numTrain), ("validation", numValidation), ("test", numTest))
    splitStems, trainClasses, index = {}, [], 0
    bar = tqdm(total=numTrain + numValidation + numTest, desc="demo data", leave=False, dynamic_ncols=True)
    for splitName, count in counts:
        splitStems[splitName] = []
        for _ in range(count):
            bar.update(1)
            index += 1
            stem = "{:05d}".format(index)
            image, objects = drawOne()
            if not cv2.imwrite(os.path.join(dataDir, "images", stem + ".jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 92]):
                raise MarsError("cannot write demo image {}".format(os.path.join(dataDir, "images", stem + ".jpg")))
            with open(os.path.join(dataDir, "annotations", stem + ".xml"), "w", encoding="utf-8") as f:
                f.write(vocXmlText(stem + ".jpg", image.shape[1], image.shape[0], objects, names))
            splitStems[splitName].append(stem)
            if splitName == "train":
                trainClasses.append({o[0] for o in objects})
    bar.close()
    smallIndexes = chooseSmallSplit(trainClasses, numSmall, rng)
    splitStems["small"] = [splitStems["train"][i] for i in smallIndexes]
    for splitName in SPLITS:
        with open(os.path.join(dataDir, "splits", "v5", splitName + ".txt"), "w", encoding="utf-8") as f:
            f.write("\n".join(splitStems[splitName]) + "\n")
    return dataDir


def ensureDemoData(dataRoot, seed=0, numTrain=600, numValidation=100, numTest=150, numSmall=120, imageSize=192,
                   style="easy"):
    """The demo data folder under dataRoot, generated on first use (a complete marker file means reuse).

    Returns dataDir = dataRoot/mar20demo-v<version>-s<seed>-<size>px-<train>-<validation>-<test>-<small> (style
    "easy"), or dataRoot/mar20<style>-v<hard version>-s<seed>-<min>to<max>px-<train>-... (style "hard" or "fine",
    imageSize the (min, max) image side in pixels).
    """
    checkStyle(style)
    params = {"version": DEMO_VERSION, "seed": seed, "numTrain": numTrain, "numValidation": numValidation,
              "numTest": numTest, "numSmall": numSmall, "imageSize": imageSize}
    kind, size = "demo", "{}px".format(imageSize)
    if style != "easy":
        imageSize = hard.sideRange(imageSize)
        params.update(style=style, version=hard.HARD_VERSION, imageSize=list(imageSize))
        kind, size = style, "{}to{}px".format(*imageSize)
    dataDir = os.path.join(dataRoot, "mar20{}-v{}-s{}-{}-{}-{}-{}-{}".format(
        kind, params["version"], seed, size, numTrain, numValidation, numTest, numSmall))
    if os.path.isfile(os.path.join(dataDir, MARKER)):
        return dataDir
    if os.path.exists(dataDir):
        raise MarsError("demo data folder {} exists but has no {} (not a complete demo data set); delete it and "
                        "run again".format(dataDir, MARKER))
    os.makedirs(dataRoot, exist_ok=True)
    log("generating {}demo data ({} train, {} validation, {} test images) in {}".format(
        "" if style == "easy" else style + " ", numTrain, numValidation, numTest, dataDir))
    tmp = tempfile.mkdtemp(prefix=".tmp-mar20demo-", dir=dataRoot)
    try:
        generateDemoData(tmp, seed, numTrain, numValidation, numTest, numSmall, imageSize, style=style)
        with open(os.path.join(tmp, MARKER), "w", encoding="utf-8") as f:
            json.dump(params, f)
        try:
            os.rename(tmp, dataDir)
        except OSError:
            if not os.path.isfile(os.path.join(dataDir, MARKER)):  # not a concurrent run that finished first
                raise
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return dataDir


def configureDemoData(mcfg, dataDir):
    """Point mcfg's data knobs (imageDir, annotationDir, classList, subsetMap, suffix) at a demo data folder."""
    mcfg.imageDir = os.path.join(dataDir, "images")
    mcfg.annotationDir = os.path.join(dataDir, "annotations")
    mcfg.classList = classNames()
    mcfg.suffix = ".jpg"
    mcfg.subsetMap = {name: os.path.join(dataDir, "splits", "v5", name + ".txt") for name in SPLITS}
    return mcfg
