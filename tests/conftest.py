import os
import sys

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_VERBOSE", "False")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pytest  # noqa: E402
import torch  # noqa: E402

from config.mconfig import ModelConfig  # noqa: E402


def makeConfig(phase="nano", nc=20, inputShape=(160, 160), **fields):
    """A finalized ModelConfig for building models in tests: no files, no run root."""
    mcfg = ModelConfig()
    mcfg.phase, mcfg.nc, mcfg.inputShape, mcfg.device = phase, nc, inputShape, "cpu"
    for k, v in fields.items():
        setattr(mcfg, k, v)
    return mcfg.finalize()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
