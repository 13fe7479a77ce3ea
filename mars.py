"""Mars command line: python mars.py [-cfg NAME] [-root DIR] [-train | -eval | -pipe | -predict PATH | -inspect PATH |
-summary] [-nobuf].

Several devices: torchrun --nproc_per_node=N mars.py -cfg ... (DistributedDataParallel; rank 0 logs, saves, evaluates).
The config name is checked before torch and the engine are imported, so a mistyped name is reported at once.
"""
import argparse
import getpass
import os
import sys
import traceback

DEFAULT_CFG = "demo.nano.full"
CFGOPS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cfgops")


def userName():
    """USER, else the login name, else 'mars' (containers and CI often have no USER)."""
    name = os.environ.get("USER") or os.environ.get("USERNAME")
    if not name:
        try:
            name = getpass.getuser()
        except Exception:
            name = "mars"
    return name


def parseArgs(argv):
    parser = argparse.ArgumentParser(prog="mars", description="Mars: a readable YOLOv8 training framework")
    parser.add_argument("-cfg", default=DEFAULT_CFG, help="config name <cfgops file>.<tags> (default: %(default)s)")
    parser.add_argument("-root", default=os.environ.get("MARS_ROOT", os.path.join("~", "mars-runs")),
                        help="run root outside the code folder (default: $MARS_ROOT or ~/mars-runs)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("-train", dest="mode", action="store_const", const="train", help="train only")
    mode.add_argument("-eval", dest="mode", action="store_const", const="eval", help="evaluate the best weights only")
    mode.add_argument("-pipe", dest="mode", action="store_const", const="pipe", help="train then evaluate (default)")
    mode.add_argument("-predict", metavar="PATH", help="paint detections on an image or a folder of images")
    mode.add_argument("-inspect", metavar="PATH", help="draw what the network learns (assignment, score maps, "
                      "distillation maps; for a student also what each loss term does to the new classes) for an image "
                      "or a folder of images, under <run>/inspect/")
    mode.add_argument("-summary", dest="mode", action="store_const", const="summary",
                      help="one row per block: output shape, parameters, GFLOPs (also <run>/model.txt)")
    parser.add_argument("-nobuf", action="store_true", help="ignore cached checkpoints and start over")
    parser.add_argument("-debug", action="store_true", help="show tracebacks of errors")
    return parser.parse_args(argv)


def configFileError(cfgname):
    """The `mars: error:` text for a config name whose cfgops file does not exist (None when it exists): checked with
    os alone, before any import of torch (cfgops.makeConfig says the same after the imports)."""
    fileName = cfgname.split(".")[0]
    files = sorted(f[:-3] for f in os.listdir(CFGOPS_DIR) if f.endswith(".py") and not f.startswith("_"))
    if fileName in files:
        return None
    return "config file cfgops/{}.py does not exist; config files: {}".format(fileName, ", ".join(files))


def main(argv=None):
    args = parseArgs(argv)
    error = configFileError(args.cfg)
    for flag in ("predict", "inspect"):
        path = getattr(args, flag)
        if path is not None and not os.path.exists(path):
            error = error or "-{} path {} does not exist".format(flag, path)
    if error:
        sys.stderr.write("mars: error: {}\n".format(error))
        return 2
    from misc.errors import MarsError
    try:
        from cfgops import makeConfig
        mcfg = makeConfig(args.cfg, args.root, userName(), args.nobuf)  # tags, knobs and data paths checked here
        mode = "predict" if args.predict else "inspect" if args.inspect else (args.mode or "pipe")
        return runMode(mcfg, mode, args.predict or args.inspect)
    except MarsError as e:
        if args.debug:
            traceback.print_exc()
        sys.stderr.write("mars: error: {}\n".format(e))
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("mars: interrupted\n")
        return 130


def runMode(mcfg, mode, path):
    """Import the engine (torch, the model, the trainer) and run the mode; returns the exit code."""
    from engine.modes import run
    from engine.signals import TrainingInterrupted
    from misc.dist import initDistributed
    try:
        mcfg = mcfg.copy(device=initDistributed(mcfg.device))  # torchrun: one process per device
        run(mcfg, mode, path)
    except TrainingInterrupted as e:
        return e.exitCode
    return 0


if __name__ == "__main__":
    sys.exit(main())
