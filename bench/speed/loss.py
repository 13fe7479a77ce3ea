"""Speed of the training loss (TaskAlignedAssigner + CIoU/BCE/DFL) against Ultralytics' v8DetectionLoss.

    python -m bench.speed.loss [--sizes 320,640] [--batch 16] [--classes 20] [--boxes 0,12] [--repeats 30] [--threads 0]

Both losses get the same head outputs (random logits of a nano model's shape at each input size, requires_grad) and
the same targets (0..12 boxes per image, sides 1.25%..31% of the input: 8..200 px at 640, as Mars collate rows and as
Ultralytics' batch dict).
Two rows per size: "forward" is the assigner + loss value (the assigner + loss time per batch);
"forward + backward" adds the gradient back to the head outputs. Times are medians per batch. Target: Mars <= 1.0x
Ultralytics' time (ratio >= 1).
"""
import torch

from bench.common import (alternate, baseParser, marsTargetsToReference, median, modelConfig, printTable,
                       referenceModel, setup)

REG_MAX = 16
STRIDES = (8, 16, 32)


def randomTargets(batch, boxRange, nc, generator):
    """Mars collate rows (N, 6): (imageIndex, classIndex, x0, y0, x1, y1) normalised; sides 8..200 px at 640."""
    rows = []
    for image in range(batch):
        n = int(torch.randint(boxRange[0], boxRange[1] + 1, (1,), generator=generator))
        wh = (torch.rand(n, 2, generator=generator) * 192 + 8) / 640
        xy = torch.rand(n, 2, generator=generator) * (1 - wh)
        cls = torch.randint(0, nc, (n, 1), generator=generator).float()
        rows.append(torch.cat([torch.full((n, 1), float(image)), cls, xy, xy + wh], 1))
    return torch.cat(rows)


def main(argv=None):
    parser = baseParser(__doc__, repeats=30, warmup=3)
    parser.add_argument("--sizes", default="320,640", help="input sizes, pixels, comma-separated")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--boxes", default="0,12", help="min,max boxes per image")
    args = parser.parse_args(argv)
    setup(args, "bench/speed/loss.py")
    from ultralytics.utils.loss import v8DetectionLoss

    from model.base.yolomodel import YoloModel
    from train.loss import DetectionLoss

    nc, B = args.classes, args.batch
    boxRange = tuple(int(v) for v in args.boxes.split(","))
    ref = referenceModel(nc)
    refLoss = v8DetectionLoss(ref)
    rows, cpuRows = [], []
    for size in (int(s) for s in args.sizes.split(",")):
        mcfg = modelConfig(nc, (size, size))
        oursLoss = DetectionLoss(mcfg, YoloModel(mcfg))
        generator = torch.Generator().manual_seed(size)
        preds = [(torch.randn(B, 4 * REG_MAX + nc, size // s, size // s, generator=generator) * 2).requires_grad_()
                 for s in STRIDES]
        targets = randomTargets(B, boxRange, nc, generator)
        batch = marsTargetsToReference(targets)

        def refPreds():
            """Ultralytics' Detect output dict; its head concatenates the levels, Mars' loss does: both are timed."""
            flat = torch.cat([p.flatten(2) for p in preds], 2)  # (B, 4 * regMax + nc, A)
            return {"boxes": flat[:, :4 * REG_MAX], "scores": flat[:, 4 * REG_MAX:], "feats": preds}

        def oursForward():
            with torch.no_grad():
                oursLoss(preds, targets)

        def refForward():
            with torch.no_grad():
                refLoss(refPreds(), batch)

        def oursBackward():
            oursLoss(preds, targets).backward()

        def refBackward():
            refLoss(refPreds(), batch)[0].sum().backward()

        print("{} px: {} anchors, {} target boxes".format(size, sum((size // s) ** 2 for s in STRIDES), targets.shape[0]))
        for label, pair in (("forward", (oursForward, refForward)), ("forward + backward", (oursBackward, refBackward))):
            (o, r), (oCpu, rCpu) = alternate(list(pair), args.repeats, args.warmup)
            rows.append(("{} px {}".format(size, label), median(o), median(r)))
            cpuRows.append(("{} px {}".format(size, label), median(oCpu), median(rCpu)))
    printTable("loss time per batch of {}, wall clock (median of {}; lower is better)".format(B, args.repeats), rows,
               "ms", higherIsBetter=False)
    printTable("the same, process CPU time", cpuRows, "ms", higherIsBetter=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
