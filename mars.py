"""Mars command line: python mars.py [-cfg NAME] [-root DIR] [-train | -eval | -pipe | -predict PATH] [-nobuf].

Several devices: torchrun --nproc_per_node=N mars.py -cfg ... (DistributedDataParallel; rank 0 logs, saves, evaluates).
"""
import argparse
import getpass
import os
import sys
import traceback

DEFAULT_CFG = "demo.nano.full"


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
    parser.add_argument("-nobuf", action="store_true", help="ignore cached checkpoints and start over")
    parser.add_argument("-debug", action="store_true", help="show tracebacks of errors")
    return parser.parse_args(argv)


def main(argv=None):
    args = parseArgs(argv)
    from misc.misc import MarsError
    from engine.trainer.base import TrainingInterrupted
    try:
        from engine.engine import run
        from factory.configfactory import makeConfig
        from misc.dist import initDistributed
        mcfg = makeConfig(args.cfg, args.root, userName(), args.nobuf)
        mcfg.device = initDistributed(mcfg.device)  # torchrun: one process per device
        run(mcfg, "predict" if args.predict else (args.mode or "pipe"), args.predict)
    except MarsError as e:
        if args.debug:
            traceback.print_exc()
        sys.stderr.write("mars: error: {}\n".format(e))
        return 2
    except TrainingInterrupted as e:
        return e.exitCode
    except KeyboardInterrupt:
        sys.stderr.write("mars: interrupted\n")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
