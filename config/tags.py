"""Tags shared by every cfgops file: a phase name, `cuda@N`, `cpu`, `batch@N`, `epoch@N`, `size@N` (input N x N
pixels, a multiple of 32), `seed@N`, `dcore@N` (N data-loader worker processes; 0 loads in the main process)."""
import os

from config.mconfig import PHASES
from misc.errors import MarsError

COMMON_TAGS = list(PHASES) + ["cpu", "cuda@N", "batch@N", "epoch@N", "size@N", "seed@N", "dcore@N"]


PRETRAINED_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "resources", "pretrained",
                              "backbone")


def pretrainedBackbonePath(phase):
    """Where the course keeps a converted official backbone: resources/pretrained/backbone/backbone_<phase>.pth."""
    return os.path.join(PRETRAINED_DIR, "backbone_{}.pth".format(phase))


def applyCommonTags(mcfg, tags, fileTags, cfgFile):
    """Apply the common tags to mcfg; every tag must be common or in fileTags (the file's own), else MarsError
    listing the tags that exist."""
    for tag in tags:
        name, _, value = tag.partition("@")
        if tag in PHASES:
            mcfg.phase = tag
        elif tag == "cpu":
            mcfg.device = "cpu"
        elif name in ("cuda", "batch", "epoch", "size", "seed", "dcore") and value.isdigit():
            if name == "cuda":
                mcfg.device = "cuda:{}".format(value)
            elif name == "batch":
                mcfg.batchSize = int(value)
            elif name == "epoch":
                mcfg.maxEpoch = int(value)
            elif name == "size":
                mcfg.inputShape = (int(value), int(value))
            elif name == "dcore":
                mcfg.dcore = int(value)
            else:
                mcfg.seed = int(value)
        elif tag not in fileTags:
            raise MarsError("cfgops/{}.py has no tag {!r}; tags: {}".format(cfgFile, tag, ", ".join(list(fileTags) + COMMON_TAGS)))
    return mcfg
