"""Pascal VOC detection data: a Dataset, its collate function and the DataLoader Mars trains with.

The Mars collate format (the one place that defines it; train/ checks it where it reads it):
    images  uint8   (B, 3, H, W)  RGB, H, W = mcfg.inputShape; the trainer converts to float and divides by 255.
    targets float32 (N, 6)        one row per object of the batch:
                                  (imageIndex, classIndex, x0, y0, x1, y1)
                                  imageIndex = position of the image in the batch (0..B-1),
                                  classIndex = position of the class name in mcfg.classList,
                                  x0, x1 divided by W and y0, y1 divided by H: xyxy in network-input pixels,
                                  normalised to [0, 1]. No padding rows; N may be 0 (targets is then (0, 6)).
    metas   list of B dicts       see VocDataset.__getitem__ ("gt" holds boxes in original-image pixels).
"""
import os
import random

import cv2
import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler, get_worker_info

from dl.aug import augmentFromConfig
from misc.img import IMAGE_SUFFIXES, boxesToLetterbox, letterbox, letterboxGeometry
from misc.log import log
from misc.misc import MarsError
from misc.xml import readVocXml


def readSplitFile(path):
    """Image stems listed in a split file, one per line, blank lines ignored; MarsError naming the file otherwise."""
    if not path or not os.path.isfile(path):
        raise MarsError("split file {} does not exist; check mcfg.subsetMap".format(path))
    with open(path, "r", encoding="utf-8-sig") as f:  # -sig: a byte-order mark (Windows editors) is not a stem
        stems = [line.strip() for line in f if line.strip()]
    if not stems:
        raise MarsError("split file {} lists no images".format(path))
    for stem in stems:
        parts = stem.replace("\\", "/").split("/")
        if os.path.isabs(stem) or stem.startswith(("/", "\\")) or ".." in parts:
            raise MarsError("split file {} has entry {!r} that leaves the image folder; entries must be image "
                            "stems relative to mcfg.imageDir (no '..', not absolute)".format(path, stem))
    return stems


def findImage(imageDir, stem, suffix):
    """imageDir/<stem><suffix>, else the first imageDir/<stem><other image suffix> that exists (a data set may mix
    .jpg and .png, or write .JPG); None when there is none."""
    for candidate in (suffix,) + tuple(s for s in IMAGE_SUFFIXES + tuple(s.upper() for s in IMAGE_SUFFIXES) if s != suffix):
        path = os.path.join(imageDir, stem + candidate)
        if os.path.isfile(path):
            return path
    return None


def imreadBgr(path):
    """cv2.imread as uint8 (H, W, 3) BGR; MarsError naming the file when it cannot be decoded."""
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise MarsError("image {} cannot be decoded (missing, truncated or not an image); replace it, or remove it "
                        "(and its line in the split file)".format(path))
    return image


def loadAnnotation(xmlPath, imagePath, classIndex, selected, knob):
    """Targets of one image from its VOC file.

    classIndex: class name -> index; selected: set of kept class names or None (all); knob names the
    selection knob for the error message. Returns origShape (h, w), classIndexes (n,) int64, boxesXyxy (n, 4)
    float32 in original-image pixels clipped to the image, and the numbers of boxes clipped and dropped
    (empty or inverted after clipping).
    """
    width, height, objects = readVocXml(xmlPath)
    if width is None:  # no <size>: the image tells
        height, width = imreadBgr(imagePath).shape[:2]
    rows, classes = [], []
    for name, x0, y0, x1, y1 in objects:
        if selected is not None and name not in selected:
            continue
        if name not in classIndex:
            raise MarsError("annotation {} has class {!r}, which is not in mcfg.classList; add it to "
                            "mcfg.classList or leave it out with mcfg.{}".format(xmlPath, name, knob))
        rows.append((x0, y0, x1, y1))
        classes.append(classIndex[name])
    boxes = np.asarray(rows, dtype=np.float32).reshape(-1, 4)
    clipped = boxes.copy()
    np.clip(clipped[:, 0::2], 0, width, out=clipped[:, 0::2])
    np.clip(clipped[:, 1::2], 0, height, out=clipped[:, 1::2])
    valid = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    numClipped = int((np.any(clipped != boxes, axis=1) & valid).sum())
    return ((int(height), int(width)), np.asarray(classes, dtype=np.int64)[valid], clipped[valid], numClipped,
            int((~valid).sum()))


