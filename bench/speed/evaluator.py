"""Speed of the mAP computation (eval/map.py computeMap) against pycocotools' COCOeval on the same predictions.

    python -m bench.speed.evaluator [--images 500] [--dets 100] [--classes 20] [--gts 1,12] [--repeats 5] [--threads 0]

A realistic prediction set: per image, 1..12 ground-truth boxes (800 x 800 px images) and exactly --dets detections:
jittered copies of the ground truth (right or wrong class, scores that follow the overlap) filled up with random
boxes of low score. Both sides start from the same numpy arrays and end with AP50 and AP50:95 (maxDets 100, area all):
    Mars:        torch.from_numpy + computeMap (which also computes VOC AP50, curves and P/R at a threshold);
    pycocotools: COCO() from the ground-truth dict + loadRes(numpy rows) + evaluate + accumulate + summarize.
The last lines give the largest |difference| between Mars' COCO AP50 / AP50:95 and pycocotools' stats[1] / stats[0]
(must be <= 1e-3). Target: Mars >= 5x faster.
"""
import numpy as np
import torch

from bench.common import alternate, baseParser, median, printTable, quietly, setup

IMAGE_SIZE = 800  # pixels, as MAR20


def makePredictionSet(numImages, detsPerImage, nc, gtRange, seed=0):
    """-> preds (P, 7) float64 (imageIndex, classIndex, score, x0, y0, x1, y1), gts (G, 6) (imageIndex, classIndex, x0, y0,
    x1, y1), pixels xyxy."""
    rng = np.random.default_rng(seed)
    predRows, gtRows = [], []
    for image in range(numImages):
        n = int(rng.integers(gtRange[0], gtRange[1] + 1))
        wh = rng.uniform(20, 120, (n, 2))
        xy = rng.uniform(0, IMAGE_SIZE - 120, (n, 2))
        gtBoxes = np.concatenate([xy, xy + wh], 1)
        gtClasses = rng.integers(0, nc, n)
        gtRows.append(np.column_stack([np.full(n, image), gtClasses, gtBoxes]))
        # jittered copies of the gts: 1-4 per gt, 80% with the right class
        copies = rng.integers(1, 5, n)
        source = np.repeat(np.arange(n), copies)
        k = min(len(source), detsPerImage)
        source = source[:k]
        size = gtBoxes[source, 2:] - gtBoxes[source, :2]
        jitter = rng.normal(0, 0.12, (k, 4)) * np.concatenate([size, size], 1)
        boxes = gtBoxes[source] + jitter
        quality = np.exp(-np.abs(jitter).mean(1) / size.mean(1) * 6)
        classes = np.where(rng.random(k) < 0.8, gtClasses[source], rng.integers(0, nc, k))
        scores = np.clip(quality * rng.uniform(0.5, 1.0, k), 0.001, 1.0)
        # random background boxes fill the image up to detsPerImage
        m = detsPerImage - k
        bgWh = rng.uniform(10, 150, (m, 2))
        bgXy = rng.uniform(0, IMAGE_SIZE - 150, (m, 2))
        boxes = np.concatenate([boxes, np.concatenate([bgXy, bgXy + bgWh], 1)])
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)  # well formed
        classes = np.concatenate([classes, rng.integers(0, nc, m)])
        scores = np.concatenate([scores, rng.uniform(0.001, 0.3, m)])
        predRows.append(np.column_stack([np.full(detsPerImage, image), classes, scores, boxes]))
    return np.concatenate(predRows).astype(np.float64), np.concatenate(gtRows).astype(np.float64)


def marsMap(preds, gts, nc):
    from eval.map import computeMap
    result = computeMap(torch.from_numpy(preds), torch.from_numpy(gts), nc)
    return result["mAP50Coco"], result["mAP5095"]


def cocoGroundTruth(gts, numImages, nc):
    annotations = [{"id": i + 1, "image_id": int(r[0]), "category_id": int(r[1]) + 1, "iscrowd": 0,
                    "bbox": [r[2], r[3], r[4] - r[2], r[5] - r[3]], "area": (r[4] - r[2]) * (r[5] - r[3])}
                   for i, r in enumerate(gts.tolist())]
    return {"images": [{"id": i, "width": IMAGE_SIZE, "height": IMAGE_SIZE} for i in range(numImages)],
            "categories": [{"id": c + 1, "name": str(c)} for c in range(nc)], "annotations": annotations}


def cocoMap(preds, gtDict):
    """pycocotools from the ground-truth dict and the prediction rows -> (AP50, AP50:95)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def run():
        cocoGt = COCO()
        cocoGt.dataset = gtDict
        cocoGt.createIndex()
        rows = np.column_stack([preds[:, 0], preds[:, 3], preds[:, 4], preds[:, 5] - preds[:, 3],
                                preds[:, 6] - preds[:, 4], preds[:, 2], preds[:, 1] + 1])  # (id, x, y, w, h, score, cat)
        cocoDt = cocoGt.loadRes(rows)
        evaluator = COCOeval(cocoGt, cocoDt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
        return evaluator.stats[1], evaluator.stats[0]
    return quietly(run)


def main(argv=None):
    parser = baseParser(__doc__, repeats=5, warmup=1)
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--dets", type=int, default=100, help="detections per image")
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--gts", default="1,12", help="min,max ground-truth boxes per image")
    args = parser.parse_args(argv)
    setup(args, "bench/speed/evaluator.py")
    gtRange = tuple(int(v) for v in args.gts.split(","))
    preds, gts = makePredictionSet(args.images, args.dets, args.classes, gtRange)
    gtDict = cocoGroundTruth(gts, args.images, args.classes)
    print("{} images, {} detections, {} ground truths, {} classes".format(args.images, len(preds), len(gts), args.classes))

    results = {}

    def ours():
        results["mars"] = marsMap(preds, gts, args.classes)

    def reference():
        results["coco"] = cocoMap(preds, gtDict)

    (oursWall, refWall), (oursCpu, refCpu) = alternate([ours, reference], args.repeats, args.warmup)
    printTable("time to AP50 + AP50:95 (median of {}; lower is better)".format(args.repeats),
               [("wall clock", median(oursWall), median(refWall)), ("process CPU time", median(oursCpu), median(refCpu))],
               "ms", higherIsBetter=False)
    (oursAp50, oursAp5095), (cocoAp50, cocoAp5095) = results["mars"], results["coco"]
    print("AP50 (COCO, 101-point):  Mars {:.6f}  pycocotools {:.6f}".format(oursAp50, cocoAp50))
    print("AP50:95:                 Mars {:.6f}  pycocotools {:.6f}".format(oursAp5095, cocoAp5095))
    print("max |difference| = {:.2e} (must be <= 1e-3)".format(max(abs(oursAp50 - cocoAp50), abs(oursAp5095 - cocoAp5095))))
    timeErrorBreakdown(preds, gts, args.classes, args.repeats)
    return 0


def timeErrorBreakdown(preds, gts, nc, repeats):
    """-eval's TIDE breakdown (eval/tide.py) on the same workload: median seconds, overall and with the per-image
    losses the error gallery ranks by."""
    import time
    from eval.tide import tideBreakdown
    for perImage in (False, True):
        seconds = []
        for _ in range(repeats):
            started = time.perf_counter()
            tideBreakdown(preds, gts, nc, perImage=perImage)
            seconds.append(time.perf_counter() - started)
        print("TIDE error breakdown{}: {:.3f} s (median of {})".format(
            " with per-image losses (the gallery)" if perImage else "", median(seconds), repeats))


if __name__ == "__main__":
    raise SystemExit(main())
