"""Logging for Mars: one place that writes to the terminal (and optionally a run's log file)."""
import logging
import sys



class _ConsoleHandler(logging.StreamHandler):
    """Info to the current sys.stdout, warnings and errors to the current sys.stderr (looked up per message, so a
    redirected or captured stream is honoured)."""

    def __init__(self):
        super().__init__(sys.stdout)

    def emit(self, record):
        self.stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
        super().emit(record)


_logger = logging.getLogger("mars")
if not _logger.handlers:
    _handler = _ConsoleHandler()
    _handler.setFormatter(logging.Formatter("%(message)s"))
    _logger.addHandler(_handler)
    _logger.setLevel(logging.INFO)
    _logger.propagate = False


def log(msg, *args):
    _logger.info(msg, *args) if args else _logger.info(msg)


def warn(msg):
    _logger.warning("mars: warning: {}".format(msg))


def addFileLog(path):
    """Also append every message to path (the run's log.txt)."""
    for h in _logger.handlers:
        if isinstance(h, logging.FileHandler) and h.baseFilename == path:
            return
    fh = logging.FileHandler(path)
    fh.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    _logger.addHandler(fh)


def setQuiet():
    """Warnings and errors only (the non-zero ranks of a torchrun job)."""
    _logger.setLevel(logging.WARNING)
