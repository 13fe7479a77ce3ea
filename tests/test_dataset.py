"""VOC reading and the Dataset / collate / DataLoader of dl/vocdataset.py, on tiny data sets built in tmp_path: split
files (stems, file names with their suffix as the course writes them, lines leaving the image folder), missing or
bad files, clipping, VOC <difficult> objects (no targets, ignored ground truth)."""
import os

import cv2
import numpy as np
import pytest
import torch

from config.mconfig import ModelConfig
from dl.vocdataset import VocDataset, collate, makeDataLoader
from misc.errors import MarsError
from misc.xml import readVocXml
from tests.helpers import datasetConfig, writeImage


def writeXml(path, objects, size=None, header=""):
    """objects: [(name, x0, y0, x1, y1)]; size: (width, height) or None for no <size>."""
    text = header + "<annotation>"
    if size is not None:
        text += "<size><width>{}</width><height>{}</height><depth>3</depth></size>".format(*size)
    for name, x0, y0, x1, y1 in objects:
        text += ("<object><name>{}</name><bndbox><xmin>{}</xmin><ymin>{}</ymin><xmax>{}</xmax><ymax>{}</ymax>"
                 "</bndbox></object>").format(name, x0, y0, x1, y1)
    with open(path, "w") as f:
        f.write(text + "</annotation>\n")


def writeSample(root, stem, objects, shape=(60, 80), writeSize=True):
    """A gray jpg of shape (h, w) and its XML under root/images and root/annotations."""
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    cv2.imwrite(os.path.join(root, "images", stem + ".jpg"), np.full(shape + (3,), 90, np.uint8))
    writeXml(os.path.join(root, "annotations", stem + ".xml"), objects, (shape[1], shape[0]) if writeSize else None)


def vocConfig(root, splits, classList=("A", "B", "C"), inputShape=(64, 64)):
    """ModelConfig over root with split name -> list of stems (written to root/splits/<name>.txt)."""
    os.makedirs(os.path.join(root, "splits"), exist_ok=True)
    mcfg = ModelConfig()
    mcfg.imageDir, mcfg.annotationDir = os.path.join(root, "images"), os.path.join(root, "annotations")
    mcfg.classList, mcfg.inputShape, mcfg.dcore, mcfg.batchSize = list(classList), inputShape, 0, 4
    for name, stems in splits.items():
        mcfg.subsetMap[name] = os.path.join(root, "splits", name + ".txt")
        with open(mcfg.subsetMap[name], "w") as f:
            f.write("\n".join(stems) + "\n")
    return mcfg


def test_read_voc_xml(tmp_path):
    path = str(tmp_path / "a.xml")
    writeXml(path, [("A", 1, 2, 30, 40.5), ("B", 0, 0, 5, 5)], size=(80, 60))
    assert readVocXml(path) == (80, 60, [("A", 1.0, 2.0, 30.0, 40.5), ("B", 0.0, 0.0, 5.0, 5.0)])
    writeXml(path, [], size=None)
    assert readVocXml(path) == (None, None, [])


@pytest.mark.parametrize("header", ['<!DOCTYPE annotation [<!ENTITY x "boom">]>', '<!doctype annotation>'])
def test_read_voc_xml_refuses_declarations(tmp_path, header):
    path = str(tmp_path / "evil.xml")
    writeXml(path, [("A", 1, 2, 3, 4)], size=(8, 8), header=header)
    with pytest.raises(MarsError, match="evil.xml.*(DOCTYPE|ENTITY)"):
        readVocXml(path)


def test_read_voc_xml_malformed(tmp_path):
    path = tmp_path / "bad.xml"
    path.write_text("<annotation><object><name>A</name></annotation>")
    with pytest.raises(MarsError, match="bad.xml is not valid XML: mismatched tag"):
        readVocXml(str(path))


