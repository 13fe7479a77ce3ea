"""The worst images for each kind of TIDE error (eval/tide.py), written by -eval next to errors.csv:

    <outDir>/errors/<kind>/NN_<stem>.jpg   the GALLERY_IMAGES images that lose the most AP to that kind, rank NN from
                                           01 (worst); the original image at its own size, painted with that kind's
                                           errors in the kind's colour (ground truths of the image in purple)
    <outDir>/errors/<kind>.jpg             contact sheet: the kind's gallery as thumbnails, a title and the legend
    <outDir>/errors.png                    bar chart of dAP per kind, overall and for the classes that lose the most

kinds: Cls, Loc, Both, Dupe, Bkg, Miss. "AP lost to kind k in image i" is exact: tideBreakdown(perImage=True)'s
imageLoss, the mAP with only image i's errors of kind k fixed (TIDE's fix for k) minus the mAP, in AP points; images
with no error of that kind are not listed, ties keep image order.

Labels (class names from classList): Cls "cls <predicted> on <true> <score>" (predicted <predicted> on a <true>
object), Loc "loc <class> IoU <iou with its target> <score>", Both "both <class> <score>", Dupe "dupe <class> <score>",
Bkg "background <class> <score>", Miss "missed <class>" (on the gt box).
Colours (KIND_COLORS, BGR, one per kind in every picture; legend on each contact sheet): Cls red (0, 0, 255), Loc
orange (0, 140, 255), Both pink (203, 102, 255), Dupe cyan (255, 255, 0), Bkg yellow (0, 230, 230), Miss blue
(255, 64, 0); ground truths purple (inference/painter.py GT_COLOR).
"""
import os
import re

import cv2
import numpy as np
import torch

from eval.tide import MAIN_ERRORS, SPECIAL_ERRORS
from inference.painter import GT_COLOR, drawBox
from misc.bbox import boxIou
from misc.figure import newFigure
from misc.files import atomicWrite
from misc.img import imreadBgr

GALLERY_IMAGES = 12  # images per kind
KIND_COLORS = {  # BGR, the same in every picture
    "Cls": (0, 0, 255),  # red
    "Loc": (0, 140, 255),  # orange
    "Both": (203, 102, 255),  # pink
    "Dupe": (255, 255, 0),  # cyan
    "Bkg": (0, 230, 230),  # yellow
    "Miss": (255, 64, 0),  # blue
}
THUMB_WIDTH, SHEET_COLUMNS = 240, 4
_RANKED = re.compile(r"^\d\d+_.*\.jpg$")


def _name(classList, c):
    c = int(c)
    return classList[c] if 0 <= c < len(classList) else str(c)


def rankImages(tide, kind, numImages=GALLERY_IMAGES):
    """[(imageIndex, loss)] of the numImages images losing the most AP to kind, worst first (tide from
    tideBreakdown(..., perImage=True))."""
    images, loss = tide["imageLoss"][kind]
    order = np.argsort(-loss, kind="stable")[:numImages]
    return [(int(images[i]), float(loss[i])) for i in order]


def paintErrors(imageBgr, kind, image, tide, preds, gts, classList):
    """A copy of imageBgr with image's errors of kind painted in KIND_COLORS[kind] (its gts in purple underneath)."""
    painted = np.ascontiguousarray(imageBgr.copy())
    color = KIND_COLORS[kind]
    mineGt = np.nonzero(gts[:, 0] == image)[0]
    if kind == "Miss":
        for g in mineGt:
            if not tide["gtMissed"][g]:
                drawBox(painted, gts[g, 2:6], GT_COLOR)
        for g in mineGt[tide["gtMissed"][mineGt]]:
            drawBox(painted, gts[g, 2:6], color, "missed {}".format(_name(classList, gts[g, 1])))
        return painted
    for g in mineGt:
        drawBox(painted, gts[g, 2:6], GT_COLOR)
    errors = np.nonzero((preds[:, 0] == image) & (tide["predError"] == kind))[0]
    for p in errors[np.argsort(preds[errors, 2], kind="stable")]:  # highest score drawn last, on top
        name, score, target = _name(classList, preds[p, 1]), preds[p, 2], tide["predTarget"][p]
        if kind == "Cls":
            label = "cls {} on {} {:.2f}".format(name, _name(classList, gts[target, 1]), score)
        elif kind == "Loc":
            label = "loc {} IoU {:.2f} {:.2f}".format(name, float(boxIou(torch.as_tensor(preds[p, 3:7]), torch.as_tensor(gts[target, 2:6]))), score)
        else:
            label = "{} {} {:.2f}".format({"Both": "both", "Dupe": "dupe", "Bkg": "background"}[kind], name, score)
        drawBox(painted, preds[p, 3:7], color, label)
    return painted


def _writeJpg(path, image):
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok, path
    atomicWrite(path, lambda f: f.write(data.tobytes()))


