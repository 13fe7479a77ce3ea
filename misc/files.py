"""Files written so that a crash never leaves a half file (temporary file, fsync, rename), torch files loaded safely
(weights only), and file:// URLs."""
import os
import tempfile

from misc.errors import MarsError


def currentUmask():
    """The process's umask, read without changing it where the platform allows (Linux: /proc/self/status); elsewhere
    by setting and restoring it (os.umask can only be read that way)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomicWrite(path, writeFn):
    """writeFn(binaryFile) writes into a temporary file in path's folder; it is flushed, fsynced and renamed over
    path (and the folder fsynced), so path holds either its old or its new content whatever the moment of a crash.
    The file gets the mode open() would give a new file (0666 less the umask), not the temporary file's 0600."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=os.path.splitext(path)[1], dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            if hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), 0o666 & ~currentUmask())
            writeFn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        syncFolder(folder)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def syncFolder(folder):
    """fsync a folder so a rename in it survives a power loss (where the platform allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomicTorchSave(obj, path):
    """torch.save through atomicWrite."""
    import torch  # here, not at the top: checking a config name must not wait for torch's import (seconds)
    atomicWrite(path, lambda f: torch.save(obj, f))


def safeTorchLoad(path, what="checkpoint", fix=""):
    """torch.load with weights_only=True; a missing, damaged or truncated file, or one carrying pickled code, raises
    MarsError naming it (fix: what to do then, appended to the message)."""
    if not os.path.isfile(path):
        raise MarsError("{} file {} does not exist{}".format(what, path, fix and "; " + fix))
    import torch
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise MarsError("{} file {} cannot be loaded safely (weights only): {}{}".format(
            what, path, str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__, fix and "; " + fix)) from e


def urlToPath(url):
    """'file:///a/b' or '/a/b' -> '/a/b'."""
    return url[len("file://"):] if url.startswith("file://") else url