def test_class_filtering_and_gt(tmp_path):
    root = str(tmp_path)
    writeSample(root, "s1", [("A", 10, 10, 20, 20), ("B", 30, 5, 50, 25), ("Z", 1, 1, 5, 5)], shape=(60, 80))
    mcfg = vocConfig(root, {"train": ["s1"]})
    mcfg.trainSelectedClasses, mcfg.testSelectedClasses = ["B"], ["A", "B"]
    train = VocDataset(mcfg, "train", train=True)
    assert train.classIndexes[0].tolist() == [1]  # only B kept; unknown Z was filtered out, no error
    mcfg.augment = False
    image, labels, meta = VocDataset(mcfg, "train", train=False)[0]
    assert image.shape == (3, 64, 64) and image.dtype == torch.uint8
    # gt: original-image pixels; labels: letterbox of 80x60 into 64x64: scale 0.8, pad (0, 8)
    assert torch.equal(meta["gt"], torch.tensor([[0, 10, 10, 20, 20], [1, 30, 5, 50, 25]], dtype=torch.float32))
    assert meta["origShape"] == (60, 80) and meta["scale"] == pytest.approx(0.8) and meta["pad"] == (0, 8)
    expected = torch.tensor([[0, 8, 16, 16, 24], [1, 24, 12, 40, 28]], dtype=torch.float32)
    assert torch.allclose(labels, expected)
    assert meta["index"] == 0 and meta["path"].endswith("s1.jpg")


def test_unknown_class(tmp_path):
    root = str(tmp_path)
    writeSample(root, "s1", [("A", 10, 10, 20, 20), ("Z", 1, 1, 5, 5)])
    mcfg = vocConfig(root, {"test": ["s1"]})
    with pytest.raises(MarsError, match="s1.xml has class 'Z'.*classList.*testSelectedClasses"):
        VocDataset(mcfg, "test", train=False)


@pytest.mark.parametrize("entries, message", [
    ([], "lists no images"),
    (["s1", "../s1"], "leaves the image folder"),
    (["/etc/passwd"], "leaves the image folder"),
    (["s1", "nothere"], "nothere.jpg listed in split file"),
])
def test_bad_splits(tmp_path, entries, message):
    root = str(tmp_path)
    writeSample(root, "s1", [("A", 10, 10, 20, 20)])
    mcfg = vocConfig(root, {"train": entries})
    with pytest.raises(MarsError, match=message):
        VocDataset(mcfg, "train", train=True)


def test_missing_split_file_and_annotation(tmp_path):
    root = str(tmp_path)
    writeSample(root, "s1", [("A", 10, 10, 20, 20)])
    mcfg = vocConfig(root, {"train": ["s1"]})
    mcfg.subsetMap["train"] = os.path.join(root, "splits", "missing.txt")
    with pytest.raises(MarsError, match="missing.txt does not exist"):
        VocDataset(mcfg, "train", train=True)
    with pytest.raises(MarsError, match="'nosplit' is not in mcfg.subsetMap"):
        VocDataset(mcfg, "nosplit", train=True)
    mcfg.imageDir = os.path.join(root, "nothere")
    with pytest.raises(MarsError, match="mcfg.imageDir=.*nothere' is not a folder"):
        VocDataset(mcfg, "train", train=True)
    mcfg = vocConfig(root, {"train": ["s1"]})
    os.remove(os.path.join(root, "annotations", "s1.xml"))
    with pytest.raises(MarsError, match="annotation .*s1.xml listed"):
        VocDataset(mcfg, "train", train=True)


def test_clipping_counts_and_missing_size(tmp_path, monkeypatch):
    messages = []
    monkeypatch.setattr("dl.vocdataset.log", messages.append)
    root = str(tmp_path)
    objects = [("A", -5, 10, 20, 20), ("B", 70, 50, 95, 70), ("C", 100, 10, 120, 20), ("A", 30, 30, 20, 40),
               ("B", 1, 1, 9, 9)]
    writeSample(root, "s1", objects, shape=(60, 80), writeSize=False)  # no <size>: the image gives 80 x 60
    dataset = VocDataset(vocConfig(root, {"train": ["s1"]}), "train", train=True)
    assert (dataset.numClipped, dataset.numDropped) == (2, 2)
    assert dataset.origShapes[0] == (60, 80)
    assert dataset.boxesXyxy[0].tolist() == [[0, 10, 20, 20], [70, 50, 80, 60], [1, 1, 9, 9]]
    assert dataset.classIndexes[0].tolist() == [0, 1, 1]
    assert len(messages) == 1 and "2 boxes clipped to their image, 2 empty or outside boxes dropped" in messages[0]


