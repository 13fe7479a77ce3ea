"""torchrun with 2 CPU processes (gloo): identical replicas, one checkpoint, same result as one process with the
combined batch (every rank sees copies of one image, so per-rank BatchNorm statistics equal the combined batch's --
SyncBatchNorm is CUDA-only -- and the comparison isolates the gradient averaging and loss scaling); each rank's data
restored exactly by a mid-epoch resume, on 2 ranks or on 1; the other ranks wait for a long validation on rank 0."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from tests.helpers import writeVocSet

pytestmark = pytest.mark.slow  # torchrun: every test trains in 1 to 3 processes

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ddp_worker.py")


def torchrun(ranks, *args, env=None):
    """tests/ddp_worker.py under torchrun with `ranks` processes (1: a plain process); -> CompletedProcess."""
    environment = {k: v for k, v in os.environ.items() if k != "MARS_TEST_FAULT"}
    environment.update(OMP_NUM_THREADS="1", **(env or {}))
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node={}".format(ranks)]
    return subprocess.run((launcher if ranks > 1 else [sys.executable]) + [WORKER] + [str(a) for a in args],
                          capture_output=True, text=True, env=environment, timeout=600)


def test_two_rank_gloo_equals_single_process_with_combined_batch(tmp_path):
    data = str(tmp_path / "data")
    writeVocSet(data, {"a": (64, 64, [("red", 6, 8, 30, 40), ("blue", 34, 30, 60, 58)])}, ["red", "blue"],
                {"train": ["a"] * 8})
    ddpOut, singleOut = tmp_path / "ddp", tmp_path / "single"
    ddpOut.mkdir()
    singleOut.mkdir()
    result = torchrun(2, data, ddpOut, 4, tmp_path / "runs-ddp")
    assert result.returncode == 0, result.stderr[-3000:]
    result = torchrun(1, data, singleOut, 8, tmp_path / "runs-single")
    assert result.returncode == 0, result.stderr[-3000:]

    rank0, rank1 = torch.load(ddpOut / "rank0.pt"), torch.load(ddpOut / "rank1.pt")
    single = torch.load(singleOut / "rank0.pt")
    for k in rank0:
        assert torch.equal(rank0[k], rank1[k]), k  # replicas stay identical
    # trainable weights: equal up to float summation order (all-reduce of two halves vs one sum), a tiny fraction
    # of how far training moved them
    initial = torch.load(singleOut / "initial0.pt")
    assert all(torch.equal(initial[k], torch.load(ddpOut / "initial0.pt")[k]) for k in initial)
    weights = [k for k in rank0 if "running" not in k and "num_batches" not in k]
    weightDiff = max((rank0[k] - single[k]).abs().max().item() for k in weights)
    moved = max((single[k] - initial[k]).abs().max().item() for k in weights)
    print("max |ddp - single| weights {:.2e}, max movement {:.2e}".format(weightDiff, moved))
    assert weightDiff < 1e-4 and weightDiff < 0.01 * moved, (weightDiff, moved)
    # BN running variance is unbiased per batch: n/(n-1) with n = 4*H*W per rank vs 8*H*W combined, which is a few
    # per cent of each update on the 2x2 maps of stride 32 at 64 px
    statsDiff = max((rank0[k] - single[k]).abs().max().item() for k in rank0 if "running" in k)
    print("max |ddp - single| BN statistics", statsDiff)
    assert statsDiff < 5e-3, statsDiff
    assertShardedPerEpoch(ddpOut, singleOut)
    cache = tmp_path / "runs-ddp" / "u" / "ddp" / "__cache__"
    assert sorted(os.listdir(cache)) == ["best_weights.pth", "info.txt", "last_epoch_weights.pth"]
    assert torch.load(cache / "last_epoch_weights.pth", weights_only=True)["epoch"] == 3


def assertShardedPerEpoch(ddpOut, singleOut, numSamples=8, epochs=3):
    """Each epoch the two ranks load disjoint halves of the split's 8 samples, together all of them, in the order of
    EpochBatchSampler(seed=mcfg.seed) for that epoch and rank -- a new shuffle every epoch. One process loads all 8."""
    from dl.sampler import EpochBatchSampler
    from tests.helpers import makeConfig
    seed = makeConfig("nano", nc=2, inputShape=(64, 64)).seed
    seen = [json.loads((ddpOut / "seen{}.json".format(r)).read_text()) for r in (0, 1)]
    orders = []
    for epoch in range(epochs):
        shares = [[(index, position) for e, index, position, _ in rankSeen if e == epoch] for rankSeen in seen]
        positions = [{p for _, p in share} for share in shares]
        assert len(shares[0]) == len(shares[1]) == numSamples // 2, shares
        assert not positions[0] & positions[1] and positions[0] | positions[1] == set(range(numSamples)), shares
        for r in (0, 1):
            sampler = EpochBatchSampler(numSamples, 4, seed, rank=r, worldSize=2)
            sampler.setEpoch(epoch)
            assert shares[r] == [(index, key[2]) for batch in sampler for index, key in batch], (epoch, r, shares[r])
        orders.append([[index for index, _ in share] for share in shares])
    assert orders[0] != orders[1] or orders[1] != orders[2]  # the shuffle changes with the epoch
    single = json.loads((singleOut / "seen0.json").read_text())
    for epoch in range(epochs):
        assert sorted(position for e, _, position, _ in single if e == epoch) == list(range(numSamples))


def distinctImages(root, count=8, repeat=2):
    """count different 64x64 images (each twice in the split): what a rank loads tells which image and augmentation."""
    images = {"i{}".format(k): (64, 64, [("red", 4 + 2 * k, 6, 30 + 2 * k, 40), ("blue", 34, 20 + k, 60, 44 + k)])
              for k in range(count)}
    writeVocSet(root, images, ["red", "blue"], {"train": list(images) * repeat})


def test_two_rank_resume_mid_epoch_restores_each_ranks_stream(tmp_path):
    """2 ranks, augmentation and mosaic on (closing for the last epoch: the loader is rebuilt), 16 samples, batch 2 per
    rank: 4 steps per epoch, 3 epochs. SIGTERM after global step 4 (epoch 2, batch 1) stops both ranks there; the
    resumed 2-rank run loads, on each rank, exactly the samples (image, position, augmented pixels and boxes) the
    uninterrupted run loaded after that step, and ends with bitwise its weights. Resumed on 1 rank instead (fewer than
    saved) it trains exactly the positions not yet trained of that epoch, then whole epochs."""
    data = str(tmp_path / "data")
    distinctImages(data)
    outs = {name: tmp_path / name for name in ("whole", "stopped", "resumed", "one")}
    for out in outs.values():
        out.mkdir()
    result = torchrun(2, data, outs["whole"], 2, tmp_path / "runs-whole", "--augment")
    assert result.returncode == 0, result.stderr[-3000:]
    result = torchrun(2, data, outs["stopped"], 2, tmp_path / "runs", "--augment", env={"MARS_TEST_FAULT": "SIGTERM@4"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert (outs["stopped"] / "interrupted0.txt").is_file() and (outs["stopped"] / "interrupted1.txt").is_file()
    cache = tmp_path / "runs" / "u" / "ddp" / "__cache__"
    state = torch.load(cache / "last_epoch_weights.pth", weights_only=True)
    assert (state["epoch"], state["batchesDone"], state["epochPosition"], state["worldSize"]) == (1, 1, 4, 2)
    shutil.copytree(tmp_path / "runs", tmp_path / "runs-one")
    result = torchrun(2, data, outs["resumed"], 2, tmp_path / "runs", "--augment")
    assert result.returncode == 0, result.stderr[-3000:]
    for r in (0, 1):
        whole = json.loads((outs["whole"] / "seen{}.json".format(r)).read_text())
        stopped = json.loads((outs["stopped"] / "seen{}.json".format(r)).read_text())
        resumed = json.loads((outs["resumed"] / "seen{}.json".format(r)).read_text())
        assert stopped + resumed == whole, r  # each rank: its own stream, continued where it stopped
    assert {s[0] for s in whole} == {0, 1, 2} and len(whole) == 3 * 8
    final = torch.load(cache / "last_epoch_weights.pth", weights_only=True)
    reference = torch.load(tmp_path / "runs-whole" / "u" / "ddp" / "__cache__" / "last_epoch_weights.pth",
                           weights_only=True)
    assert final["epoch"] == 3
    for k, v in reference["model"].items():
        assert torch.equal(final["model"][k], v), k

    result = torchrun(1, data, outs["one"], 2, tmp_path / "runs-one", "--augment")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "saved mid-epoch by 2 rank(s), this run has 1" in result.stdout + result.stderr
    one = json.loads((outs["one"] / "seen0.json").read_text())
    assert [s[2] for s in one if s[0] == 1] == list(range(4, 16))
    assert [sorted(s[2] for s in one if s[0] == e) for e in (2,)] == [list(range(16))]
    wholeEpoch1 = {s[2]: s for r in (0, 1) for s in json.loads((outs["whole"] / "seen{}.json".format(r)).read_text())
                   if s[0] == 1}
    assert all(wholeEpoch1[s[2]] == s for s in one if s[0] == 1)  # the same samples, only shared out anew


def test_other_ranks_wait_for_a_long_validation_on_rank_0(tmp_path):
    """The process group's collectives time out after 3 s; rank 0 validates for 8 s after epoch 1. The other rank
    waits in the trainer's long barrier (mcfg.mainWaitMinutes) instead of running into epoch 2's first collective,
    and the run completes."""
    data = str(tmp_path / "data")
    distinctImages(data, count=4, repeat=1)
    out = tmp_path / "out"
    out.mkdir()
    result = torchrun(2, data, out, 2, tmp_path / "runs", "--epochs", 2, "--slow-validation", 8, "--timeout", 3)
    assert result.returncode == 0, result.stderr[-3000:]
    state = torch.load(tmp_path / "runs" / "u" / "ddp" / "__cache__" / "last_epoch_weights.pth", weights_only=True)
    assert state["epoch"] == 2 and [row["mAP50"] for row in state["history"]] == [0.5, 0.5]
