"""-inspect (engine/inspection.py): the drawn assignment is the assigner's, score maps peak on learnt objects,
distillation maps add up to the training terms, bad inputs stop with one line or a stated fallback."""
import json
import os
import shutil

import pytest
import torch

import mars
from engine.checkpoint import BEST_FILE
from engine.inspection import inspect
from engine.inspectmaps import cwdMaps, ldMaps
from engine.modes import predict
from inference.predictor import decodeOutputs
from misc.errors import MarsError
from misc.img import imagesToDevice
from misc.img import imreadBgr, networkInput
from model.base.yolomodel import YoloModel
from tests.helpers import makeConfig, writeVocSet
from train.distilloss import channelWiseDivergence, localisationDivergence
from train.loss import DetectionLoss
from train.tal import TaskAlignedAssigner

CLASSES = ["red", "blue"]
IMAGES = {  # one red object each (learnt), and one image with a red and a small blue object (not trained on)
    "p": (64, 64, [("red", 6, 8, 30, 40)]),
    "q": (64, 64, [("red", 34, 26, 60, 56)]),
    "r": (64, 64, [("red", 20, 4, 50, 24)]),
    "s": (64, 64, [("red", 34, 6, 60, 34), ("blue", 4, 40, 14, 52)]),
}
TRAIN_STEPS = 30


def tinyRunConfig(root, **fields):
    imageDir, annotationDir, subsetMap = writeVocSet(str(root), IMAGES, CLASSES, {"train": ["p", "q", "r"]})
    return makeConfig("nano", nc=2, inputShape=(64, 64), imageDir=imageDir, annotationDir=annotationDir,
                      classList=CLASSES, subsetMap=subsetMap, dcore=0, root=str(root), user="u", cfgname="tiny",
                      **fields)


def trainBriefly(mcfg):
    """A few AdamW steps on the three one-object images, BatchNorm statistics set from that batch, saved as the run's
    best weights (a couple of seconds: no trainer, no EMA)."""
    from dl.vocdataset import makeDataLoader
    torch.manual_seed(0)
    model = YoloModel(mcfg)
    loss = DetectionLoss(mcfg, model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.002)
    images, targets, _ = next(iter(makeDataLoader(mcfg, "train", train=False, shuffle=False)))
    x = imagesToDevice(images, "cpu")
    model.train()
    for _ in range(TRAIN_STEPS):
        optimizer.zero_grad()
        loss(model(x), targets).backward()
        optimizer.step()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # one pass: the running statistics become this batch's
    with torch.no_grad():
        model(x)
    os.makedirs(mcfg.cacheDir(), exist_ok=True)
    model.save(os.path.join(mcfg.cacheDir(), BEST_FILE))


@pytest.fixture(scope="module")
def trainedRun(tmp_path_factory):
    root = tmp_path_factory.mktemp("inspect")
    mcfg = tinyRunConfig(root)
    trainBriefly(mcfg)
    folder = root / "toInspect"
    shutil.copytree(mcfg.imageDir, folder)
    shutil.copy(folder / "p.jpg", folder / "lonely.jpg")  # no VOC file anywhere
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    inspect(mcfg, str(folder))
    with open(os.path.join(mcfg.runDir(), "inspect", "summary.json")) as f:
        return mcfg, json.load(f)