def test_undecodable_image(tmp_path):
    root = str(tmp_path)
    writeSample(root, "s1", [("A", 10, 10, 20, 20)])
    with open(os.path.join(root, "images", "s1.jpg"), "wb") as f:
        f.write(b"not a jpeg")
    dataset = VocDataset(vocConfig(root, {"train": ["s1"]}), "train", train=False)
    with pytest.raises(MarsError, match="s1.jpg cannot be decoded"):
        dataset[0]


def test_collate_format():
    image = torch.zeros((3, 32, 64), dtype=torch.uint8)
    labels0 = torch.tensor([[2, 8, 4, 16, 8], [0, 0, 0, 64, 32]], dtype=torch.float32)
    labels2 = torch.tensor([[1, 32, 16, 48, 24]], dtype=torch.float32)
    batch = [(image, labels0, {"index": 5}), (image, torch.zeros((0, 5)), {"index": 6}), (image, labels2, {"index": 7})]
    images, targets, metas = collate(batch)
    assert images.shape == (3, 3, 32, 64) and images.dtype == torch.uint8
    expected = torch.tensor([[0, 2, 0.125, 0.125, 0.25, 0.25], [0, 0, 0, 0, 1, 1], [2, 1, 0.5, 0.5, 0.75, 0.75]])
    assert targets.dtype == torch.float32 and torch.allclose(targets, expected)
    assert [m["index"] for m in metas] == [5, 6, 7]
    _, targets, _ = collate([(image, torch.zeros((0, 5)), {})])
    assert targets.shape == (0, 6)


def test_data_loader_reproducible(tmp_path):
    root = str(tmp_path)
    rng = np.random.default_rng(0)
    stems = []
    for i in range(6):
        x0, y0 = rng.integers(0, 40, 2)
        writeSample(root, "s{}".format(i), [("ABC"[i % 3], x0, y0, x0 + 30, y0 + 20)], shape=(60, 80))
        stems.append("s{}".format(i))
    mcfg = vocConfig(root, {"train": stems})
    runs = []
    for dcore in (0, 0, 1, 1):
        mcfg = mcfg.copy(dcore=dcore)
        loader = makeDataLoader(mcfg, "train", train=True)
        runs.append([(targets, [m["index"] for m in metas]) for _, targets, metas in loader])
        assert sum(len(idx) for _, idx in runs[-1]) == 6
    for a, b in ((runs[0], runs[1]), (runs[2], runs[3])):
        assert all(torch.equal(ta, tb) and ia == ib for (ta, ia), (tb, ib) in zip(a, b))
    targets = torch.cat([t for t, _ in runs[0]])
    assert targets.shape[1] == 6 and targets[:, 2:].min() >= 0 and targets[:, 2:].max() <= 1


def test_images_with_another_suffix_are_found(tmp_path):
    """mcfg.suffix is tried first; a .png or an upper-case .JPG of the same stem is found too, and grey or 16-bit
    images decode to 3-channel uint8."""
    root = str(tmp_path)
    writeSample(root, "s1", [("A", 10, 10, 20, 20)])
    writeSample(root, "s2", [("B", 5, 5, 30, 30)])
    writeSample(root, "s3", [("C", 5, 5, 30, 30)])
    os.remove(os.path.join(root, "images", "s2.jpg"))
    cv2.imwrite(os.path.join(root, "images", "s2.png"), np.full((60, 80), 30000, np.uint16))  # grey, 16-bit
    os.rename(os.path.join(root, "images", "s3.jpg"), os.path.join(root, "images", "s3.JPG"))
    dataset = VocDataset(vocConfig(root, {"train": ["s1", "s2", "s3"]}), "train", train=False)
    assert [os.path.basename(p) for p in dataset.imagePaths] == ["s1.jpg", "s2.png", "s3.JPG"]
    for i in range(3):
        image, labels, meta = dataset[i]
        assert image.shape == (3, 64, 64) and image.dtype == torch.uint8 and len(labels) == 1


