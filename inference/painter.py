"""Draw ground truth, true positives and false positives on images (BGR, original-image pixels)."""
import cv2
import numpy as np

GT_COLOR = (128, 0, 128)  # purple
TP_COLOR = (0, 200, 0)  # green
FP_COLOR = (0, 220, 255)  # yellow


def drawBox(image, boxXyxy, color, label=None):
    h, w = image.shape[:2]
    thickness = max(1, round(min(h, w) / 300))
    x0, y0, x1, y1 = [int(round(float(v))) for v in boxXyxy]
    cv2.rectangle(image, (x0, y0), (x1, y1), color, thickness)
    if label:
        scale = max(0.35, min(h, w) / 900)
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        ty = y0 - 2 if y0 - th - base - 2 >= 0 else min(y1 + th + 2, h - base)
        cv2.rectangle(image, (x0, ty - th - base), (x0 + tw, ty + base), color, -1)
        cv2.putText(image, label, (x0, ty), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)


def paintImage(imageBgr, classList, gtRows=None, predRows=None, predIsTp=None):
    """Return a painted copy of imageBgr (H, W, 3) uint8.

    gtRows: (m, 5) classIndex, x0, y0, x1, y1 (purple, drawn first); predRows: (n, 6) classIndex, score, x0, y0, x1, y1;
    predIsTp: (n,) bool, green when true, yellow when false. Without predIsTp (prediction mode, nothing to judge
    against) every prediction is green.
    """
    image = np.ascontiguousarray(imageBgr.copy())
    if gtRows is not None:
        for row in np.asarray(gtRows, dtype=np.float64).reshape(-1, 5):
            drawBox(image, row[1:5], GT_COLOR)
    if predRows is not None:
        preds = np.asarray(predRows, dtype=np.float64).reshape(-1, 6)
        flags = np.asarray(predIsTp, dtype=bool) if predIsTp is not None else np.ones(len(preds), dtype=bool)
        for row, isTp in zip(preds, flags):
            name = classList[int(row[0])] if int(row[0]) < len(classList) else str(int(row[0]))
            drawBox(image, row[2:6], TP_COLOR if isTp else FP_COLOR, "{} {:.2f}".format(name, row[1]))
    return image
