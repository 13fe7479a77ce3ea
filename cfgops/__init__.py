"""The config files of Mars runs, one per data set: cfgops/<file>.py defines mcfg(tags) -> ModelConfig.

makeConfig turns a config name '<file>.<tag>.<tag>...' into the run's final (frozen) ModelConfig."""
import importlib
import os

from demo.writer import configureDemoData, ensureDemoData
from misc.errors import MarsError
from misc.log import warn

CFGOPS_DIR = os.path.dirname(os.path.abspath(__file__))
CODE_DIR = os.path.dirname(CFGOPS_DIR)


def availableConfigFiles():
    return sorted(f[:-3] for f in os.listdir(CFGOPS_DIR) if f.endswith(".py") and not f.startswith("_"))


def makeConfig(cfgname, root, user, nobuf=False):
    """Build, place and validate the config; generates the demo data when mcfg.demoData."""
    fileName, *tags = cfgname.split(".")
    if fileName not in availableConfigFiles():
        raise MarsError("config file cfgops/{}.py does not exist; config files: {}".format(fileName, ", ".join(availableConfigFiles())))
    module = importlib.import_module("cfgops." + fileName)
    mcfg = module.mcfg(tags)
    mcfg.cfgname, mcfg.root, mcfg.user, mcfg.nobuf = cfgname, os.path.abspath(os.path.expanduser(root)), user, nobuf
    if os.path.commonpath([mcfg.root, CODE_DIR]) == CODE_DIR:
        warn("run root {} is inside the code folder {}; keep runs outside it (-root or MARS_ROOT)".format(mcfg.root, CODE_DIR))
    for knob in ("checkpointModelFile", "teacherModelFile"):
        resolveRunFile(mcfg, knob)
    if mcfg.demoData:
        mcfg.finalizeDemo()  # a wrong demoStyle / demoImageSize is reported before any generation
        configureDemoData(mcfg, ensureDemoData(os.path.join(mcfg.root, "demo-data"), mcfg.seed, *mcfg.demoSize,
                                                 imageSize=mcfg.demoImageSize, style=mcfg.demoStyle))
    elif not os.path.isdir(mcfg.imageDir or ""):
        raise MarsError("data set not found: mcfg.imageDir {} does not exist (cfgops/{}.py). Expected <data root>/images/"
                        "<stem>.jpg, <data root>/annotations/<stem>.xml and <data root>/splits/v5/{{train,validation,test,small}}"
                        ".txt; set MARS_DATA to the data root or edit the file".format(mcfg.imageDir, fileName))
    import torch  # here, not at start-up: a wrong config name is reported before torch's import
    if str(mcfg.device).startswith("cuda") and not torch.cuda.is_available():
        raise MarsError("mcfg.device={!r} but this machine has no CUDA device; add the tag cpu (e.g. -cfg {}.cpu)".format(
            mcfg.device, cfgname))
    return mcfg.finalize()


def resolveRunFile(mcfg, knob):
    """A relative checkpointModelFile / teacherModelFile names a file of another run: '<cfgname>/__cache__/...'
    under root/user. A missing file stops with the command of the run that makes it."""
    path = getattr(mcfg, knob)
    if not path:
        return
    if not os.path.isabs(path):
        path = os.path.join(mcfg.root, mcfg.user, path)
        setattr(mcfg, knob, path)
    if not os.path.isfile(path):
        runName = os.path.basename(os.path.dirname(os.path.dirname(path)))
        raise MarsError("mcfg.{} {} does not exist; train that run first: python mars.py -cfg {} -root {}".format(
            knob, path, runName, mcfg.root))
