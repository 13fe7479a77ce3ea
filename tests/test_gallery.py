"""engine/gallery.py: the worst images per TIDE error kind (errors/<kind>/, errors/<kind>.jpg, errors.png) on planted
errors, eval/tide.py's per-image AP loss, and Evaluator.evaluate(outDir=...) writing them."""
import os

import cv2
import numpy as np
import pytest

from engine.evaluator import Evaluator
from engine.gallery import writeErrorGallery
from eval.tide import MAIN_ERRORS, tideBreakdown
from tests.helpers import FixedOutputModel, datasetConfig, writeImage

CLASSES = ["A", "B", "C"]
DOCUMENTED_COLORS = {"Cls": (0, 0, 255), "Loc": (0, 140, 255), "Both": (203, 102, 255), "Dupe": (255, 255, 0),
                     "Bkg": (0, 230, 230), "Miss": (255, 64, 0)}  # BGR, as engine/gallery.py's docstring states
SHAPE = (600, 640)  # (h, w): drawBox lines 2 px thick
BOXES = [(40, 40, 200, 200), (240, 40, 400, 200), (440, 40, 600, 200)]
LOC_GT, LOC_PRED = (40, 440, 160, 560), (100, 470, 220, 590)  # IoU 5,400 / 23,400 = 0.23: Loc
CLEAN = [(0, 60, 300, 180, 420), (1, 240, 300, 380, 420), (2, 420, 300, 560, 420)]  # (class, box) found well


def plantedSet():
    """Six images: 0 cls_big (three A objects found as B, scores 0.9-0.8), 1 cls_small (one A found as B at 0.3),
    2 loc (a B found at IoU 0.23), 3 miss (two C objects nothing finds), 4 bkg (an A detection at 0.95 on nothing),
    5 clean. Every image also holds the three CLEAN objects, each found exactly (score 0.5-0.7).
    -> preds (P, 7), gts (G, 6), stems."""
    stems = ["cls_big", "cls_small", "loc", "miss", "bkg", "clean"]
    gts, preds = [], []
    for i in range(len(stems)):
        for k, (c, *box) in enumerate(CLEAN):
            gts.append([i, c] + box)
            preds.append([i, c, 0.7 - 0.1 * k] + box)
    for box, score in zip(BOXES, (0.9, 0.85, 0.8)):
        gts.append([0, 0] + list(box))
        preds.append([0, 1, score] + list(box))
    gts.append([1, 0] + list(BOXES[0]))
    preds.append([1, 1, 0.3] + list(BOXES[0]))
    gts.append([2, 1] + list(LOC_GT))
    preds.append([2, 1, 0.75] + list(LOC_PRED))
    gts += [[3, 2] + list(BOXES[0]), [3, 2] + list(BOXES[1])]
    preds.append([4, 0, 0.95] + list(BOXES[2]))  # nothing near: Bkg
    return np.array(preds, np.float64), np.array(gts, np.float64), stems


def writeImages(folder, stems):
    os.makedirs(folder, exist_ok=True)
    paths = {}
    for i, stem in enumerate(stems):
        paths[i] = os.path.join(folder, stem + ".jpg")
        cv2.imwrite(paths[i], np.full(SHAPE + (3,), 100, np.uint8))
    return paths


def nearestKind(pixel):
    return min(DOCUMENTED_COLORS, key=lambda k: float(np.abs(np.asarray(DOCUMENTED_COLORS[k], float) - pixel).sum()))


