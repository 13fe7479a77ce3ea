"""Built-in demo data (dl/demo.py): deterministic, valid VOC, sound splits, every class in `small`."""
import filecmp
import os

import cv2
import numpy as np
import pytest

from config.mconfig import ModelConfig
from dl.demo import (MARKER, NUM_CLASSES, chooseSmallSplit, classNames, configureDemoData, ensureDemoData,
                     generateDemoData)
from dl.vocdataset import VocDataset, readSplitFile
from misc.misc import MarsError
from misc.xml import readVocXml

TINY = dict(numTrain=8, numValidation=2, numTest=2, numSmall=3, imageSize=96)


def readSplits(dataDir):
    return {name: readSplitFile(os.path.join(dataDir, "splits", "v5", name + ".txt"))
            for name in ("train", "validation", "test", "small")}


def test_classNames():
    assert classNames() == ["A{}".format(i) for i in range(1, 21)]


def test_tinyGenerationIsDeterministicAndValid(tmp_path):
    a = generateDemoData(str(tmp_path / "a"), seed=3, objectsPerImage=(3, 5), **TINY)
    b = generateDemoData(str(tmp_path / "b"), seed=3, objectsPerImage=(3, 5), **TINY)
    c = generateDemoData(str(tmp_path / "c"), seed=4, objectsPerImage=(3, 5), **TINY)
    splits = readSplits(a)
    stems = splits["train"] + splits["validation"] + splits["test"]
    assert len(stems) == len(set(stems)) == 12
    assert set(splits["small"]) <= set(splits["train"])
    assert sorted(os.listdir(os.path.join(a, "images"))) == sorted(s + ".jpg" for s in stems)
    for sub, ext in (("images", ".jpg"), ("annotations", ".xml")):
        names = [s + ext for s in stems]
        match, mismatch, errors = filecmp.cmpfiles(os.path.join(a, sub), os.path.join(b, sub), names, shallow=False)
        assert len(match) == 12 and not mismatch and not errors
    assert not filecmp.cmp(os.path.join(a, "annotations", stems[0] + ".xml"),
                           os.path.join(c, "annotations", stems[0] + ".xml"), shallow=False)

    classesPerStem = {}
    for stem in stems:
        width, height, objects = readVocXml(os.path.join(a, "annotations", stem + ".xml"))
        assert (width, height) == (96, 96) and 1 <= len(objects) <= 5
        for name, x0, y0, x1, y1 in objects:
            assert name in classNames() and 0 <= x0 < x1 <= 96 and 0 <= y0 < y1 <= 96
        classesPerStem[stem] = {name for name, *_ in objects}
    # >= 24 objects drawn from shuffled rounds of 20 classes: every class is in train, so small covers them all
    assert set().union(*(classesPerStem[s] for s in splits["small"])) == set(classNames())


def test_objectsSitOnTheirBoxes(tmp_path):
    dataDir = generateDemoData(str(tmp_path / "d"), seed=0, objectsPerImage=(1, 3), **TINY)
    for stem in readSplits(dataDir)["train"]:
        image = cv2.imread(os.path.join(dataDir, "images", stem + ".jpg")).astype(np.float64)
        _, _, objects = readVocXml(os.path.join(dataDir, "annotations", stem + ".xml"))
        for _, x0, y0, x1, y1 in objects:
            inside = image[int(y0):int(y1), int(x0):int(x1)]
            ring = np.concatenate((image[max(0, int(y0) - 3):int(y0)].reshape(-1, 3), image[int(y1):int(y1) + 3].reshape(-1, 3)))
            assert inside.std(axis=(0, 1)).max() > 8  # something drawn inside
            assert len(ring) == 0 or np.linalg.norm(inside.mean((0, 1)) - ring.mean(0)) > 3


def test_chooseSmallSplit():
    rng = np.random.default_rng(0)
    imageClasses = [{int(c) for c in rng.choice(NUM_CLASSES - 1, rng.integers(1, 4), replace=False)} for _ in range(200)]
    imageClasses[17] = {NUM_CLASSES - 1}  # the last class appears once: the choice must take image 17
    chosen = chooseSmallSplit(imageClasses, 30, np.random.default_rng(1))
    assert len(chosen) == len(set(chosen)) == 30 and chosen == sorted(chosen) and 17 in chosen
    assert set().union(*(imageClasses[i] for i in chosen)) == set().union(*imageClasses)
    cover = chooseSmallSplit(imageClasses, 2, np.random.default_rng(1))  # the cover wins over the size
    assert set().union(*(imageClasses[i] for i in cover)) == set().union(*imageClasses) and len(cover) > 2


def test_ensureDemoDataReusesAndIsAtomic(tmp_path, monkeypatch):
    monkeypatch.setattr("dl.demo.log", lambda msg: None)
    root = str(tmp_path)
    dataDir = ensureDemoData(root, seed=1, **TINY)
    assert os.path.isfile(os.path.join(dataDir, MARKER))
    assert os.listdir(root) == [os.path.basename(dataDir)]  # no temporary folder left
    stamp = os.path.getmtime(os.path.join(dataDir, "images", "00001.jpg"))
    assert ensureDemoData(root, seed=1, **TINY) == dataDir
    assert os.path.getmtime(os.path.join(dataDir, "images", "00001.jpg")) == stamp

    mcfg = configureDemoData(ModelConfig(), dataDir)
    mcfg.inputShape = (64, 64)
    image, labels, meta = VocDataset(mcfg, "small", train=True)[0]
    assert image.shape == (3, 64, 64) and labels.shape[1] == 5 and meta["origShape"] == (96, 96)

    def crash(*args, **kwargs):
        raise RuntimeError("disk full")
    monkeypatch.setattr("dl.demo.generateDemoData", crash)
    with pytest.raises(RuntimeError):
        ensureDemoData(root, seed=2, **TINY)
    assert os.listdir(root) == [os.path.basename(dataDir)]  # nothing half-written left behind
    os.remove(os.path.join(dataDir, MARKER))
    with pytest.raises(MarsError, match="no {}".format(MARKER)):
        ensureDemoData(root, seed=1, **TINY)
