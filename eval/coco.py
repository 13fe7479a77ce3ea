"""The evaluation's inputs in COCO's exchange format: detections.json (the results list COCO.loadRes reads) and
groundtruth.json (the annotation file COCO() reads), so pycocotools or any COCO tool can recompute the mAP.

Ids (all 1-based, as the COCO data sets; pycocotools' COCOeval takes an annotation id of 0 for "unmatched"):
    image_id    = dataset index + 1 (the meta's "index"; images keep the split's order),
    category_id = class index + 1 (categories list every class of classList, with and without ground truth),
    annotation id = 1..G in the evaluator's ground-truth order.
Boxes are [x, y, w, h] in original-image pixels, the very boxes the evaluator's mAP used (full float precision, no
rounding: x + w gives back x1); area = w * h; segmentation = the box as one polygon (VOC has no masks; tools
such as tidecv read the field); iscrowd = 1 for the ignored ground truths (VOC difficult, the
evaluator's gtIgnore), which pycocotools treats as the evaluator does. Every detection the mAP was computed from is
written (all scores above the NMS threshold, not only those above reportScoreThreshold).
"""
import json
import os

import numpy as np
import torch

from misc.files import atomicWrite


def _xywh(boxesXyxy):
    """(n, 4) xyxy -> (n, 4) float64 numpy xywh."""
    boxes = np.asarray(boxesXyxy, dtype=np.float64).reshape(-1, 4).copy()
    boxes[:, 2:] -= boxes[:, :2]
    return boxes


def cocoDetections(preds):
    """preds (P, 7) rows (imageIndex, classIndex, score, x0, y0, x1, y1) -> the COCO results list, in row order."""
    preds = torch.as_tensor(preds).detach().cpu().double().numpy().reshape(-1, 7)
    imageIds = (preds[:, 0].astype(np.int64) + 1).tolist()
    categoryIds = (preds[:, 1].astype(np.int64) + 1).tolist()
    return [{"image_id": i, "category_id": c, "bbox": b, "score": s}
            for i, c, b, s in zip(imageIds, categoryIds, _xywh(preds[:, 3:]).tolist(), preds[:, 2].tolist())]


def cocoGroundTruth(gts, gtIgnore, images, classList):
    """gts (G, 6) rows (imageIndex, classIndex, x0, y0, x1, y1), gtIgnore (G,) bool, images [(index, fileName, width,
    height)] -> the COCO annotation dict (images, categories, annotations)."""
    gts = torch.as_tensor(gts).detach().cpu().double().numpy().reshape(-1, 6)
    ignore = np.asarray(torch.as_tensor(gtIgnore, dtype=torch.bool).cpu()).reshape(-1)
    assert ignore.shape[0] == gts.shape[0], (ignore.shape, gts.shape)
    boxes = _xywh(gts[:, 2:])
    areas = (boxes[:, 2] * boxes[:, 3]).tolist()
    imageIds = (gts[:, 0].astype(np.int64) + 1).tolist()
    categoryIds = (gts[:, 1].astype(np.int64) + 1).tolist()
    corners = gts[:, [2, 3, 4, 3, 4, 5, 2, 5]].tolist()  # the box as a polygon (VOC has no masks)
    annotations = [{"id": n + 1, "image_id": i, "category_id": c, "bbox": b, "area": a, "iscrowd": k,
                    "segmentation": [p]}
                   for n, (i, c, b, a, k, p) in enumerate(zip(imageIds, categoryIds, boxes.tolist(), areas,
                                                              ignore.astype(int).tolist(), corners))]
    return {
        "images": [{"id": int(index) + 1, "file_name": fileName, "width": int(width), "height": int(height)}
                   for index, fileName, width, height in images],
        "categories": [{"id": c + 1, "name": name} for c, name in enumerate(classList)],
        "annotations": annotations,
    }


def writeCocoFiles(outDir, preds, gts, gtIgnore, images, classList):
    """Write outDir/detections.json and outDir/groundtruth.json atomically (see the module docstring); returns their
    paths."""
    files = {os.path.join(outDir, "detections.json"): cocoDetections(preds),
             os.path.join(outDir, "groundtruth.json"): cocoGroundTruth(gts, gtIgnore, images, classList)}
    for path, content in files.items():
        text = json.dumps(content, separators=(",", ":")).encode()
        atomicWrite(path, lambda f, text=text: f.write(text))
    return list(files)