def test_split_file_with_bom_and_crlf(tmp_path):
    """A split file saved by a Windows editor: byte-order mark and CRLF line ends, trailing blanks."""
    root = str(tmp_path)
    writeSample(root, "s1", [("A", 10, 10, 20, 20)])
    writeSample(root, "s2", [("B", 10, 10, 20, 20)])
    mcfg = vocConfig(root, {"train": ["s1"]})
    with open(mcfg.subsetMap["train"], "wb") as f:
        f.write("\ufeffs1 \r\ns2\r\n\r\n".encode("utf-8"))
    dataset = VocDataset(mcfg, "train", train=False)
    assert [os.path.basename(p) for p in dataset.imagePaths] == ["s1.jpg", "s2.jpg"]


# ---------------------------------------------------------------- split files as the course writes them


def test_split_file_lines_may_name_files_with_their_suffix(tmp_path):
    root = str(tmp_path)
    writeImage(root, "1.jpg", [("A", 1, 1, 20, 20)])
    writeImage(root, "2.jpg", [("B", 5, 5, 30, 30)])
    writeImage(root, "3.PNG", [("A", 2, 2, 10, 10)])
    writeImage(root, "000004.png", [("B", 2, 2, 10, 12)])
    dataset = VocDataset(datasetConfig(root, ["1.jpg", "2", "3.PNG", "000004"]), "train", train=False)
    assert [os.path.basename(p) for p in dataset.imagePaths] == ["1.jpg", "2.jpg", "3.PNG", "000004.png"]
    assert [c.tolist() for c in dataset.classIndexes] == [[0], [1], [0], [1]]


def test_split_file_course_form_every_line_a_suffix(tmp_path):
    root = str(tmp_path)
    for i in range(1, 4):
        writeImage(root, "{}.jpg".format(i), [("A", 1, 1, 20, 20)])
    loader = makeDataLoader(datasetConfig(root, ["1.jpg", "2.jpg", "3.jpg"]), "train", train=False)
    images, targets, metas = next(iter(loader))
    assert images.shape == (2, 3, 64, 64) and [os.path.basename(m["path"]) for m in metas] == ["1.jpg", "2.jpg"]


@pytest.mark.parametrize("line", ["../1.jpg", "/etc/1.jpg", "a/../../1.jpg"])
def test_split_file_entry_leaving_the_folder_is_refused(tmp_path, line):
    root = str(tmp_path)
    writeImage(root, "1.jpg", [("A", 1, 1, 20, 20)])
    with pytest.raises(MarsError, match="leaves the image folder"):
        VocDataset(datasetConfig(root, [line]), "train", train=False)


def test_missing_image_named_with_suffix_says_which_file(tmp_path):
    root = str(tmp_path)
    writeImage(root, "1.jpg", [("A", 1, 1, 20, 20)])
    with pytest.raises(MarsError, match=r"images/7\.jpg listed in split file"):
        VocDataset(datasetConfig(root, ["1.jpg", "7.jpg"]), "train", train=False)


# ---------------------------------------------------------------- VOC difficult


@pytest.mark.parametrize("train", [True, False])
def test_difficult_objects_are_not_targets_but_ignored_ground_truth(tmp_path, train):
    root = str(tmp_path)
    writeImage(root, "1.jpg", [("A", 2, 2, 20, 20), ("B", 30, 10, 60, 40)], difficult=(1,))
    dataset = VocDataset(datasetConfig(root, ["1.jpg"]), "train", train=train)
    _, labels, meta = dataset[0]
    assert labels[:, 0].tolist() == [0.0]  # the difficult B is no target (training and validation loss)
    assert meta["gt"][:, 0].tolist() == [0.0, 1.0] and meta["gtIgnore"].tolist() == [False, True]
    assert dataset.numObjects() == 1
    everything = VocDataset(datasetConfig(root, ["1.jpg"], useDifficult=True), "train", train=train)
    _, labels, meta = everything[0]
    assert labels[:, 0].tolist() == [0.0, 1.0] and meta["gtIgnore"].tolist() == [False, False]
