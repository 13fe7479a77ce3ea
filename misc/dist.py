"""torch.distributed in one place: started by torchrun (WORLD_SIZE > 1), else a single process."""
import os
from datetime import timedelta

import torch
import torch.distributed as dist


def initDistributed(device):
    """Join the process group when launched by torchrun. Returns the device of this rank ('cuda:LOCAL_RANK' on CUDA)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return device
    cuda = str(device).startswith("cuda")
    if cuda:
        localRank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(localRank)
        device = "cuda:{}".format(localRank)
    dist.init_process_group("nccl" if cuda else "gloo")
    return device


def isDistributed():
    return dist.is_available() and dist.is_initialized()


def rank():
    return dist.get_rank() if isDistributed() else 0


def worldSize():
    return dist.get_world_size() if isDistributed() else 1


def isMain():
    """Rank 0 (or a single process): the one that logs, saves and evaluates."""
    return rank() == 0


def mainWaiter(timeoutMinutes):
    """-> wait(): under torchrun every rank blocks in wait() until all have arrived, so the others wait while rank 0
    validates and saves an epoch, for up to timeoutMinutes (mcfg.mainWaitMinutes), instead of running into the next
    step's collective, whose timeout (torch's default: 10 minutes on NCCL) a long validation would exceed. A gloo
    barrier on the host, in a group of its own with that timeout, made here by every rank together (call it at the
    same point on each rank, e.g. when the trainer is built). A single process gets a wait() that does nothing."""
    if not isDistributed():
        return lambda: None
    group = dist.new_group(backend="gloo", timeout=timedelta(minutes=timeoutMinutes))
    return lambda: dist.barrier(group=group)


def allTrue(flags, device):
    """A list of Python bools agreed on by every rank: each False if any rank says False (one all_reduce)."""
    if not isDistributed():
        return list(flags)
    value = torch.tensor([1 if f else 0 for f in flags], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return [bool(v) for v in value.tolist()]


def anyRank(flags):
    """A bool tensor -> the same shape, True on every rank where it is True on any rank. One all_reduce queued on
    the device: nothing is read on the host."""
    if not isDistributed():
        return flags
    value = flags.to(torch.int32)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return value.bool()
