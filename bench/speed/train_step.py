"""Training throughput of a full step, Mars against Ultralytics' YOLOv8n, on the same batches.

    python -m bench.speed.train_step [--sizes 320,640] [--batch 16] [--repeats 5] [--warmup 2] [--threads 0]

The batches come from Mars' data loader over the built-in demo data (augmented training samples, generated under
ROOT/demo-data on first use); they are drawn before the timing, so both sides step on identical images and boxes and
the data pipeline (bench/speed/dataloader.py measures it) does not blur the figure. A step, timed from a uint8 batch in
memory to the end of the optimizer step, is for
    Mars:        Trainer.trainStep (lr schedule, uint8 -> float, forward, DetectionLoss, backward, gradient
                 clipping, device-side finiteness check, fused SGD step, EMA update) of a demo.nano trainer;
    Ultralytics: what its trainer does per batch: preprocess_batch (uint8 -> float), model.loss (forward +
                 v8DetectionLoss), loss.sum().backward(), optimizer_step (unscale, clip to 10, step, zero_grad,
                 ModelEMA update), with the SGD optimizer (3 groups, nesterov, momentum 0.937, lr 0.01, weight decay
                 5e-4 * batch / 64) that BaseTrainer.build_optimizer makes. Ultralytics accumulates gradients up to 64
                 images by default; here it steps every batch, as Mars does.
Both models are nano, 20 classes, fp32, train mode. Figures are images/s (median over --repeats steps per side,
alternating). Target: Mars >= 1.0x at both sizes.
"""
import torch

from bench.common import (alternate, baseParser, demoConfig, drawBatches, marsStepper, median, printTable,
                       referenceStepper, setup)


def main(argv=None):
    parser = baseParser(__doc__, repeats=5, warmup=2)
    parser.add_argument("--sizes", default="320,640", help="input sizes, pixels, comma-separated")
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args(argv)
    setup(args, "bench/speed/train_step.py")
    rows, cpuRows, paired = [], [], []
    for size in (int(s) for s in args.sizes.split(",")):
        mcfg = demoConfig(args.root, (size, size), args.batch, dcore=0)
        batches = drawBatches(mcfg, args.warmup + args.repeats)
        print("{} px: {} batches of {}, {:.1f} boxes per image".format(
            size, len(batches), args.batch, sum(len(t) for _, t in batches) / (len(batches) * args.batch)))
        torch.manual_seed(0)
        ours, reference = marsStepper(mcfg), referenceStepper(args.batch, mcfg.nc)
        cursor = {"ours": 0, "reference": 0}

        def run(name, stepFn):
            images, targets = batches[cursor[name] % len(batches)]
            cursor[name] += 1
            stepFn(images, targets)

        (o, r), (oCpu, rCpu) = alternate([lambda: run("ours", ours), lambda: run("reference", reference)],
                                         args.repeats, args.warmup)
        label = "{} px, batch {}".format(size, args.batch)
        rows.append((label, args.batch / median(o), args.batch / median(r)))
        cpuRows.append((label, args.batch / median(oCpu), args.batch / median(rCpu)))
        paired.append((label, sorted(b / a for a, b in zip(o, r))))  # same batch, adjacent in time
    printTable("training images/s of a full step, wall clock (median of {}; higher is better)".format(args.repeats),
               rows, "img/s", higherIsBetter=True)
    printTable("the same per second of process CPU time", cpuRows, "img/s", higherIsBetter=True)
    print()
    print("per-round ratios (reference step time / Mars step time on the same batch; the spread shows the noise):")
    for label, ratios in paired:
        print("{:<34}median {:.2f}x, min {:.2f}x, max {:.2f}x".format(label, median(ratios), ratios[0], ratios[-1]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