def test_planted_errors_rank_paint_and_files(tmp_path):
    preds, gts, stems = plantedSet()
    paths = writeImages(str(tmp_path / "images"), stems)
    tide = tideBreakdown(preds, gts, len(CLASSES), perImage=True)
    assert tide["counts"] == dict(Cls=4, Loc=1, Both=0, Dupe=0, Bkg=1, Miss=2)
    out = str(tmp_path / "eval")
    ranked = writeErrorGallery(out, tide, preds, gts, paths, CLASSES)

    order = {kind: [image for image, _ in ranked[kind]] for kind in MAIN_ERRORS}
    assert order == dict(Cls=[0, 1], Loc=[2], Both=[], Dupe=[], Bkg=[4], Miss=[3])
    assert ranked["Cls"][0][1] > ranked["Cls"][1][1] > 0  # three confident confusions cost more than one weak one
    for kind in ("Loc", "Bkg", "Miss"):
        assert ranked[kind][0][1] > 0
    for kind in MAIN_ERRORS:
        listed = sorted(f for f in os.listdir(os.path.join(out, "errors", kind)))
        assert listed == ["{:02d}_{}.jpg".format(r, stems[i]) for r, i in enumerate(order[kind], 1)], kind
        for name in listed:
            assert cv2.imread(os.path.join(out, "errors", kind, name)).shape == SHAPE + (3,)
        assert cv2.imread(os.path.join(out, "errors", kind + ".jpg")) is not None
    assert cv2.imread(os.path.join(out, "errors.png")) is not None

    # the kind's colour on a planted box's left edge (mid-height, away from the label)
    def edge(kind, fileName, box):
        image = cv2.imread(os.path.join(out, "errors", kind, fileName)).astype(float)
        return image[(box[1] + box[3]) // 2, box[0]]
    for kind, fileName, box in (("Cls", "01_cls_big.jpg", BOXES[1]), ("Cls", "02_cls_small.jpg", BOXES[0]),
                                ("Loc", "01_loc.jpg", LOC_PRED), ("Miss", "01_miss.jpg", BOXES[1]),
                                ("Bkg", "01_bkg.jpg", BOXES[2])):
        assert nearestKind(edge(kind, fileName, box)) == kind, (kind, fileName, edge(kind, fileName, box))

    # a second run with fewer images removes the earlier ranked files
    writeErrorGallery(out, tide, preds, gts, paths, CLASSES, numImages=1)
    assert os.listdir(os.path.join(out, "errors", "Cls")) == ["01_cls_big.jpg"]


@pytest.mark.parametrize("seed", range(40))
def test_image_loss_is_the_kinds_dap_when_one_image_holds_them(seed):
    """imageLoss (mAP with one image's errors of a kind fixed - mAP) equals the kind's dAP (TIDE's fix of all of that
    kind's errors, tested against tidecv in test_tide.py) whenever one image holds all of them; adding perImage
    changes no other number."""
    rng = np.random.default_rng(seed)
    preds, gts = [], []
    for i in range(4):
        xy = rng.uniform(0, 200, (4, 2))
        g = np.c_[np.full(4, i), rng.integers(0, 3, 4), xy, xy + rng.uniform(10, 60, (4, 2))]
        pick = rng.integers(0, 4, 10)
        cls = np.where(rng.random(10) < 0.7, g[pick, 1], rng.integers(0, 3, 10))
        preds.append(np.c_[np.full(10, i), cls, rng.random(10), g[pick, 2:] + rng.normal(0, 8, (10, 4))])
        gts.append(g)
    preds, gts = np.concatenate(preds), np.concatenate(gts)
    ignore = rng.random(len(gts)) < 0.15
    plain = tideBreakdown(preds, gts, 3, ignore)
    tide = tideBreakdown(preds, gts, 3, ignore, perImage=True)
    assert tide["mAP"] == plain["mAP"] and tide["dAP"] == plain["dAP"]
    for kind in MAIN_ERRORS:
        images, loss = tide["imageLoss"][kind]
        imagesWithKind = (np.unique(preds[tide["predError"] == kind, 0]) if kind != "Miss" else
                          np.unique(gts[tide["gtMissed"], 0]))
        np.testing.assert_array_equal(images, imagesWithKind.astype(int))
        if len(images) == 1:
            assert max(loss[0], 0.0) == pytest.approx(tide["dAP"][kind], abs=1e-9), kind


@pytest.mark.slow
def test_evaluate_writes_the_gallery(tmp_path):
    root = str(tmp_path / "data")
    shapes = {"a.jpg": (64, 64), "b.jpg": (96, 160), "c.jpg": (120, 48)}
    for fileName, shape in shapes.items():
        writeImage(root, fileName, [("A", 2, 2, 30, 30), ("B", 20, 10, 44, 40)], shape=shape)
    mcfg = datasetConfig(root, list(shapes))
    out = str(tmp_path / "eval")
    result = Evaluator(mcfg).evaluate(FixedOutputModel(mcfg), "train", outDir=out)
    assert os.path.isfile(os.path.join(out, "errors.png"))
    stems = [os.path.splitext(f)[0] for f in shapes]
    listedAny = False
    for kind in MAIN_ERRORS:
        assert os.path.isfile(os.path.join(out, "errors", kind + ".jpg"))
        images, loss = result["errors"]["imageLoss"][kind]
        listed = sorted(os.listdir(os.path.join(out, "errors", kind)))
        assert len(listed) == min(len(images), 12)
        for name in listed:
            stem = name[3:-4]
            assert stem in stems
            assert cv2.imread(os.path.join(out, "errors", kind, name)).shape[:2] == shapes[stem + ".jpg"]
        listedAny = listedAny or bool(listed)
    assert listedAny