def _legend(width):
    """A band (h, width, 3) naming each kind in its colour."""
    band = np.full((28, width, 3), 255, np.uint8)
    x = 6
    for kind in MAIN_ERRORS:
        cv2.rectangle(band, (x, 8), (x + 14, 20), KIND_COLORS[kind], -1)
        cv2.putText(band, kind, (x + 18, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        x += 30 + cv2.getTextSize(kind, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)[0][0]
    cv2.putText(band, "GT", (x + 18, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.rectangle(band, (x, 8), (x + 14, 20), GT_COLOR, -1)
    return band


def _contactSheet(kind, entries, path):
    """entries: [(painted image, caption)] -> a grid of thumbnails under a title and the legend."""
    cells = []
    for image, caption in entries:
        h, w = image.shape[:2]
        height = max(1, int(round(h * THUMB_WIDTH / w)))
        thumb = cv2.resize(image, (THUMB_WIDTH, height), interpolation=cv2.INTER_AREA)
        cell = np.full((height + 20, THUMB_WIDTH, 3), 255, np.uint8)
        cell[20:] = thumb
        cv2.putText(cell, caption[:38], (2, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        cells.append(cell)
    columns = max(1, min(SHEET_COLUMNS, len(cells)))
    width = max(columns * (THUMB_WIDTH + 4) + 4, 520)
    rows = []
    for start in range(0, len(cells), columns):
        row = cells[start:start + columns]
        rowHeight = max(c.shape[0] for c in row)
        band = np.full((rowHeight + 4, width, 3), 255, np.uint8)
        for i, cell in enumerate(row):
            x = 4 + i * (THUMB_WIDTH + 4)
            band[4:4 + cell.shape[0], x:x + THUMB_WIDTH] = cell
        rows.append(band)
    title = np.full((30, width, 3), 255, np.uint8)
    text = "{}: the {} images losing the most AP50 points".format(kind, len(entries)) if entries else \
        "{}: no image has this error".format(kind)
    cv2.putText(title, text, (6, 21), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    _writeJpg(path, np.concatenate([title, _legend(width)] + rows))


def writeErrorSummary(tide, classList, path, worstClasses=5):
    """errors.png: dAP per kind (six main, two special) overall, and the main kinds for the worstClasses classes with
    the largest total main dAP (per-class dAP clamped at 0 for the ranking and the bars)."""
    kinds = MAIN_ERRORS + SPECIAL_ERRORS
    figure = newFigure((12, 4.5))
    axes = figure.add_subplot(1, 2, 1)
    values = [tide["dAP"][k] for k in kinds]
    colors = [tuple(v / 255 for v in KIND_COLORS[k][::-1]) if k in KIND_COLORS else (0.5, 0.5, 0.5) for k in kinds]
    axes.bar(range(len(kinds)), values, color=colors, edgecolor="black", linewidth=0.5)
    axes.set_xticks(range(len(kinds)), kinds, rotation=30)
    axes.set_ylabel("dAP (AP50 points)")
    axes.set_title("all classes, mAP50 {:.2f}".format(tide["mAP"]))
    per = np.stack([np.nan_to_num(np.clip(tide["perClassDAp"][k], 0, None)) for k in MAIN_ERRORS])  # (6, nc)
    worst = [c for c in np.argsort(-per.sum(0), kind="stable")[:worstClasses] if per[:, c].sum() > 0]
    axes = figure.add_subplot(1, 2, 2)
    width = 0.8 / len(MAIN_ERRORS)
    for k, kind in enumerate(MAIN_ERRORS):
        axes.bar(np.arange(len(worst)) + (k - 2.5) * width, per[k, worst], width,
                 color=tuple(v / 255 for v in KIND_COLORS[kind][::-1]), label=kind)
    axes.set_xticks(range(len(worst)), [_name(classList, c) for c in worst])
    axes.set_ylabel("class dAP (AP50 points)")
    axes.set_title("the {} classes losing the most".format(len(worst)))
    axes.legend(fontsize="small")
    atomicWrite(path, lambda f: figure.savefig(f, format="png", dpi=100, bbox_inches="tight"))


def writeErrorGallery(outDir, tide, preds, gts, imagePaths, classList, numImages=GALLERY_IMAGES):
    """Write <outDir>/errors/<kind>/, <outDir>/errors/<kind>.jpg and <outDir>/errors.png (module docstring).

    tide: tideBreakdown(preds, gts, nc, gtIgnore, perImage=True); preds (P, 7), gts (G, 6) the same rows (numpy or
    torch); imagePaths: {imageIndex: path of the original image}. Earlier ranked files in errors/<kind>/ are removed.
    Returns {kind: [(imageIndex, loss)]} as ranked."""
    preds = preds.detach().cpu().double().numpy() if hasattr(preds, "detach") else np.asarray(preds, np.float64)
    gts = gts.detach().cpu().double().numpy() if hasattr(gts, "detach") else np.asarray(gts, np.float64)
    preds, gts = preds.reshape(-1, 7), gts.reshape(-1, 6)
    root = os.path.join(outDir, "errors")
    ranked = {}
    for kind in MAIN_ERRORS:
        folder = os.path.join(root, kind)
        os.makedirs(folder, exist_ok=True)
        for old in os.listdir(folder):
            if _RANKED.match(old):
                os.remove(os.path.join(folder, old))
        ranked[kind] = rankImages(tide, kind, numImages)
        entries = []
        for rank, (image, loss) in enumerate(ranked[kind], 1):
            path = imagePaths[image]
            painted = paintErrors(imreadBgr(path), kind, image, tide, preds, gts, classList)
            stem = os.path.splitext(os.path.basename(path))[0]
            _writeJpg(os.path.join(folder, "{:02d}_{}.jpg".format(rank, stem)), painted)
            entries.append((painted, "{:02d} {} -{:.2f} AP".format(rank, stem, loss)))
        _contactSheet(kind, entries, os.path.join(root, kind + ".jpg"))
    writeErrorSummary(tide, classList, os.path.join(outDir, "errors.png"))
    return ranked
