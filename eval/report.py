"""Evaluation outputs: the per-class table (text and CSV), precision-recall curves and confusion matrix.

`result` is the dict returned by eval.map.computeMap. APs are fractions in [0, 1]; "AP50 VOC" is
all-point interpolated at IoU 0.5 (the headline mAP50), "AP50 COCO" and "AP50:95" are pycocotools-style
101-point interpolated with at most 100 detections per image and class. Plots use matplotlib's Agg
canvas directly (no pyplot, no global backend switch).
"""

import csv
import io
import os

from eval.tide import MAIN_ERRORS, SPECIAL_ERRORS
from misc.figure import newFigure
from misc.files import atomicWrite

TABLE_COLUMNS = ("class", "numGt", "precision", "recall", "AP50 VOC", "AP50 COCO", "AP50:95")


def _checkClassList(result, classList):
    numClasses = result["numGt"].shape[0]
    if len(classList) != numClasses:
        raise ValueError(f"classList has {len(classList)} names but the result has {numClasses} classes: {list(classList)}")


def _tableRows(result, classList):
    """Rows (name, numGt, precision, recall, ap50Voc, ap50Coco, ap5095), None for values without gt; "all" last."""
    hasGt = result["hasGt"]
    pr = result["prAtThreshold"]
    rows = []
    for classIndex, name in enumerate(classList):
        values = [pr["precision"][classIndex], pr["recall"][classIndex], result["ap50Voc"][classIndex],
                  result["ap50Coco"][classIndex], result["ap5095"][classIndex]]
        values = [float(v) for v in values] if hasGt[classIndex] else [None] * 5
        rows.append([name, int(result["numGt"][classIndex])] + values)
    if bool(hasGt.any()):
        meanPrecision = float(pr["precision"][hasGt].mean())
        meanRecall = float(pr["recall"][hasGt].mean())
        allValues = [meanPrecision, meanRecall, result["mAP50"], result["mAP50Coco"], result["mAP5095"]]
    else:
        allValues = [None] * 5
    rows.append(["all", int(result["numGt"].sum())] + allValues)
    return rows


def formatTable(result, classList):
    """Fixed-width per-class table; classes without ground truth show "no gt" and are left out of "all".

    The last line is `mAP50=<VOC all-point> mAP50-95=<COCO 101-point>`, 3 decimals.
    """
    _checkClassList(result, classList)
    nameWidth = max([len(str(name)) for name in classList] + [len("class")])
    header = f"{TABLE_COLUMNS[0]:<{nameWidth}} {TABLE_COLUMNS[1]:>6}" + "".join(f" {c:>10}" for c in TABLE_COLUMNS[2:])
    lines = [header]
    for row in _tableRows(result, classList):
        line = f"{row[0]:<{nameWidth}} {row[1]:>6d}"
        if row[2] is None:
            line += f" {'no gt':>10}"
        else:
            line += "".join(f" {value:>10.3f}" for value in row[2:])
        lines.append(line)
    lines.append(f"precision/recall at score >= {result['prAtThreshold']['scoreThreshold']:g}, IoU 0.5; "
                 "AP50 VOC: all-point; AP50 COCO, AP50:95: 101-point, <= 100 dets per image and class")
    lines.append(f"mAP50={result['mAP50']:.3f} mAP50-95={result['mAP5095']:.3f}")
    return "\n".join(lines)


def _writeCsv(result, classList, path):
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(TABLE_COLUMNS)
    for row in _tableRows(result, classList):
        writer.writerow(row[:2] + ["" if value is None else f"{value:.6f}" for value in row[2:]])
    atomicWrite(path, lambda f: f.write(text.getvalue().encode()))


def _writePrCurves(result, classList, path):
    figure = newFigure((8, 6))
    axes = figure.add_subplot()
    for classIndex, name in enumerate(classList):
        if not result["hasGt"][classIndex]:
            continue
        recall = result["recall"][classIndex].numpy()
        precision = result["precision"][classIndex].numpy()
        label = f"{name} {float(result['ap50Voc'][classIndex]):.3f}"
        axes.plot(recall, precision, linewidth=1, label=label)
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.02)
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.set_title(f"precision-recall at IoU 0.5, mAP50 (VOC) = {result['mAP50']:.3f}")
    if axes.lines:
        axes.legend(fontsize="x-small", ncol=2, loc="lower left")
    figure.savefig(path, dpi=150, bbox_inches="tight")


