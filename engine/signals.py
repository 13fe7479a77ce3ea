"""Stopping a run by a signal: SIGINT / SIGTERM finish the step, the state is saved, TrainingInterrupted carries the
exit code; and the test-only hook that sends a signal at a chosen step."""
import os
import signal

from misc.errors import MarsError


class TrainingInterrupted(Exception):
    """SIGINT / SIGTERM arrived; the state was saved. exitCode = 128 + signal number."""

    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.exitCode = 128 + signum


def testFault():
    """Test-only hook: MARS_TEST_FAULT='SIGNAL@STEP' (e.g. 'SIGKILL@7') makes the trainer send itself that signal
    right after the batch of that global iteration (0-based, counted over epochs), so crash and resume
    tests reach the same moment on any machine. Returns (signal number, step) or None when unset."""
    value = os.environ.get("MARS_TEST_FAULT")
    if not value:
        return None
    name, _, step = value.partition("@")
    if not hasattr(signal, name) or not step.isdigit():
        raise MarsError("MARS_TEST_FAULT={!r} must look like SIGTERM@7 (a test-only hook); unset it".format(value))
    return int(getattr(signal, name)), int(step)
