"""misc/files.py: files written atomically get the usual permissions (0666 less the umask), not mkstemp's 0600."""
import os
import stat

import pytest

from misc.files import atomicTorchSave, atomicWrite, currentUmask


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_atomic_write_respects_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        assert currentUmask() == umask
        atomicWrite(str(tmp_path / "results.csv"), lambda f: f.write(b"epoch\n1\n"))
        atomicTorchSave({"w": 1}, str(tmp_path / "last.pth"))
        with open(tmp_path / "plain.txt", "w") as f:  # what any other new file gets
            f.write("x")
    finally:
        os.umask(previous)
    expected = 0o666 & ~umask
    for name in ("results.csv", "last.pth", "plain.txt"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == expected, (name, oct(expected))
    assert (tmp_path / "results.csv").read_bytes() == b"epoch\n1\n"
    assert sorted(os.listdir(tmp_path)) == ["last.pth", "plain.txt", "results.csv"]  # no temporary file left


def test_umask_fallback_without_proc(monkeypatch):
    """Where /proc/self/status cannot be read, the umask is read by setting and restoring it."""
    import builtins
    realOpen = builtins.open

    def noProc(path, *args, **kwargs):
        if str(path).startswith("/proc/"):
            raise OSError("no /proc")
        return realOpen(path, *args, **kwargs)
    previous = os.umask(0o027)
    try:
        monkeypatch.setattr(builtins, "open", noProc)
        assert currentUmask() == 0o027
        monkeypatch.undo()
        assert os.umask(0o027) == 0o027  # left as it was
    finally:
        os.umask(previous)
