"""Built-in demo data: a small synthetic data set shaped like MAR20, generated once and reused.

Layout (as MAR20):
    dataDir/images/<stem>.jpg            192 x 192 top-down "satellite" views
    dataDir/annotations/<stem>.xml       Pascal VOC, classes A1 ... A20, boxes in image pixels
    dataDir/splits/v5/{train,validation,test,small}.txt
Each image shows 1-5 aircraft silhouettes of 20 types on a textured ground, at random position, rotation and
size (about 20-60 pixels long), with no two boxes overlapping. A type is a wing planform family (5) crossed with
an engine layout (4), each with its own colour, so a nano YOLOv8 tells them apart after a few CPU minutes.
Everything follows from the seed (numpy Generator). The folder is written under a temporary name and renamed
when complete, so an interrupted run never leaves a half data set behind.
This is the "easy" style; the "hard" style (dl/demohard.py: 320-640 px images, many small aircraft in shared
liveries, clutter, shadows, occlusion) is chosen with style="hard" and reuses this module's shapes and files.
"""
import json
import math
import os
import shutil
import tempfile

import cv2
import numpy as np
from tqdm import tqdm

from config.mconfig import DEMO_STYLES
from misc.log import log
from misc.misc import MarsError

DEMO_VERSION = 1  # bump when the drawing changes, so cached demo data is regenerated (the hard style: demohard.py)
NUM_CLASSES = 20
MARKER = "demo-complete.json"
SPLITS = ("train", "validation", "test", "small")
# wing families: (span, leading-edge y at the root, root chord, tip chord, sweep, tail span, tail chord, fuselage width)
# in fuselage lengths; nose at y = -0.5, tail at y = +0.5
FAMILIES = (
    (1.00, -0.08, 0.22, 0.07, 0.25, 0.38, 0.12, 0.10),  # swept airliner
    (1.20, -0.10, 0.16, 0.10, 0.00, 0.42, 0.12, 0.11),  # straight-wing transport
    (0.62, -0.08, 0.52, 0.03, 0.45, 0.00, 0.00, 0.09),  # delta fighter, no tailplane
    (0.70, 0.00, 0.30, 0.06, 0.30, 0.34, 0.15, 0.10),  # swept fighter
    (1.40, -0.15, 0.28, 0.06, 0.45, 0.28, 0.10, 0.09),  # long-span swept bomber
)
ENGINE_LAYOUTS = ("none", "wing2", "wing4", "rear2")
LENGTH_FACTORS = (1.0, 0.9, 1.15, 0.8)  # per engine layout: relative fuselage length


def classNames():
    """["A1", ..., "A20"]: the MAR20 class names."""
    return ["A{}".format(i + 1) for i in range(NUM_CLASSES)]


def typeColorBgr(typeIndex):
    """Distinct colour per type: 10 hues x 2 shades (light and saturated-dark), as a BGR tuple of ints."""
    saturation, value = ((170, 245), (255, 150))[typeIndex // 10]
    hsv = np.array([[[(typeIndex % 10) * 18, saturation, value]]], dtype=np.uint8)
    return tuple(int(v) for v in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])


def _planform(span, rootY, rootChord, tipChord, sweep):
    """Hexagon of a symmetric wing (both halves through the centreline): (6, 2) local (x, y)."""
    h = span / 2
    return np.array([(-h, rootY + sweep), (0, rootY), (h, rootY + sweep),
                     (h, rootY + sweep + tipChord), (0, rootY + rootChord), (-h, rootY + sweep + tipChord)])


def rectangle(cx, cy, width, length):
    """Rectangle (4, 2) of width across x and length along y, centred at (cx, cy)."""
    return np.array([(cx - width / 2, cy - length / 2), (cx + width / 2, cy - length / 2),
                     (cx + width / 2, cy + length / 2), (cx - width / 2, cy + length / 2)])


def boxesApart(box, boxes, gap):
    """True when box [x0, y0, x1, y1] keeps at least gap pixels away from every box in boxes."""
    return all(box[0] >= b[2] + gap or box[2] + gap <= b[0] or box[1] >= b[3] + gap or box[3] + gap <= b[1]
               for b in boxes)


