"""bench/distill.py's --student-set: knobs parsed as Python literals, a run-name suffix per knob, one clear error for a
malformed pair or an unknown knob."""
import pytest

from bench import distill
from misc.errors import MarsError


def test_student_set_parses_literals_and_names_the_runs():
    knobs, suffix = distill.studentKnobs(["warmupMinIterations=100", "nominalBatchSize=64", "distilSchedule='cosine'"])
    assert knobs == {"warmupMinIterations": 100, "nominalBatchSize": 64, "distilSchedule": "cosine"}
    assert suffix == "-warmupMinIterations100-nominalBatchSize64-distilSchedulecosine"
    assert distill.studentKnobs([]) == ({}, "")
    args = distill.parseArgs(["--student-set", "warmupMinIterations=100", "--student-set", "nominalBatchSize=64"])
    assert args.student_set == ["warmupMinIterations=100", "nominalBatchSize=64"]


@pytest.mark.parametrize("pair", ["warmupMinIterations", "warmupMinIterations=", "warmup min=3", "seed=abc",
                                  "=3", "nominalBatchSize=None"])
def test_student_set_malformed_pairs(pair):
    with pytest.raises(MarsError, match="--student-set"):
        distill.studentKnobs([pair])


def test_student_set_unknown_knob_stops_before_training(tmp_path):
    """An unknown knob stops main with the config's own line (did you mean ...) before any teacher trains."""
    with pytest.raises(MarsError, match="warmupMinIteration is not a knob.*warmupMinIterations"):
        distill.main(["-root", str(tmp_path), "--student-set", "warmupMinIteration=100", "--methods", "finetune"])
    assert not any(tmp_path.rglob("*.pth"))