class VocDataset(Dataset):
    """Images of one split with their VOC boxes, every annotation parsed once at construction.

    Per image it keeps origShape (h, w), classIndexes (n,) int64 and boxesXyxy (n, 4) float32 in original-image
    pixels, clipped to the image, class-filtered by mcfg.trainSelectedClasses (train) or testSelectedClasses.
    numClipped / numDropped count the boxes clipped to their image / dropped as empty or outside.
    """

    def __init__(self, mcfg, splitName, train):
        self.mcfg = mcfg
        self.train = train
        self.inputShape = tuple(mcfg.inputShape)
        self.augment = bool(train and mcfg.augment)
        self.rng = np.random.default_rng(mcfg.seed)  # replaced per worker by seedWorker
        for knob in ("imageDir", "annotationDir"):
            folder = getattr(mcfg, knob)
            if not folder or not os.path.isdir(folder):
                raise MarsError("mcfg.{}={!r} is not a folder; point it at the data set's {}".format(
                    knob, folder, "images" if knob == "imageDir" else "VOC XML annotations"))
        if not mcfg.classList:
            raise MarsError("mcfg.classList is empty; list the class names of the data set")
        if splitName not in mcfg.subsetMap:
            raise MarsError("split {!r} is not in mcfg.subsetMap (known: {})".format(splitName, sorted(mcfg.subsetMap)))
        splitFile = mcfg.subsetMap[splitName]
        knob = "trainSelectedClasses" if train else "testSelectedClasses"
        selected = getattr(mcfg, knob)
        selected = None if selected is None else set(selected)
        classIndex = {name: i for i, name in enumerate(mcfg.classList)}

        self.imagePaths, self.origShapes, self.classIndexes, self.boxesXyxy = [], [], [], []
        numClipped = numDropped = 0
        for stem in readSplitFile(splitFile):
            imagePath = findImage(mcfg.imageDir, stem, mcfg.suffix)
            xmlPath = os.path.join(mcfg.annotationDir, stem + ".xml")
            if imagePath is None:
                raise MarsError("image {} listed in split file {} does not exist (nor with another image suffix: {}; "
                                "mcfg.suffix is the one tried first)".format(
                                    os.path.join(mcfg.imageDir, stem + mcfg.suffix), splitFile, " ".join(IMAGE_SUFFIXES)))
            if not os.path.isfile(xmlPath):
                raise MarsError("annotation {} listed in split file {} does not exist".format(xmlPath, splitFile))
            origShape, classes, boxes, clipped, dropped = loadAnnotation(xmlPath, imagePath, classIndex, selected, knob)
            numClipped, numDropped = numClipped + clipped, numDropped + dropped
            self.imagePaths.append(imagePath)
            self.origShapes.append(origShape)
            self.classIndexes.append(classes)
            self.boxesXyxy.append(boxes)
        self.numClipped, self.numDropped = numClipped, numDropped
        if numClipped or numDropped:
            log("{}: {} boxes clipped to their image, {} empty or outside boxes dropped ({})".format(
                splitName, numClipped, numDropped, splitFile))

    def __len__(self):
        return len(self.imagePaths)

    def numObjects(self):
        """Objects kept as targets over the whole split."""
        return int(sum(len(c) for c in self.classIndexes))

    def __getitem__(self, index):
        """One sample.

        Returns:
            image: uint8 tensor (3, H, W), RGB, H, W = mcfg.inputShape.
            labels: float32 tensor (n, 5) rows (classIndex, x0, y0, x1, y1) in network-input pixels.
            meta: dict with "index" (int), "path" (image path), "origShape" (h, w), "scale" (float) and
                "pad" ((left, top) pixels) of the letterbox, and "gt": float32 tensor (m, 5) rows
                (classIndex, x0, y0, x1, y1) in original-image pixels, class-filtered and unaugmented.
                In augmented training "scale"/"pad" still describe the plain letterbox, not the augmentation.
        """
        path = self.imagePaths[index]
        imageBgr = imreadBgr(path)
        height, width = imageBgr.shape[:2]
        classes, boxesOrig = self.classIndexes[index], self.boxesXyxy[index]
        if (height, width) != self.origShapes[index]:  # <size> in the XML disagrees with the image: trust the image
            boxesOrig = boxesOrig.copy()
            np.clip(boxesOrig[:, 0::2], 0, width, out=boxesOrig[:, 0::2])
            np.clip(boxesOrig[:, 1::2], 0, height, out=boxesOrig[:, 1::2])
            valid = (boxesOrig[:, 2] > boxesOrig[:, 0]) & (boxesOrig[:, 3] > boxesOrig[:, 1])
            classes, boxesOrig = classes[valid], boxesOrig[valid]
        if self.augment:
            image, boxes, keep = augmentFromConfig(self.mcfg, imageBgr, boxesOrig, self.rng)
            scale, _, pad = letterboxGeometry((height, width), self.inputShape)
        else:
            image, scale, pad = letterbox(imageBgr, self.inputShape)
            boxes = boxesToLetterbox(boxesOrig, scale, pad)
        imageRgb = np.ascontiguousarray(image.transpose(2, 0, 1)[::-1])  # (3, H, W), BGR -> RGB in one copy
        kept = classes[keep] if self.augment else classes
        labels = np.concatenate((kept[:, None].astype(np.float32), boxes.astype(np.float32)), axis=1)
        gt = np.concatenate((classes[:, None].astype(np.float32), boxesOrig), axis=1)
        meta = {"index": int(index), "path": path, "origShape": (height, width), "scale": float(scale),
                "pad": (int(pad[0]), int(pad[1])), "gt": torch.from_numpy(gt)}
        return torch.from_numpy(imageRgb), torch.from_numpy(labels), meta


