"""Small helpers shared across Mars (this module imports nothing of ours)."""
import os
import tempfile

import torch


class MarsError(Exception):
    """A user mistake (config, path, data, file): mars.py prints it as one `mars: error: ...` line."""


def atomicTorchSave(obj, path):
    """Write obj with torch.save to a temporary file in the same folder, flush, fsync, then rename over path."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=".pth", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def safeTorchLoad(path, what="checkpoint"):
    """torch.load with weights_only=True; a missing file or a file carrying pickled code raises MarsError."""
    if not os.path.isfile(path):
        raise MarsError("{} file {} does not exist".format(what, path))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise MarsError("{} file {} cannot be loaded safely (weights only): {}".format(
            what, path, str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)) from e


def urlToPath(url):
    """'file:///a/b' or '/a/b' -> '/a/b'."""
    return url[len("file://"):] if url.startswith("file://") else url
