"""Seeding of the global generators."""
import random

import numpy as np


def seedEverything(seed):
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed)
    import torch
    torch.manual_seed(seed)
