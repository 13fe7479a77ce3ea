"""The CUDA training step: Mars with and without mixed precision, against Ultralytics', on one GPU.

    python -m bench.speed.cuda_step [--size 640] [--batch 32] [--chain 10] [--repeats 5] [--warmup 2] [--device cuda]
                              [--amp fp16|bf16|off]

The same demo batches and step functions as bench/speed/train_step.py (read its docstring; both take them from
bench/common.py), on the device: Mars' Trainer.trainStep (channels_last) and Ultralytics' trainer step, each
with mixed precision (AMP) and without (fp32). Both sides' AMP follows one precision policy, --amp:
    fp16 (default): float16 autocast + grad scaler, what Ultralytics does on CUDA;
    bf16:           bfloat16 autocast, no grad scaler (Mars' choice on a GPU that has bf16), on both sides; only where
                    the GPU has bf16 natively (torch.cuda.is_bf16_supported(including_emulation=False)), else it stops;
    off:            the fp32 pair only.
A round runs --chain steps back to back and then waits for the GPU once, so a step that reads values on the host
(and so waits for the device) shows in the figure. It prints images/s per side (median of --repeats rounds, all sides
alternating), the ratios, and each side's peak GPU memory, measured after the timing with that side alone on the GPU
(the sides timed are freed first, and each measured side is freed before the next is built): the peak of
torch.cuda.max_memory_allocated over one chain after an unmeasured one, above the memory allocated before that side
was built, so it holds the side's model, EMA, optimizer state and step, and nothing of the others.
--device cuda:N measures GPU N (every synchronisation and memory reading names it). --device cpu runs the fp32 pair
only (a smoke test of this script).
"""
import gc

import torch

from bench.common import (alternate, baseParser, demoConfig, drawBatches, marsStepper, median, printTable,
                       referenceStepper, setup)

TITLE = "bench/speed/cuda_step.py"
AMP_CHOICES = ("fp16", "bf16", "off")


def resolveDevice(name):
    """--device -> torch.device with its index ("cuda" -> the current CUDA device). Stops with one line when CUDA is
    asked for and absent, or the index names no GPU."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SystemExit("{}: --device {}: not a device name (cuda, cuda:N or cpu)".format(TITLE, name)) from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise SystemExit("{}: --device {}: only cuda, cuda:N or cpu".format(TITLE, name))
    if not torch.cuda.is_available():
        raise SystemExit("{}: CUDA is not available here (torch {}, CUDA build {}); run it on a machine with a GPU, or "
                         "with --device cpu for a smoke test".format(TITLE, torch.__version__, torch.version.cuda))
    count = torch.cuda.device_count()
    index = torch.cuda.current_device() if device.index is None else device.index
    if index >= count:
        raise SystemExit("{}: --device {}: this machine has {} CUDA device(s)".format(TITLE, name, count))
    return torch.device("cuda", index)


def nativeBf16(device):
    """Whether the GPU device computes in bf16 natively (torch.cuda.is_bf16_supported asks the current device)."""
    with torch.cuda.device(device):
        return torch.cuda.is_bf16_supported(including_emulation=False)


def ampPolicy(amp, device):
    """--amp -> the autocast dtype of both sides' AMP runs: torch.float16, torch.bfloat16, or None (no AMP runs: --amp
    off, or a CPU device). Stops with one line for bf16 on a GPU without native bf16."""
    if amp not in AMP_CHOICES:
        raise ValueError("amp: one of {}, not {!r}".format(AMP_CHOICES, amp))
    if amp == "off" or device.type != "cuda":
        return None
    if amp == "fp16":
        return torch.float16
    if not nativeBf16(device):
        raise SystemExit("{}: --amp bf16: {} has no native bf16 (torch.cuda.is_bf16_supported(including_emulation="
                         "False) is False); use --amp fp16 or --amp off".format(TITLE, device))
    return torch.bfloat16


def describePolicy(ampDtype, device):
    """One line naming the precision of the AMP runs, for the output."""
    if ampDtype is None:
        why = "CPU smoke test" if device.type != "cuda" else "--amp off"
        return "amp: off ({}): fp32 runs only".format(why)
    if ampDtype == torch.float16:
        return "amp: fp16 on both sides (float16 autocast + grad scaler, Ultralytics' own CUDA AMP)"
    return "amp: bf16 on both sides (bfloat16 autocast, no grad scaler)"


def synchronize(device):
    """Wait for the device's work (nothing to wait for on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def runChain(stepFn, batches, device):
    """One step per batch, back to back, then one wait for the device."""
    for images, targets in batches:
        stepFn(images, targets)
    synchronize(device)