def anchorCentres(inputShape, strides=(8, 16, 32)):
    """(A, 2) anchor centres in network-input pixels, P3 then P4 then P5, row by row (written out independently)."""
    H, W = inputShape
    rows = [((col + 0.5) * s, (row + 0.5) * s) for s in strides for row in range(H // s) for col in range(W // s)]
    return torch.tensor(rows)


def boxesOf(summary):
    return {os.path.basename(r["image"]): r for r in summary["images"]}


def test_positives_lie_inside_their_box_at_most_topk(trainedRun):
    mcfg, summary = trainedRun
    centres = anchorCentres(mcfg.inputShape)
    minSide = 16.0  # the assigner's minCandidateSize: the stride of P4
    numPositives = 0
    for record in summary["images"]:
        for box in record["boxes"] or []:
            x0, y0, x1, y1 = box["boxXyxyInput"]
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            halfW, halfH = max(x1 - x0, minSide) / 2, max(y1 - y0, minSide) / 2
            index = box["anchorIndexes"]
            assert len(index) <= mcfg.talTopk, (record["image"], box)
            assert sum(box["positives"].values()) == len(index)
            for x, y in centres[index].tolist():
                assert cx - halfW < x < cx + halfW and cy - halfH < y < cy + halfH, (record["image"], box, x, y)
                if min(x1 - x0, y1 - y0) >= minSide:  # not widened: inside the box itself
                    assert x0 < x < x1 and y0 < y < y1
            numPositives += len(index)
    assert numPositives >= 20


def test_summary_is_the_assigners_foreground_mask(trainedRun):
    """Recomputed here through another path (forward(), predictor decoding, TaskAlignedAssigner.forward)."""
    mcfg, summary = trainedRun
    model = YoloModel(mcfg).load(os.path.join(mcfg.cacheDir(), BEST_FILE)).eval()
    assigner = TaskAlignedAssigner(topk=mcfg.talTopk, nc=mcfg.nc, alpha=0.5, beta=6.0, minCandidateSize=16.0)
    centres = anchorCentres(mcfg.inputShape)
    for record in summary["images"]:
        if record["boxes"] is None:
            continue
        image, _, _ = networkInput(imreadBgr(record["image"]), mcfg.inputShape)
        with torch.no_grad():
            boxes, scores = decodeOutputs(model(imagesToDevice(image[None], "cpu")), model.strides, model.regMax)
        gtBoxes = torch.tensor([b["boxXyxyInput"] for b in record["boxes"]])[None]  # (1, M, 4)
        gtLabels = torch.tensor([[CLASSES.index(b["class"])] for b in record["boxes"]], dtype=torch.float32)[None]
        _, _, _, fgMask, gtIndex = assigner(scores, boxes, centres, gtLabels, gtBoxes, torch.ones_like(gtLabels))
        expected = {(int(a), int(gtIndex[0, a])) for a in fgMask[0].nonzero()[:, 0]}
        drawn = {(a, m) for m, b in enumerate(record["boxes"]) for a in b["anchorIndexes"]}
        assert drawn == expected and drawn, record["image"]


def test_score_peak_of_the_objects_level_is_inside_its_box(trainedRun):
    mcfg, summary = trainedRun
    records = boxesOf(summary)
    for name in ("p.jpg", "q.jpg", "r.jpg"):
        record = records[name]
        box = record["boxes"][0]
        level = max(box["positives"], key=box["positives"].get)  # the level the assigner chose for it
        stats = record["scoreMaps"][level]
        x, y = stats["peakXyInput"]
        x0, y0, x1, y1 = box["boxXyxyInput"]
        assert x0 < x < x1 and y0 < y < y1, (name, level, stats, box)
        assert stats["peakClass"] == "red" and stats["max"] > 0.3, (name, stats)


def test_panels_skipped_images_and_missing_annotation(trainedRun):
    mcfg, summary = trainedRun
    records = boxesOf(summary)
    assert sorted(records) == ["lonely.jpg", "p.jpg", "q.jpg", "r.jpg", "s.jpg"]
    assert [os.path.basename(p) for p in summary["skipped"]] == ["broken.jpg"]
    assert summary["weights"] == "best weights"
    lonely = records["lonely.jpg"]
    assert lonely["annotation"] is None and lonely["boxes"] is None  # the panel says so; scores are still drawn
    assert records["s.jpg"]["annotation"] == os.path.join(mcfg.annotationDir, "s.xml")
    outDir = os.path.join(mcfg.runDir(), "inspect")
    for record in records.values():
        for panel in record["panels"].values():
            assert os.path.getsize(os.path.join(outDir, panel)) > 1000


@pytest.mark.parametrize("method", ["cwd", "ld"])
def test_distillation_panels_without_weights_fall_back(tmp_path, capsys, method):
    teacherFile = str(tmp_path / "teacher.pth")
    mcfg = tinyRunConfig(tmp_path, modelName="distillation", teacherModelFile=teacherFile, teacherClassIndexes=[0],
                         distilMethod=method, distilFeatures=("feat1", "Z"))
    YoloModel(mcfg).save(teacherFile)
    inspect(mcfg, os.path.join(mcfg.imageDir, "s.jpg"))
    assert "no trained weights" in capsys.readouterr().err  # the stated fallback
    with open(os.path.join(mcfg.runDir(), "inspect", "summary.json")) as f:
        summary = json.load(f)
    assert summary["weights"].startswith("UNTRAINED")
    record = summary["images"][0]
    assert os.path.isfile(os.path.join(mcfg.runDir(), "inspect", record["panels"]["distillation"]))
    distillation = record["distillation"]
    assert distillation["method"] == method
    if method == "cwd":
        assert list(distillation["features"]) == ["feat1", "Z"]
        assert distillation["features"]["Z"]["shape"] == [1, 256, 2, 2]
        assert all(v["cwd"] >= 0 for v in distillation["features"].values())


def test_maps_add_up_to_the_training_terms():
    torch.manual_seed(1)
    student, teacher = torch.randn(1, 8, 5, 6), torch.randn(1, 8, 5, 6)
    maps = cwdMaps(student, teacher, 2.0)
    torch.testing.assert_close(maps["kl"].sum(), channelWiseDivergence(student, teacher, 2.0))
    torch.testing.assert_close(maps["teacher"].sum(), torch.tensor(1.0))
    regMax, nc = 4, 3
    studentPreds = [torch.randn(1, 4 * regMax + nc, s, s) for s in (4, 2, 1)]
    teacherPreds = [torch.randn(1, 4 * regMax + nc, s, s) for s in (4, 2, 1)]
    levels, value = ldMaps(studentPreds, teacherPreds, regMax, [0, 2], 2.0)
    kl = torch.cat([level["kl"].flatten() for level in levels])
    weight = torch.cat([level["weight"].flatten() for level in levels])
    assert value == pytest.approx(float((kl * weight).sum() / weight.sum().clamp(min=1)), rel=1e-5)
    flatS = torch.cat([p.flatten(2) for p in studentPreds], 2).transpose(1, 2)[..., :4 * regMax]
    flatT = torch.cat([p.flatten(2) for p in teacherPreds], 2).transpose(1, 2)[..., :4 * regMax]
    assert value == pytest.approx(float(localisationDivergence(flatS, flatT, weight[None], regMax, 2.0)), rel=1e-5)


def test_bad_inputs_give_one_error_line(tmp_path, capsys):
    root = tmp_path / "runs"
    empty, bad, mixed = tmp_path / "empty", tmp_path / "bad.png", tmp_path / "mixed"
    empty.mkdir()
    bad.write_bytes(b"\x89PNG broken")
    mixed.mkdir()
    (mixed / "a_bad.jpg").write_bytes(b"nope")
    cases = [(["-inspect", str(empty)], "has no images"), (["-inspect", str(bad)], str(bad)),
             (["-inspect", str(tmp_path / "missing")], "does not exist"), (["-inspect", str(mixed)], "none of the 1")]
    for args, culprit in cases:
        capsys.readouterr()
        code = mars.main(["-cfg", "demo.nano.tiny", "-root", str(root)] + args)
        errors = [line for line in capsys.readouterr().err.splitlines() if "mars: error" in line]
        assert code == 2 and len(errors) == 1 and errors[0].startswith("mars: error: ") and culprit in errors[0], errors


def test_predict_folder_skips_undecodable_images(trainedRun, tmp_path, capsys):
    mcfg, _ = trainedRun
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(os.path.join(mcfg.imageDir, "p.jpg"), folder / "p.jpg")
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    predict(mcfg, str(folder))
    out = capsys.readouterr()
    assert "skipped" in out.err and "broken.jpg" in out.err
    assert out.out.strip().splitlines()[-1].startswith("predictions for 1 images (1 skipped: cannot be decoded)")
    with open(os.path.join(mcfg.runDir(), "predict", "detections.json")) as f:
        assert [os.path.basename(r["image"]) for r in json.load(f)] == ["p.jpg"]
    with pytest.raises(MarsError, match="cannot be decoded"):
        predict(mcfg, str(folder / "broken.jpg"))
