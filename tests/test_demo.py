"""Built-in demo data (demo/): deterministic, valid VOC, sound splits, every class in `small`."""
import filecmp
import os

import cv2
import numpy as np
import pytest

from config.mconfig import ModelConfig
from demo.hard import ALPHA_MIN, HARD_VERSION, drawHardImage
from demo.shapes import NUM_CLASSES, ClassDeck, aircraftParts, classNames
from demo.writer import MARKER, chooseSmallSplit, configureDemoData, ensureDemoData, generateDemoData
from dl.vocdataset import VocDataset, readSplitFile
from misc.errors import MarsError
from misc.xml import readVocXml

TINY = dict(numTrain=8, numValidation=2, numTest=2, numSmall=3, imageSize=96)
HARD_TINY = dict(numTrain=6, numValidation=2, numTest=2, numSmall=1, imageSize=(320, 480), style="hard")


def readSplits(dataDir):
    return {name: readSplitFile(os.path.join(dataDir, "splits", "v5", name + ".txt"))
            for name in ("train", "validation", "test", "small")}


def test_class_names():
    assert classNames() == ["A{}".format(i) for i in range(1, 21)]


def test_tiny_generation_is_deterministic_and_valid(tmp_path):
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


def test_objects_sit_on_their_boxes(tmp_path):
    dataDir = generateDemoData(str(tmp_path / "d"), seed=0, objectsPerImage=(1, 3), **TINY)
    for stem in readSplits(dataDir)["train"]:
        image = cv2.imread(os.path.join(dataDir, "images", stem + ".jpg")).astype(np.float64)
        _, _, objects = readVocXml(os.path.join(dataDir, "annotations", stem + ".xml"))
        for _, x0, y0, x1, y1 in objects:
            inside = image[int(y0):int(y1), int(x0):int(x1)]
            ring = np.concatenate((image[max(0, int(y0) - 3):int(y0)].reshape(-1, 3), image[int(y1):int(y1) + 3].reshape(-1, 3)))
            assert inside.std(axis=(0, 1)).max() > 8  # something drawn inside
            assert len(ring) == 0 or np.linalg.norm(inside.mean((0, 1)) - ring.mean(0)) > 3


def test_choose_small_split():
    rng = np.random.default_rng(0)
    imageClasses = [{int(c) for c in rng.choice(NUM_CLASSES - 1, rng.integers(1, 4), replace=False)} for _ in range(200)]
    imageClasses[17] = {NUM_CLASSES - 1}  # the last class appears once: the choice must take image 17
    chosen = chooseSmallSplit(imageClasses, 30, np.random.default_rng(1))
    assert len(chosen) == len(set(chosen)) == 30 and chosen == sorted(chosen) and 17 in chosen
    assert set().union(*(imageClasses[i] for i in chosen)) == set().union(*imageClasses)
    cover = chooseSmallSplit(imageClasses, 2, np.random.default_rng(1))  # the cover wins over the size
    assert set().union(*(imageClasses[i] for i in cover)) == set().union(*imageClasses) and len(cover) > 2


def test_ensure_demo_data_reuses_and_is_atomic(tmp_path, monkeypatch):
    monkeypatch.setattr("demo.writer.log", lambda msg: None)
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
    monkeypatch.setattr("demo.writer.generateDemoData", crash)
    with pytest.raises(RuntimeError):
        ensureDemoData(root, seed=2, **TINY)
    assert os.listdir(root) == [os.path.basename(dataDir)]  # nothing half-written left behind
    os.remove(os.path.join(dataDir, MARKER))
    with pytest.raises(MarsError, match="no {}".format(MARKER)):
        ensureDemoData(root, seed=1, **TINY)


# ---------------------------------------------------------------------------------------------------------------
# the hard style (demo/hard.py)

@pytest.fixture(scope="module")
def hardData(tmp_path_factory):
    """A tiny hard demo set (6 / 2 / 2 images; small asks for 1, so only a cover of the classes gives more) written
    by ensureDemoData, seed 5."""
    return ensureDemoData(str(tmp_path_factory.mktemp("hard")), seed=5, **HARD_TINY)


def hardScenes(seed, count, sides=(320, 480)):
    """count hard images drawn straight from drawHardImage: [(image, objects, scene)]."""
    rng = np.random.default_rng(seed)
    deck, typeParts = ClassDeck(rng), [aircraftParts(k) for k in range(NUM_CLASSES)]
    return [drawHardImage(rng, *(int(v) for v in rng.integers(sides[0], sides[1] + 1, 2)), deck, typeParts)
            for _ in range(count)]


