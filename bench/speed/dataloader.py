"""Throughput of the augmented training data pipeline, Mars against Ultralytics' YOLODataset, same worker count.

    python -m bench.speed.dataloader [--sizes 640] [--batch 16] [--workers 2] [--batches 12] [--repeats 3] [--threads 0]

Both read the training split of the built-in demo data (600 images of 192 px, generated under ROOT/demo-data on first
use); Ultralytics reads a YOLO-format copy of it (symlinked images, labels converted from the VOC XML) in a temporary
folder. Comparable augmentation at the same input size: no mosaic, mixup or copy-paste; random scale 0.6..1.4 and
placement, horizontal flip 0.5, HSV (0.015, 0.7, 0.4) -- Mars: mcfg.augScale / augAspect / augFlip / augHsv;
Ultralytics: scale 0.4, translate 0.1, fliplr 0.5, hsv_h/s/v, its default train transforms otherwise.
Each side is a plain torch DataLoader (batch, --workers, shuffle, each dataset's own collate function and worker
seeding, default prefetch); a round starts a fresh iterator, skips its first batch (worker start-up) and times the
next --batches batches: decode, augment, collate, and the transfer from the workers. Figures are samples/s (median
over --repeats rounds per side, alternating). Target: Mars >= 1.0x.
"""
import os
import tempfile

import torch
from torch.utils.data import DataLoader

from bench.common import alternate, baseParser, demoConfig, median, printTable, quietly, setup, writeYoloCopy


def marsLoader(mcfg, workers):
    """Mars' training data (VocDataset + collate + EpochBatchSampler), as makeDataLoader builds it, without persistent
    workers."""
    from dl.sampler import EpochBatchSampler
    from dl.vocdataset import VocDataset, collate, initWorker
    dataset = VocDataset(mcfg, mcfg.trainSplitName, train=True)
    sampler = EpochBatchSampler(len(dataset), mcfg.batchSize, mcfg.seed)
    return DataLoader(dataset, batch_sampler=sampler, num_workers=workers, collate_fn=collate, worker_init_fn=initWorker,
                      generator=torch.Generator().manual_seed(0))


def referenceLoader(mcfg, imagesDir, size, workers):
    """Ultralytics' YOLODataset in train mode with the comparable augmentation above."""
    from ultralytics.cfg import get_cfg
    from ultralytics.data.build import build_yolo_dataset, seed_worker
    cfg = get_cfg(overrides={"imgsz": size, "mosaic": 0.0, "mixup": 0.0, "cutmix": 0.0, "copy_paste": 0.0,
                             "scale": 0.4, "translate": 0.1, "fliplr": 0.5, "flipud": 0.0, "degrees": 0.0,
                             "shear": 0.0, "perspective": 0.0, "hsv_h": mcfg.augHsv[0], "hsv_s": mcfg.augHsv[1],
                             "hsv_v": mcfg.augHsv[2], "cache": False, "workers": workers})
    data = {"names": dict(enumerate(mcfg.classList)), "nc": len(mcfg.classList), "channels": 3}
    dataset = quietly(build_yolo_dataset, cfg, imagesDir, mcfg.batchSize, data, mode="train", rect=False, stride=32)
    return DataLoader(dataset, batch_size=mcfg.batchSize, shuffle=True, num_workers=workers,
                      collate_fn=dataset.collate_fn, worker_init_fn=seed_worker, generator=torch.Generator().manual_seed(0))


def timedRound(loader, numBatches):
    """Seconds for numBatches batches after the first one, from a fresh iterator."""
    import time
    iterator = iter(loader)
    next(iterator)  # worker start-up
    started = time.perf_counter()
    for _ in range(numBatches):
        next(iterator)
    elapsed = time.perf_counter() - started
    del iterator  # stops the workers before the other side runs
    return elapsed


def main(argv=None):
    parser = baseParser(__doc__, repeats=3, warmup=1)
    parser.add_argument("--sizes", default="640", help="input sizes, pixels, comma-separated")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes, both sides (0 = in the "
                                                              "main process; Mars' default mcfg.dcore is 2)")
    parser.add_argument("--batches", type=int, default=12, help="timed batches per round")
    args = parser.parse_args(argv)
    setup(args, "bench/speed/dataloader.py")
    rows = []
    with tempfile.TemporaryDirectory(prefix="mars-bench-yolo-") as folder:
        for size in (int(s) for s in args.sizes.split(",")):
            mcfg = demoConfig(args.root, (size, size), args.batch)
            imagesDir = os.path.join(folder, str(size))
            writeYoloCopy(mcfg, mcfg.trainSplitName, imagesDir)
            ours = marsLoader(mcfg, args.workers)
            reference = referenceLoader(mcfg, os.path.join(imagesDir, "images"), size, args.workers)
            print("{} px: {} training images, batch {}, {} workers".format(size, len(ours.dataset), args.batch, args.workers))
            (o, r), _ = alternate([lambda: timedRound(ours, args.batches), lambda: timedRound(reference, args.batches)],
                                  args.repeats, args.warmup)  # workers do the work: wall clock only
            samples = args.batches * args.batch
            rows.append(("{} px, {} workers".format(size, args.workers), samples / median(o), samples / median(r)))
    printTable("augmented training samples/s (median of {}; higher is better)".format(args.repeats), rows, "img/s",
               higherIsBetter=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
