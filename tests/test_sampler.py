"""An epoch's training data depend only on (seed, epoch, position): the same batches whatever the loader workers,
their persistence, a rebuilt loader or a start in the middle of the epoch; under torchrun each rank gets its own
disjoint share, also when a mid-epoch resume runs on another number of ranks."""
import numpy as np
import pytest
import torch

from dl.sampler import EpochBatchSampler
from dl.vocdataset import makeDataLoader
from tests.helpers import makeConfig, writeVocSet


def positions(sampler):
    """[[position, ...] per step] this rank loads, and the image of each position."""
    steps = list(sampler)
    return [[key[2] for _, key in batch] for batch in steps], {key[2]: index for batch in steps for index, key in batch}


@pytest.mark.parametrize("size, batch", [(10, 4), (12, 4), (7, 3), (1, 4)])
def test_one_rank_takes_every_image_once_in_a_seeded_order(size, batch):
    sampler = EpochBatchSampler(size, batch, seed=3)
    steps, image = positions(sampler)
    assert [p for step in steps for p in step] == list(range(size)) and len(steps) == len(sampler)
    assert all(len(step) == batch for step in steps[:-1])
    assert sorted(image.values()) == list(range(size))
    again = EpochBatchSampler(size, batch, seed=3)
    assert list(again) == list(sampler)  # a pure function of (seed, epoch)
    if size > 2:
        orders = set()
        for epoch in range(4):
            sampler.setEpoch(epoch)
            orders.add(tuple(index for step in sampler for index, _ in step))
        assert len(orders) > 1  # a new order per epoch
        assert [key for step in sampler for _, key in step] == [(3, 3, p) for p in range(size)]


@pytest.mark.parametrize("size, batch, world", [(10, 2, 2), (11, 2, 3), (16, 4, 2), (5, 4, 4)])
def test_ranks_share_each_step_and_pad_the_last(size, batch, world):
    """Every step: world equal, disjoint shares of consecutive positions; the epoch covers every image, padded by
    wrapping around (as DistributedSampler pads) to a multiple of the world size; same number of steps on each rank."""
    shares = [positions(EpochBatchSampler(size, batch, 0, rank=r, worldSize=world)) for r in range(world)]
    numSteps = {len(steps) for steps, _ in shares}
    assert len(numSteps) == 1
    allPositions = []
    for s in range(numSteps.pop()):
        step = [shares[r][0][s] for r in range(world)]
        assert len({len(part) for part in step}) == 1
        flat = [p for part in step for p in part]
        assert flat == list(range(flat[0], flat[0] + len(flat)))
        allPositions += flat
    padded = -(-size // world) * world
    assert allPositions == list(range(padded))
    order = EpochBatchSampler(size, batch, 0).order()
    for _, image in shares:
        assert all(image[p] == order[p % size] for p in image)


@pytest.mark.parametrize("savedWorld, resumedWorld", [(2, 2), (4, 2), (2, 1), (1, 3)])
def test_resume_mid_epoch_gets_exactly_the_positions_not_yet_trained(savedWorld, resumedWorld):
    size, batch, stepsDone = 37, 3, 2
    saved = EpochBatchSampler(size, batch, 5, rank=0, worldSize=savedWorld)
    saved.setEpoch(4)
    start = saved.positionAfter(stepsDone)
    assert start == stepsDone * batch * savedWorld
    rest = []
    for r in range(resumedWorld):
        resumed = EpochBatchSampler(size, batch, 5, rank=r, worldSize=resumedWorld)
        resumed.setEpoch(4, start)
        rest += [key for step in resumed for _, key in step]
    done = {p for p in range(start)}
    covered = sorted(p for _, _, p in rest)
    assert covered[0] == start and not done & set(covered)
    assert set(range(start, size)) <= set(covered) and len(covered) == -(-(size - start) // resumedWorld) * resumedWorld
    assert all(seed == 5 and epoch == 4 for seed, epoch, _ in rest)


def augmentedConfig(root, **fields):
    images = {"i{}".format(k): (64 + 16 * (k % 3), 64, [("red", 4 + k, 6, 30 + k, 40), ("blue", 30, 20 + k, 58, 44 + k)])
              for k in range(7)}
    imageDir, annotationDir, subsetMap = writeVocSet(str(root), images, ["red", "blue"], {"train": list(images)})
    return makeConfig("nano", nc=2, inputShape=(64, 64), imageDir=imageDir, annotationDir=annotationDir,
                      classList=["red", "blue"], subsetMap=subsetMap, batchSize=3, augment=True, mosaic=1.0,
                      augScale=(0.5, 1.5), augAspect=0.3, augFlip=0.5, **fields)


def epochBatches(loader, epoch, start=0):
    loader.batch_sampler.setEpoch(epoch, start)
    return [(images.clone(), targets.clone(), [m["index"] for m in metas]) for images, targets, metas in loader]


def assertSameBatches(a, b):
    assert len(a) == len(b)
    for (imagesA, targetsA, indexesA), (imagesB, targetsB, indexesB) in zip(a, b):
        assert indexesA == indexesB and torch.equal(imagesA, imagesB) and torch.equal(targetsA, targetsB)


def test_epoch_batches_do_not_depend_on_workers_reuse_rebuild_or_start(tmp_path):
    """Mosaic and every augmentation on: epochs 0, 1, 0 through one loader (persistent workers reused) with 0, 1 or 2
    workers, and through a loader rebuilt around the same dataset (as when mosaic closes), give bitwise the same
    batches; an epoch started at a step boundary gives exactly its remaining batches; two epochs differ."""
    mcfg = augmentedConfig(tmp_path)
    runs = {}
    for dcore in (0, 1, 2):
        mcfg = mcfg.copy(dcore=dcore)
        loader = makeDataLoader(mcfg, "train", train=True)
        runs[dcore] = [epochBatches(loader, e) for e in (0, 1, 0)]
        rebuilt = makeDataLoader(mcfg, "train", train=True, dataset=loader.dataset)
        assertSameBatches(epochBatches(rebuilt, 1), runs[dcore][1])
        assertSameBatches(epochBatches(rebuilt, 1, start=2 * mcfg.batchSize), runs[dcore][1][2:])
    for dcore in (1, 2):
        for a, b in zip(runs[0], runs[dcore]):
            assertSameBatches(a, b)
    assertSameBatches(runs[0][0], runs[0][2])
    assert not torch.equal(runs[0][0][0][0], runs[0][1][0][0])
    assert len(runs[0][0]) == 3 and sum(len(i) for _, _, i in runs[0][0]) == 7


def test_a_sample_is_the_same_whichever_batch_or_rank_loads_it(tmp_path):
    """The dataset's item (index, key) draws its augmentation from the key alone: loading it alone or after other items gives
    the same image and boxes; another key gives another augmentation."""
    from dl.vocdataset import VocDataset
    dataset = VocDataset(augmentedConfig(tmp_path), "train", train=True)
    alone = dataset[(3, (0, 1, 5))]
    for other in range(4):
        dataset[(other, (0, 1, other))]
    again = dataset[(3, (0, 1, 5))]
    assert torch.equal(alone[0], again[0]) and torch.equal(alone[1], again[1])
    different = [dataset[(3, (0, 1, p))] for p in (6, 7, 8)]
    assert any(not torch.equal(alone[0], d[0]) for d in different)
    assert np.isfinite(alone[1].numpy()).all()