def silhouetteMask(polygons, height, width, margin=64):
    """The test's own raster of an aircraft: bool (height, width), cv2's anti-aliased fill at coverage >= ALPHA_MIN,
    on a canvas wider than the image so a border-cut aircraft is filled as the generator fills it."""
    canvas = np.zeros((height + 2 * margin, width + 2 * margin), np.uint8)
    for points in polygons:
        part = np.zeros_like(canvas)
        cv2.fillPoly(part, [np.round((points + margin) * 4).astype(np.int32)], 255, cv2.LINE_AA, shift=2)
        np.maximum(canvas, part, out=canvas)
    return canvas[margin:margin + height, margin:margin + width] >= ALPHA_MIN


def boundingBox(mask, x0=0, y0=0):
    """Pixel-edge box [x0, y0, x1, y1] of a bool mask's True pixels, offset by (x0, y0)."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return [x0 + cols[0], y0 + rows[0], x0 + cols[-1] + 1, y0 + rows[-1] + 1]


def test_hard_images_vary_in_size_and_keep_boxes_inside(hardData):
    assert os.path.basename(hardData) == "mar20hard-v{}-s5-320to480px-6-2-2-1".format(HARD_VERSION)
    splits = readSplits(hardData)
    sizes, counts = set(), []
    for stem in splits["train"] + splits["validation"] + splits["test"]:
        width, height, objects = readVocXml(os.path.join(hardData, "annotations", stem + ".xml"))
        assert cv2.imread(os.path.join(hardData, "images", stem + ".jpg")).shape == (height, width, 3)
        assert 320 <= width <= 480 and 320 <= height <= 480
        sizes.add((width, height))
        counts.append(len(objects))
        for name, x0, y0, x1, y1 in objects:
            assert name in classNames() and 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
    assert len({w for w, _ in sizes}) >= 3 and len({h for _, h in sizes}) >= 3 and any(w != h for w, h in sizes)
    assert min(counts) >= 4 and max(counts) <= 20 and sum(counts) / len(counts) >= 8  # many objects per image


def test_hard_boxes_are_the_drawn_silhouettes():
    """Each box is the bounding box of its aircraft re-rasterised here; where nothing else is near, the box is exactly
    where the image differs from the same scene rendered without aircraft bodies (pixels inside differ, none
    outside), so a box neither misses drawn pixels nor takes a shadow or a margin."""
    checked = 0
    for image, objects, scene in hardScenes(seed=2, count=8):
        height, width = image.shape[:2]
        boxes = np.array([o[1:] for o in objects])
        drawn = np.abs(scene["unoccluded"].astype(int) - scene["ground"].astype(int)).sum(2) > 0
        for k, ((_, *box), record) in enumerate(zip(objects, scene["aircraft"])):
            assert boundingBox(silhouetteMask(record["polygons"], height, width)) == box
            x0, y0, x1, y1 = (int(v) for v in box)
            near = [x0 - 3, y0 - 3, x1 + 3, y1 + 3]
            others = np.delete(boxes, k, 0)
            if ((others[:, 0] < near[2]) & (others[:, 2] > near[0]) & (others[:, 1] < near[3]) & (others[:, 3] > near[1])).any():
                continue  # another aircraft close by: its pixels would count
            nx0, ny0 = max(near[0], 0), max(near[1], 0)
            assert boundingBox(drawn[ny0:near[3], nx0:near[2]], nx0, ny0) == box
            checked += 1
    assert checked >= 30


def test_hard_colour_carries_no_class():
    """Liveries are drawn per object: a class shows several liveries; the mean colour of an aircraft tells its class
    no better than a guess (nearest class-mean colour, leave one out; chance 1/20, the easy demo ~1), and the class
    means of each colour channel spread little more than chance makes them (variance ratio F: ~1 when independent,
    1.9 here from the types' part shading; a tint of 6 grey levels per class index gives 3.8)."""
    liveries, colours, classes = {}, [], []
    for image, objects, scene in hardScenes(seed=3, count=12):
        for record in scene["aircraft"]:
            liveries.setdefault(record["classIndex"], set()).add(record["livery"])
            mask = silhouetteMask(record["polygons"], *image.shape[:2])
            colours.append(scene["unoccluded"][mask].mean(0))
            classes.append(record["classIndex"])
    assert len(classes) >= 100
    assert sum(len(v) >= 2 for v in liveries.values()) >= 18
    colours, classes = np.array(colours), np.array(classes)
    hits = 0
    for i in range(len(classes)):
        keep = np.arange(len(classes)) != i
        means = {c: colours[keep & (classes == c)].mean(0) for c in set(classes[keep].tolist())}
        hits += min(means, key=lambda c: np.linalg.norm(means[c] - colours[i])) == classes[i]
    assert hits / len(classes) < 0.25
    groups = [colours[classes == c] for c in np.unique(classes)]
    between = sum(len(g) * (g.mean(0) - colours.mean(0)) ** 2 for g in groups) / (len(groups) - 1)
    within = sum(((g - g.mean(0)) ** 2).sum(0) for g in groups) / (len(colours) - len(groups))
    assert (between / within).max() < 3.0


def test_hard_small_split_covers_train_classes(hardData):
    """small (asked for 1 image) takes as many train images as it needs to show every class (chooseSmallSplit)."""
    splits = readSplits(hardData)
    assert set(splits["small"]) <= set(splits["train"]) and len(splits["small"]) >= 2

    def classesOf(stems):
        return set().union(*({o[0] for o in readVocXml(os.path.join(hardData, "annotations", s + ".xml"))[2]}
                             for s in stems))
    assert classesOf(splits["small"]) == classesOf(splits["train"]) == set(classNames())


def test_hard_generation_is_deterministic(hardData, tmp_path):
    again = ensureDemoData(str(tmp_path / "again"), seed=5, **HARD_TINY)
    other = ensureDemoData(str(tmp_path / "other"), seed=6, **HARD_TINY)
    for sub in ("images", "annotations", os.path.join("splits", "v5")):
        names = sorted(os.listdir(os.path.join(hardData, sub)))
        assert names == sorted(os.listdir(os.path.join(again, sub)))
        match, mismatch, errors = filecmp.cmpfiles(os.path.join(hardData, sub), os.path.join(again, sub), names, shallow=False)
        assert len(match) == len(names) and not mismatch and not errors
    assert not filecmp.cmp(os.path.join(hardData, "annotations", "00001.xml"),
                           os.path.join(other, "annotations", "00001.xml"), shallow=False)
    assert os.path.basename(ensureDemoData(str(tmp_path / "easy"), seed=1, **TINY)) == "mar20demo-v1-s1-96px-8-2-2-3"


def test_hard_config_tags_combine(tmp_path, monkeypatch):
    """demo.<phase>.hard[.teacher|.distillation[.ld]] choose the hard data (sizes, image sides, input 320) and the
    distillation starts from demo.nano.hard.teacher; the easy tags stay as they were. No data is generated here."""
    import cfgops as configfactory

    calls = []
    monkeypatch.setattr(configfactory, "ensureDemoData", lambda root, seed, *sizes, **kw: calls.append((sizes, kw)) or root)
    root, user = str(tmp_path / "runs"), "tester"
    for run in ("demo.nano.hard.teacher", "demo.nano.teacher"):
        teacher = tmp_path / "runs" / user / run / "__cache__" / "best_weights.pth"
        teacher.parent.mkdir(parents=True)
        teacher.write_bytes(b"")
    mcfg = configfactory.makeConfig("demo.nano.hard.distillation", root, user)
    teacherFile = os.path.join(root, user, "demo.nano.hard.teacher", "__cache__", "best_weights.pth")
    assert mcfg.checkpointModelFile == mcfg.teacherModelFile == teacherFile
    assert mcfg.inputShape == (320, 320) and mcfg.demoStyle == "hard" and mcfg.modelName == "distillation"
    assert calls[-1] == ((400, 80, 120, 100), {"imageSize": (320, 640), "style": "hard"})
    assert configfactory.makeConfig("demo.nano.hard.distillation.ld", root, user).distilMethod == "ld"
    teacher = configfactory.makeConfig("demo.nano.hard.teacher", root, user)
    assert teacher.trainSelectedClasses == ["A{}".format(i) for i in range(1, 11)] and teacher.inputShape == (320, 320)
    assert calls[-1] == ((400, 80, 120, 100), {"imageSize": (320, 640), "style": "hard"})
    easy = configfactory.makeConfig("demo.nano.distillation", root, user)
    assert easy.checkpointModelFile == os.path.join(root, user, "demo.nano.teacher", "__cache__", "best_weights.pth")
    assert easy.inputShape == (160, 160) and calls[-1] == ((600, 100, 150, 120), {"imageSize": 192, "style": "easy"})
    from cfgops import demo  # the teacher run's name does not follow the order of the tags
    assert demo.mcfg(["distillation", "hard", "nano"]).checkpointModelFile.startswith("demo.nano.hard.teacher/")
    assert demo.mcfg(["nano", "tiny", "hard", "distillation"]).checkpointModelFile.startswith("demo.nano.hard.tiny.teacher/")

    mcfg = ModelConfig()
    mcfg.demoStyle = "harder"
    with pytest.raises(MarsError, match="mcfg.demoStyle='harder'"):
        mcfg.finalizeDemo()
    mcfg.demoStyle, mcfg.demoImageSize = "hard", (640, 320)
    with pytest.raises(MarsError, match="mcfg.demoImageSize"):
        mcfg.finalizeDemo()


def test_fine_style_draws_small_one_tone_aircraft(tmp_path):
    """Style fine: square images of the given side, 8-12 aircraft tried (some may find no room or be cut by the
    border), fuselages of 20-40 px (boxes at most ~1.4 fuselage lengths), every aircraft in the one light grey livery;
    the writer's fine data set and its cache folder name."""
    from demo import hard
    rng = np.random.default_rng(5)
    parts = [aircraftParts(k) for k in range(NUM_CLASSES)]
    deck = ClassDeck(rng)
    counts = []
    for _ in range(6):
        image, objects, scene = drawHardImage(rng, 320, 320, deck, parts, hard.FINE_OBJECTS_PER_IMAGE,
                                              hard.FINE_LENGTH_RANGE, hard.FINE_LIVERY)
        assert image.shape == (320, 320, 3)
        assert {a["livery"] for a in scene["aircraft"]} == {"lightGrey"}
        sides = [max(x1 - x0, y1 - y0) for _, x0, y0, x1, y1 in objects]
        assert max(sides) <= 40 * 1.5
        counts.append(len(objects))
    assert 2 <= min(counts) and max(counts) <= 12 and np.mean(counts) >= 7
    data = generateDemoData(str(tmp_path / "fine"), seed=0, numTrain=6, numValidation=2, numTest=2, numSmall=3,
                            imageSize=320, style="fine")
    sides = []
    for stem in readSplitFile(os.path.join(data, "splits", "v5", "train.txt")):
        _, _, objects = readVocXml(os.path.join(data, "annotations", stem + ".xml"))
        sides += [max(x1 - x0, y1 - y0) for _, x0, y0, x1, y1 in objects]
    assert len(sides) >= 30 and max(sides) <= 40 * 1.5  # the fine lengths reach the writer (hard: up to 72 * 1.4)
    assert os.path.basename(ensureDemoData(str(tmp_path / "cache"), 0, 4, 2, 2, 2, imageSize=320, style="fine")) == \
        "mar20fine-v{}-s0-320to320px-4-2-2-2".format(HARD_VERSION)


def test_fine_config_tag(tmp_path, monkeypatch):
    """demo.<phase>.fine[.teacher|.distillation]: fine data (sizes, 320 px images, input 320), the student starts from
    demo.nano.fine.teacher; hard and fine together stop with one line."""
    import cfgops as configfactory

    calls = []
    monkeypatch.setattr(configfactory, "ensureDemoData", lambda root, seed, *sizes, **kw: calls.append((sizes, kw)) or root)
    root, user = str(tmp_path / "runs"), "tester"
    teacher = tmp_path / "runs" / user / "demo.nano.fine.teacher" / "__cache__" / "best_weights.pth"
    teacher.parent.mkdir(parents=True)
    teacher.write_bytes(b"")
    mcfg = configfactory.makeConfig("demo.nano.fine.distillation", root, user)
    assert mcfg.teacherModelFile == str(teacher) and mcfg.demoStyle == "fine" and mcfg.inputShape == (320, 320)
    assert mcfg.distilResponsePath == "network"
    assert calls[-1] == ((400, 80, 120, 100), {"imageSize": 320, "style": "fine"})
    with pytest.raises(MarsError, match="hard and fine"):
        configfactory.makeConfig("demo.nano.hard.fine.teacher", root, user)
