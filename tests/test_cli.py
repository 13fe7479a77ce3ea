"""mars.py end to end on the tiny demo: -pipe, -predict, resume, and one-line errors."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def mars(*args, env=None):
    environment = dict(os.environ, USER="tester", **(env or {}))
    return subprocess.run([sys.executable, os.path.join(ROOT, "mars.py"), *args], capture_output=True, text=True,
                          env=environment, timeout=600)


@pytest.fixture(scope="module")
def tinyRun(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    result = mars("-cfg", "demo.nano.tiny", "-root", str(root), "-pipe")
    assert result.returncode == 0, result.stderr[-3000:]
    return root, result


def test_pipe_leaves_its_files(tinyRun):
    root, result = tinyRun
    run = root / "tester" / "demo.nano.tiny"
    for name in ("__cache__/best_weights.pth", "__cache__/last_epoch_weights.pth", "__cache__/info.txt",
                 "results.csv", "curves.png", "log.txt", "eval/map_table.csv", "eval/pr_curve.png",
                 "eval/confusion_matrix.png"):
        assert (run / name).is_file(), name
    with open(run / "results.csv") as f:
        assert len(f.read().strip().splitlines()) == 1 + 2  # header + 2 epochs
    painted = os.listdir(run / "eval" / "painted")
    assert len(painted) == 8 and all(p.endswith(".jpg") for p in painted)
    assert result.stdout.strip().splitlines()[-2].startswith("mAP50=")


def test_predict_folder_and_image(tinyRun, tmp_path):
    root, _ = tinyRun
    images = next((root / "demo-data").iterdir()) / "images"
    folder = tmp_path / "new"
    folder.mkdir()
    for name in sorted(os.listdir(images))[:3]:
        (folder / name).write_bytes((images / name).read_bytes())
    result = mars("-cfg", "demo.nano.tiny", "-root", str(root), "-predict", str(folder))
    assert result.returncode == 0, result.stderr[-3000:]
    out = root / "tester" / "demo.nano.tiny" / "predict"
    records = json.loads((out / "detections.json").read_text())
    assert [os.path.basename(r["image"]) for r in records] == sorted(os.listdir(folder))
    for record in records:
        for det in record["detections"]:
            assert det["class"].startswith("A") and 0 <= det["score"] <= 1 and len(det["boxXyxy"]) == 4
    assert len([f for f in os.listdir(out) if f.endswith(".jpg")]) == 3


def test_rerun_resumes_instead_of_restarting(tinyRun):
    root, _ = tinyRun
    result = mars("-cfg", "demo.nano.tiny", "-root", str(root), "-train")
    assert result.returncode == 0
    assert "training already finished" in result.stdout


@pytest.mark.parametrize("args, culprit", [
    (["-cfg", "nosuchfile.nano"], "cfgops/nosuchfile.py"),
    (["-cfg", "demo.nano.fulll"], "'fulll'"),
    (["-cfg", "demo.nano.tiny", "-eval"], "best_weights.pth"),
    (["-cfg", "demo.nano.tiny", "-predict", "/no/such/image.jpg"], "/no/such/image.jpg"),
])
def test_errors_are_one_line(tmp_path, args, culprit):
    result = mars(*args, "-root", str(tmp_path))
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if "mars: error" in line]  # progress bars also go to stderr
    assert len(errors) == 1 and errors[0].startswith("mars: error: ") and culprit in errors[0], result.stderr
    assert result.stderr.strip().splitlines()[-1] == errors[0]
    assert "Traceback" not in result.stderr


def test_unknown_tag_lists_what_exists(tmp_path):
    result = mars("-cfg", "demo.nano.oops", "-root", str(tmp_path))
    assert result.returncode == 2 and "full" in result.stderr and "teacher" in result.stderr and "batch@N" in result.stderr


def test_missing_mar20_says_where_it_looked(tmp_path):
    result = mars("-cfg", "c1.nano.full.cpu", "-root", str(tmp_path), env={"MARS_DATA": str(tmp_path / "nowhere")})
    assert result.returncode == 2 and str(tmp_path / "nowhere") in result.stderr and "splits/v5" in result.stderr
