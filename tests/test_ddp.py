"""torchrun with 2 CPU processes (gloo): identical replicas, one checkpoint, same result as one process with the
combined batch. Every rank sees copies of one image, so per-rank BatchNorm statistics equal the combined batch's
(SyncBatchNorm is CUDA-only) and the comparison isolates the gradient averaging and loss scaling."""
import json
import os
import subprocess
import sys

import torch

from tests.helpers import writeVocSet

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ddp_worker.py")


def test_two_rank_gloo_equals_single_process_with_combined_batch(tmp_path):
    data = str(tmp_path / "data")
    writeVocSet(data, {"a": (64, 64, [("red", 6, 8, 30, 40), ("blue", 34, 30, 60, 58)])}, ["red", "blue"],
                {"train": ["a"] * 8})
    env = dict(os.environ, OMP_NUM_THREADS="1")
    ddpOut, singleOut = tmp_path / "ddp", tmp_path / "single"
    ddpOut.mkdir()
    singleOut.mkdir()
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             WORKER, data, str(ddpOut), "4", str(tmp_path / "runs-ddp")],
                            capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    result = subprocess.run([sys.executable, WORKER, data, str(singleOut), "8", str(tmp_path / "runs-single")],
                            capture_output=True, text=True, env=env, timeout=600)
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
    DistributedSampler(seed=mcfg.seed) after set_epoch(epoch) -- a new shuffle every epoch. One process loads all 8."""
    from torch.utils.data import DistributedSampler

    from tests.conftest import makeConfig
    seed = makeConfig("nano", nc=2, inputShape=(64, 64)).seed
    seen = [json.loads((ddpOut / "seen{}.json".format(r)).read_text()) for r in (0, 1)]
    orders = []
    for epoch in range(epochs):
        shares = [[index for e, index in rankSeen if e == epoch] for rankSeen in seen]
        assert len(shares[0]) == len(shares[1]) == numSamples // 2, shares
        assert not set(shares[0]) & set(shares[1]) and set(shares[0]) | set(shares[1]) == set(range(numSamples)), shares
        for r in (0, 1):
            sampler = DistributedSampler(list(range(numSamples)), num_replicas=2, rank=r, shuffle=True, seed=seed)
            sampler.set_epoch(epoch)
            assert shares[r] == list(sampler), (epoch, r, shares[r])
        orders.append(shares)
    assert orders[0] != orders[1] or orders[1] != orders[2]  # the shuffle changes with the epoch
    single = json.loads((singleOut / "seen0.json").read_text())
    for epoch in range(epochs):
        assert sorted(index for e, index in single if e == epoch) == list(range(numSamples))