def aircraftParts(typeIndex):
    """Polygons of one type in local units (fuselage length 1 times the type's length factor, nose up).

    Returns [(points (K, 2) float, shade)], drawn in order; shade multiplies the type colour.
    """
    span, rootY, rootChord, tipChord, sweep, tailSpan, tailChord, width = FAMILIES[typeIndex % 5]
    layout = ENGINE_LAYOUTS[(typeIndex // 5) % 4]
    width *= (1.0, 1.25, 0.85, 1.1)[(typeIndex // 5) % 4]
    fuselage = np.array([(0, -0.5), (width / 2, -0.38), (width / 2, 0.35), (width / 4, 0.5),
                         (-width / 4, 0.5), (-width / 2, 0.35), (-width / 2, -0.38)])
    parts = [(_planform(span, rootY, rootChord, tipChord, sweep), 0.8)]
    if tailSpan > 0:
        parts.append((_planform(tailSpan, 0.48 - tailChord - 0.1 * tailSpan, tailChord, tailChord * 0.45,
                                0.1 * tailSpan), 0.8))
    parts.append((fuselage, 1.0))
    engineXs = {"none": (), "wing2": (0.35,), "wing4": (0.3, 0.62), "rear2": ()}[layout]
    for fraction in engineXs:
        for side in (-1, 1):
            x = side * fraction * span / 2
            leadingEdgeY = rootY + sweep * fraction
            parts.append((rectangle(x, leadingEdgeY - 0.02, 0.07, 0.16), 0.45))
    if layout == "rear2":
        for side in (-1, 1):
            parts.append((rectangle(side * (width / 2 + 0.04), 0.3, 0.08, 0.18), 0.45))
    factor = LENGTH_FACTORS[(typeIndex // 5) % 4]
    return [(points * factor, shade) for points, shade in parts]


def drawGround(rng, size):
    """Textured ground: uint8 (size, size, 3) BGR: smooth tinted noise, grain, a few patches and taxiway lines."""
    base = rng.uniform(95, 150) + rng.uniform(-12, 12, 3)
    lowFrequency = base + rng.normal(0, 14, (6, 6, 1)) + rng.normal(0, 4, (6, 6, 3))  # mostly brightness, a little tint
    smooth = cv2.resize(lowFrequency.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
    grain = rng.standard_normal((size, size, 1), dtype=np.float32) * 6
    image = np.clip(smooth + grain, 0, 255).astype(np.uint8)
    for _ in range(rng.integers(1, 4)):
        gray = int(np.clip(base.mean() + rng.uniform(-35, 35), 0, 255))
        center = (int(rng.integers(0, size)), int(rng.integers(0, size)))
        axes = (int(rng.integers(8, size // 3)), int(rng.integers(8, size // 3)))
        cv2.ellipse(image, center, axes, float(rng.uniform(0, 180)), 0, 360, (gray, gray, gray + 5), -1, cv2.LINE_AA)
    for _ in range(rng.integers(0, 3)):
        gray = int(np.clip(base.mean() + rng.uniform(20, 60), 0, 255))
        p0 = (int(rng.integers(0, size)), 0) if rng.random() < 0.5 else (0, int(rng.integers(0, size)))
        p1 = (int(rng.integers(0, size)), size - 1) if p0[1] == 0 else (size - 1, int(rng.integers(0, size)))
        cv2.line(image, p0, p1, (gray, gray, gray), int(rng.integers(3, 9)), cv2.LINE_AA)
    return image


def drawImage(rng, size, classDeck, objectsPerImage, typeParts):
    """One image and its objects [(classIndex, x0, y0, x1, y1)] in image pixels; classDeck() gives the next class."""
    image = drawGround(rng, size)
    objects, boxes = [], []
    for _ in range(rng.integers(objectsPerImage[0], objectsPerImage[1] + 1)):
        classIndex = classDeck()
        angle, length = rng.uniform(0, 2 * math.pi), rng.uniform(0.13, 0.26) * size
        rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]]) * length
        parts = [(points @ rotation.T, shade) for points, shade in typeParts[classIndex]]
        allPoints = np.concatenate([p for p, _ in parts])
        low, high = allPoints.min(0), allPoints.max(0)
        for _attempt in range(30):
            center = rng.uniform(-low + 1, size - 1 - high)
            box = np.concatenate((low + center, high + center))
            if boxesApart(box, boxes, 1):
                break
        else:
            continue  # no free room: leave this object out
        color = np.array(typeColorBgr(classIndex), dtype=np.float64)
        for points, shade in parts:
            polygon = np.round((points + center) * 4).astype(np.int32)  # 2 fractional bits (shift=2)
            cv2.fillPoly(image, [polygon], tuple(float(c) for c in color * shade), cv2.LINE_AA, shift=2)
        boxes.append(box)
        edges = box + 0.5  # cv2 vertex coordinates address pixel centres; boxes use pixel edges
        objects.append((classIndex, float(np.floor(edges[0])), float(np.floor(edges[1])),
                        float(min(size, np.ceil(edges[2]))), float(min(size, np.ceil(edges[3])))))
    return image, objects


def vocXmlText(fileName, width, height, objects, names):
    """Pascal VOC XML text for objects [(classIndex, x0, y0, x1, y1)] in image pixels."""
    lines = ["<annotation>", "  <folder>images</folder>", "  <filename>{}</filename>".format(fileName),
             "  <size><width>{}</width><height>{}</height><depth>3</depth></size>".format(width, height)]
    for classIndex, x0, y0, x1, y1 in objects:
        lines.append("  <object><name>{}</name><difficult>0</difficult><bndbox><xmin>{:g}</xmin><ymin>{:g}</ymin>"
                     "<xmax>{:g}</xmax><ymax>{:g}</ymax></bndbox></object>".format(names[classIndex], x0, y0, x1, y1))
    lines.append("</annotation>")
    return "\n".join(lines) + "\n"


class ClassDeck(object):
    """Class indexes in shuffled rounds of all numClasses, so every run of numClasses draws holds every class."""

    def __init__(self, rng, numClasses=NUM_CLASSES):
        self.rng, self.numClasses, self.cards = rng, numClasses, []

    def __call__(self):
        if not self.cards:
            self.cards.extend(self.rng.permutation(self.numClasses).tolist())
        return self.cards.pop()

    def putBack(self, classIndex):
        """Return a drawn class that found no room: it is the next one drawn."""
        self.cards.append(classIndex)


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
    (dl/demohard.py): each image side drawn in imageSize = (min, max) pixels (an int: that size), objectsPerImage
    defaults to (4, 20).
    """
    checkStyle(style)
    rng = np.random.default_rng(seed)
    names = classNames()
    typeParts = [aircraftParts(k) for k in range(NUM_CLASSES)]
    classDeck = ClassDeck(rng)
    if style == "hard":
        from dl import demohard  # here: dl/demohard.py imports this module's helpers
        sideMin, sideMax = demohard.sideRange(imageSize)

        def drawOne():
            width, height = (int(v) for v in rng.integers(sideMin, sideMax + 1, 2))
            image, objects, _ = demohard.drawHardImage(rng, width, height, classDeck, typeParts,
                                                       objectsPerImage or demohard.OBJECTS_PER_IMAGE)
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
    "easy"), or dataRoot/mar20hard-v<hard version>-s<seed>-<min>to<max>px-<train>-... (style "hard", imageSize the
    (min, max) image side in pixels).
    """
    checkStyle(style)
    params = {"version": DEMO_VERSION, "seed": seed, "numTrain": numTrain, "numValidation": numValidation,
              "numTest": numTest, "numSmall": numSmall, "imageSize": imageSize}
    kind, size = "demo", "{}px".format(imageSize)
    if style == "hard":
        from dl import demohard  # here: dl/demohard.py imports this module's helpers
        imageSize = demohard.sideRange(imageSize)
        params.update(style=style, version=demohard.HARD_VERSION, imageSize=list(imageSize))
        kind, size = "hard", "{}to{}px".format(*imageSize)
    dataDir = os.path.join(dataRoot, "mar20{}-v{}-s{}-{}-{}-{}-{}-{}".format(
        kind, params["version"], seed, size, numTrain, numValidation, numTest, numSmall))
    if os.path.isfile(os.path.join(dataDir, MARKER)):
        return dataDir
    if os.path.exists(dataDir):
        raise MarsError("demo data folder {} exists but has no {} (not a complete demo data set); delete it and "
                        "run again".format(dataDir, MARKER))
    os.makedirs(dataRoot, exist_ok=True)
    log("generating {}demo data ({} train, {} validation, {} test images) in {}".format(
        "hard " if style == "hard" else "", numTrain, numValidation, numTest, dataDir))
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
