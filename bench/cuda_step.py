"""The CUDA training step: Mars with and without mixed precision, against Ultralytics', on one GPU.

    python bench/cuda_step.py [--size 640] [--batch 32] [--chain 10] [--repeats 5] [--warmup 2] [--device cuda]

The same demo batches and step functions as bench/train_step.py (read its docstring), on the device: Mars'
BaseTrainer.trainStep with mcfg.amp on (bf16 where the GPU supports it, else fp16 + grad scaler; channels_last) and
off (fp32), and Ultralytics' trainer step with its amp on (fp16 autocast + grad scaler, its default on CUDA) and off.
A round runs --chain steps back to back and then waits for the GPU once, so a step that reads values on the host
(and so waits for the device) shows in the figure. It prints images/s per side (median of --repeats rounds), the
ratios, and each side's peak GPU memory. --device cpu runs the fp32 pair only (a smoke test of this script).
"""
import torch

from benchutil import alternate, baseParser, demoConfig, median, printTable, setup  # noqa: I100
from train_step import drawBatches, marsStepper, referenceStepper


def synchronize(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def peakMemory(stepFn, batches, device):
    """Peak GPU memory (GiB) of one chain of steps (0 on the CPU)."""
    if not device.startswith("cuda"):
        return 0.0
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    for images, targets in batches:
        stepFn(images, targets)
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2 ** 30


def main(argv=None):
    parser = baseParser(__doc__, repeats=5, warmup=2)
    parser.add_argument("--size", type=int, default=640, help="input size, pixels")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--chain", type=int, default=10, help="steps per timed round (one device wait per round)")
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args(argv)
    setup(args, "bench/cuda_step.py")
    cuda = args.device.startswith("cuda")
    if cuda:
        print("device: {}, bf16 supported: {}".format(torch.cuda.get_device_name(), torch.cuda.is_bf16_supported()))
    shape = (args.size, args.size)
    configs = {amp: demoConfig(args.root, shape, args.batch, dcore=0, device=args.device, amp=amp)
               for amp in ((True, False) if cuda else (False,))}
    batches = drawBatches(configs[False], args.chain)
    torch.manual_seed(0)
    sides = {}
    for amp in configs:
        name = "AMP" if amp else "fp32"
        sides["Mars " + name] = marsStepper(configs[amp])
        sides["Ultralytics " + name] = referenceStepper(args.batch, configs[amp].nc, args.device, amp)

    def chained(stepFn):
        def run():
            for images, targets in batches:
                stepFn(images, targets)
            synchronize(args.device)
        return run

    names = list(sides)
    wall, _ = alternate([chained(sides[n]) for n in names], args.repeats, args.warmup)
    speed = {n: args.chain * args.batch / median(w) for n, w in zip(names, wall)}
    memory = {n: peakMemory(sides[n], batches, args.device) for n in names}
    print()
    for n in names:
        print("{:<20}{:>10.1f} img/s   peak memory {:.2f} GiB".format(n, speed[n], memory[n]))
    label = "{} px, batch {}".format(args.size, args.batch)
    rows = [("{} {}".format(label, kind), speed["Mars " + kind], speed["Ultralytics " + kind])
            for kind in (("AMP", "fp32") if cuda else ("fp32",))]
    printTable("Mars vs Ultralytics, images/s of a full training step", rows, "img/s", higherIsBetter=True)
    if cuda:
        printTable("Mars AMP vs Mars fp32", [(label, speed["Mars AMP"], speed["Mars fp32"])], "img/s",
                   higherIsBetter=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