def collate(batch):
    """[(image, labels, meta)] -> images uint8 (B, 3, H, W), targets float32 (N, 6), metas [dict]; see the module docstring."""
    images, labelList, metas = zip(*batch)
    images = torch.from_numpy(np.stack([image.numpy() for image in images]))  # plain memcpy, no intra-op threads
    H, W = images.shape[2:]
    scale = torch.tensor([W, H, W, H], dtype=torch.float32)
    rows = []
    for imageIndex, labels in enumerate(labelList):
        if len(labels):
            imageColumn = torch.full((len(labels), 1), float(imageIndex))
            rows.append(torch.cat((imageColumn, labels[:, :1], labels[:, 1:5] / scale), dim=1))
    targets = torch.cat(rows) if rows else torch.zeros((0, 6), dtype=torch.float32)
    return images, targets, list(metas)


def seedWorker(workerId):
    """DataLoader worker_init_fn: seed numpy, random and the dataset's Generator from the worker's torch seed."""
    info = get_worker_info()
    seed = info.seed % (2 ** 32)
    np.random.seed(seed)
    random.seed(seed)
    cv2.setNumThreads(0)  # one worker = one core; OpenCV's own threads would oversubscribe
    info.dataset.rng = np.random.default_rng(seed)


def makeDataLoader(mcfg, splitName, train, shuffle=None, batchSize=None):
    """DataLoader over VocDataset(mcfg, splitName, train) yielding batches in the Mars collate format.

    Reproducible for a given mcfg.seed and mcfg.dcore: the shuffle order comes from a Generator seeded with
    mcfg.seed, and each worker seeds its augmentation from it. Under torch.distributed a training loader uses a
    DistributedSampler (the trainer calls its set_epoch).
    """
    dataset = VocDataset(mcfg, splitName, train)
    generator = torch.Generator()
    generator.manual_seed(mcfg.seed)
    shuffle = train if shuffle is None else shuffle
    sampler = None
    if train and dist.is_available() and dist.is_initialized():  # torchrun: each rank reads its share of the split
        sampler = DistributedSampler(dataset, shuffle=shuffle, seed=mcfg.seed)
        shuffle = None
    return DataLoader(dataset, batch_size=batchSize or mcfg.batchSize, shuffle=shuffle, sampler=sampler,
                      num_workers=mcfg.dcore, persistent_workers=mcfg.dcore > 0,
                      pin_memory=str(mcfg.device).startswith("cuda"), drop_last=False, collate_fn=collate,
                      generator=generator, worker_init_fn=seedWorker)
