"""The training epoch as a pure function of (mcfg.seed, epoch, position): which image each batch holds and the
seed of every sample's augmentation, whatever the number of loader workers, their persistence, a rebuilt loader, a
resume in the middle of an epoch or the number of ranks.

An epoch is a permutation of the split's N images drawn from (seed, epoch). Its positions 0, 1, 2, ... are handed out
in steps of batchSize x worldSize consecutive positions; rank r takes the r-th equal part of each step. A position p
>= N wraps around (image perm[p mod N]): the last step of an epoch is padded so that every rank gets the same number
of samples (as torch's DistributedSampler pads). Each sample carries the key (seed, epoch, p), from which the dataset
makes its own generator (dl/vocdataset.py): a sample's augmentation and mosaic partners do not depend on which worker
or rank loads it, nor on what was loaded before. A run resumed after `startPosition` samples of an epoch gets exactly
the positions not yet trained, on any number of ranks.
"""
import math

import numpy as np


class EpochBatchSampler(object):
    """DataLoader batch_sampler: yields lists of (imageIndex, key) with key = (seed, epoch, position).

    size: N images; batchSize: per rank; shuffle: a new permutation per epoch (else positions in file order).
    setEpoch(epoch, startPosition) chooses the epoch and where in it to start (0: from the beginning).
    """

    def __init__(self, size, batchSize, seed, shuffle=True, rank=0, worldSize=1):
        self.size, self.batchSize, self.seed, self.shuffle = int(size), int(batchSize), int(seed), bool(shuffle)
        self.rank, self.worldSize = int(rank), int(worldSize)
        self.epoch, self.startPosition = 0, 0

    def setEpoch(self, epoch, startPosition=0):
        self.epoch, self.startPosition = int(epoch), int(startPosition)

    def epochLength(self, start=0):
        """Positions an epoch covers from start: N - start rounded up to a multiple of worldSize."""
        return math.ceil(max(0, self.size - start) / self.worldSize) * self.worldSize

    def __len__(self):
        """Steps of a whole epoch (the learning-rate schedule counts these)."""
        return math.ceil(self.epochLength() / (self.batchSize * self.worldSize))

    def order(self):
        """(N,) int64: the image at each position of this epoch (before wrapping)."""
        if not self.shuffle:
            return np.arange(self.size)
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.size)

    def stepPositions(self):
        """[(first, last) position range of each remaining step for this rank], from startPosition."""
        start, end = self.startPosition, self.startPosition + self.epochLength(self.startPosition)
        step, ranges = self.batchSize * self.worldSize, []
        for first in range(start, end, step):
            share = (min(first + step, end) - first) // self.worldSize  # equal parts: the padded length divides
            ranges.append((first + self.rank * share, first + (self.rank + 1) * share))
        return ranges

    def positionAfter(self, steps):
        """The epoch position reached after this many steps from startPosition (on every rank): where a resume starts."""
        end = self.startPosition + self.epochLength(self.startPosition)
        return min(end, self.startPosition + steps * self.batchSize * self.worldSize)

    def __iter__(self):
        order = self.order()
        for first, last in self.stepPositions():
            yield [(int(order[p % self.size]), (self.seed, self.epoch, p)) for p in range(first, last)]