def writeReport(result, classList, outDir):
    """Writes outDir/map_table.csv and outDir/pr_curve.png; returns formatTable(result, classList).

    CSV columns: TABLE_COLUMNS, one row per class then "all" (mean over classes with gt, numGt summed);
    values of a class without ground truth are empty.
    """
    _checkClassList(result, classList)
    os.makedirs(outDir, exist_ok=True)
    _writeCsv(result, classList, os.path.join(outDir, "map_table.csv"))
    _writePrCurves(result, classList, os.path.join(outDir, "pr_curve.png"))
    return formatTable(result, classList)


def writeConfusionMatrix(matrix, classList, path):
    """Saves the confusion matrix of eval.map.confusionMatrix as a PNG image.

    Args:
        matrix: (nc + 1, nc + 1) counts, rows = predicted class, columns = true class, last row and column
            "background" (last row: missed gts, last column: false positives). Difficult (ignored) gts are in
            neither: they are never missed, and a detection on one is dropped, not a false positive (the rule
            of eval.map.confusionMatrix, which follows the AP's).
        classList: nc class names.
        path: output .png path.
    Each column is divided by its sum (fraction of each true class predicted as each row); cells are
    annotated with that fraction, empty cells are left blank.
    """
    numLabels = matrix.shape[0]
    if len(classList) + 1 != numLabels:
        raise ValueError(f"classList has {len(classList)} names but the matrix is {tuple(matrix.shape)}: {list(classList)}")
    counts = matrix.double()
    normalised = (counts / counts.sum(0, keepdim=True).clamp(min=1)).numpy()  # (nc + 1, nc + 1)
    labels = list(classList) + ["background"]
    size = max(6.0, 0.45 * numLabels + 2)
    figure = newFigure((size, size))
    axes = figure.add_subplot()
    image = axes.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    fontSize = 8 if numLabels <= 12 else 5
    for row in range(numLabels):
        for column in range(numLabels):
            if counts[row, column] > 0:
                value = normalised[row, column]
                axes.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=fontSize,
                          color="white" if value > 0.5 else "black")
    axes.set_xticks(range(numLabels), labels, rotation=90, fontsize=fontSize + 1)
    axes.set_yticks(range(numLabels), labels, fontsize=fontSize + 1)
    axes.set_xlabel("true class")
    axes.set_ylabel("predicted class")
    axes.set_title("confusion matrix (columns normalised)")
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    figure.savefig(path, dpi=150, bbox_inches="tight")


def errorLine(tide):
    """The overall TIDE line printed under the mAP table: dAP of each main and special error, in AP points."""
    main = " ".join("{}={:.2f}".format(k, tide["dAP"][k]) for k in MAIN_ERRORS)
    special = " ".join("{}={:.2f}".format(k, tide["dAP"][k]) for k in SPECIAL_ERRORS)
    return "errors (TIDE dAP, AP50 points lost; mAP50 {:.2f}): {} | {}".format(tide["mAP"], main, special)


def writeErrors(tide, classList, path):
    """errors.csv: TIDE's breakdown (eval/tide.py) per class and overall (row "all"): the class's AP50 as TIDE counts
    it, then the AP points each kind of error costs (dAP: Cls, Loc, Both, Dupe, Bkg, Miss, FalsePos, FalseNeg) and the
    number of errors of each main kind (overall row only; per class blank). Classes TIDE leaves out of its mean (no
    detection and no ground truth) have empty cells."""
    kinds = MAIN_ERRORS + SPECIAL_ERRORS
    header = ["class", "AP50"] + ["dAP " + k for k in kinds] + ["count " + k for k in MAIN_ERRORS]
    rows = [["all", tide["mAP"]] + [tide["dAP"][k] for k in kinds] + [tide["counts"][k] for k in MAIN_ERRORS]]
    for c, name in enumerate(classList):
        ap = tide["perClassAp"][c]
        cells = [ap] + [tide["perClassDAp"][k][c] for k in kinds]
        rows.append([name] + ["" if v != v else v for v in cells] + [""] * len(MAIN_ERRORS))  # NaN: left out

    def write(f):
        text = io.StringIO()
        writer = csv.writer(text)
        writer.writerow(header)
        for row in rows:
            writer.writerow([repr(float(v)) if isinstance(v, float) else v for v in row])
        f.write(text.getvalue().encode())
    atomicWrite(path, write)
