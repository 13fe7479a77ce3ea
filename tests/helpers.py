"""Tiny VOC data sets written by tests, and the test oracles (required, never skipped)."""
import importlib
import importlib.metadata
import os
import re

import cv2
import numpy as np

XML = """<annotation><filename>{name}</filename><size><width>{w}</width><height>{h}</height><depth>3</depth></size>
{objects}</annotation>"""
OBJ = "<object><name>{c}</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
COLORS = [(40, 40, 220), (220, 80, 40), (40, 200, 40), (200, 40, 200)]  # BGR per class


def writeVocSet(root, images, classList, splits):
    """images: {stem: (h, w, [(className, x0, y0, x1, y1), ...])} drawn as filled rectangles of the class colour on
    noisy grey; splits: {name: [stems]}. Returns (imageDir, annotationDir, subsetMap)."""
    imageDir, annotationDir = os.path.join(root, "images"), os.path.join(root, "annotations")
    os.makedirs(imageDir, exist_ok=True)
    os.makedirs(annotationDir, exist_ok=True)
    rng = np.random.default_rng(0)
    for stem, (h, w, objects) in images.items():
        image = rng.integers(90, 140, (h, w, 3), dtype=np.uint8)
        for c, x0, y0, x1, y1 in objects:
            cv2.rectangle(image, (x0, y0), (x1 - 1, y1 - 1), COLORS[classList.index(c) % len(COLORS)], -1)
        cv2.imwrite(os.path.join(imageDir, stem + ".jpg"), image)
        body = "\n".join(OBJ.format(c=c, x0=x0, y0=y0, x1=x1, y1=y1) for c, x0, y0, x1, y1 in objects)
        with open(os.path.join(annotationDir, stem + ".xml"), "w") as f:
            f.write(XML.format(name=stem + ".jpg", w=w, h=h, objects=body))
    subsetMap = {}
    for name, stems in splits.items():
        subsetMap[name] = os.path.join(root, name + ".txt")
        with open(subsetMap[name], "w") as f:
            f.write("\n".join(stems) + "\n")
    return imageDir, annotationDir, subsetMap


REQUIREMENTS_DEV = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "requirements-dev.txt")


def requireOracle(name, distribution=None):
    """Import a test oracle (ultralytics, pycocotools) or fail -- never skip: a missing, broken or other-version oracle
    would otherwise turn the parity checks into silent skips. The version must be the one pinned in requirements-dev.txt
    (the parity was shown with it; another Ultralytics may change its own loss)."""
    distribution = distribution or name
    fix = "install the test oracles: pip install -r requirements-dev.txt"
    try:
        module = importlib.import_module(name)
        installed = importlib.metadata.version(distribution)
    except Exception as e:
        raise ImportError("test oracle {!r} cannot be imported ({}: {}); {}".format(name, type(e).__name__, e, fix)) from e
    with open(REQUIREMENTS_DEV) as f:
        pinned = re.search(r"^{}==(\S+)".format(re.escape(distribution)), f.read(), re.MULTILINE)
    assert pinned, "requirements-dev.txt does not pin {}".format(distribution)
    if installed != pinned.group(1):
        raise ImportError("test oracle {} is version {}, the tests are pinned to {}; {}".format(
            distribution, installed, pinned.group(1), fix))
    return module