def freeMemory(device):
    """Collect what the deleted sides left and return the allocator's cached blocks to the GPU."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def sideMemory(build, batches, device):
    """Peak GPU memory (GiB) of one side alone (0 on the CPU): build() makes its step function; after one unmeasured
    chain (cuDNN autotuning, optimizer state, grad scaler) the peak of one chain, above the memory allocated before
    build() ran. The side is freed before this returns."""
    if device.type != "cuda":
        return 0.0
    freeMemory(device)
    held = torch.cuda.memory_allocated(device)
    stepFn = build()
    runChain(stepFn, batches, device)
    torch.cuda.reset_peak_memory_stats(device)
    runChain(stepFn, batches, device)
    peak = torch.cuda.max_memory_allocated(device)
    del stepFn
    freeMemory(device)
    return (peak - held) / 2 ** 30


def main(argv=None):
    parser = baseParser(__doc__, repeats=5, warmup=2)
    parser.add_argument("--size", type=int, default=640, help="input size, pixels")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--chain", type=int, default=10, help="steps per timed round (one device wait per round)")
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (a smoke test, fp32 only)")
    parser.add_argument("--amp", choices=AMP_CHOICES, default="fp16",
                        help="precision of both sides' AMP runs: fp16 (Ultralytics' AMP), bf16 (native only) or off "
                             "(fp32 runs only); default fp16")
    args = parser.parse_args(argv)
    device = resolveDevice(args.device)
    ampDtype = ampPolicy(args.amp, device)
    setup(args, TITLE)
    if device.type == "cuda":
        print("device: {} ({}), native bf16: {}".format(device, torch.cuda.get_device_name(device), nativeBf16(device)))
    print(describePolicy(ampDtype, device))
    shape = (args.size, args.size)
    precisions = {"fp32": None}
    if ampDtype is not None:
        precisions = {"AMP": ampDtype, **precisions}
    configs = {kind: demoConfig(args.root, shape, args.batch, dcore=0, device=str(device), amp=dtype is not None)
               for kind, dtype in precisions.items()}
    batches = drawBatches(configs["fp32"], args.chain)
    builders = {}
    for kind, dtype in precisions.items():
        builders["Mars " + kind] = lambda kind=kind, dtype=dtype: marsStepper(configs[kind], dtype)
        builders["Ultralytics " + kind] = lambda kind=kind, dtype=dtype: referenceStepper(
            args.batch, configs[kind].nc, device, dtype)
    names = list(builders)
    torch.manual_seed(0)
    sides = [builders[n]() for n in names]

    def chained(stepFn):
        return lambda: runChain(stepFn, batches, device)

    wall, _ = alternate([chained(s) for s in sides], args.repeats, args.warmup)
    del sides
    speed = {n: args.chain * args.batch / median(w) for n, w in zip(names, wall)}
    memory = {}
    for n in names:
        torch.manual_seed(0)
        memory[n] = sideMemory(builders[n], batches, device)
    print()
    for n in names:
        print("{:<20}{:>10.1f} img/s   peak memory {:.2f} GiB".format(n, speed[n], memory[n]))
    if device.type == "cuda":
        print("peak memory: each side alone on {} (the others freed), the peak of one chain above the memory allocated "
              "before the side was built".format(device))
    label = "{} px, batch {}".format(args.size, args.batch)
    rows = [("{} {}".format(label, kind), speed["Mars " + kind], speed["Ultralytics " + kind]) for kind in precisions]
    ampName = "" if ampDtype is None else " (AMP = {})".format(args.amp)
    printTable("Mars vs Ultralytics, images/s of a full training step" + ampName, rows, "img/s", higherIsBetter=True)
    if ampDtype is not None:
        printTable("Mars AMP vs Mars fp32" + ampName, [(label, speed["Mars AMP"], speed["Mars fp32"])], "img/s",
                   higherIsBetter=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
