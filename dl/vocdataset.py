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

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from dl.aug import augmentFromConfig, mosaicCanvas
from dl.sampler import EpochBatchSampler
from misc.dist import rank, worldSize
from misc.errors import MarsError
from misc.img import IMAGE_SUFFIXES, boxesToLetterbox, imreadBgr, letterboxGeometry, networkInput
from misc.log import log
from misc.xml import readVocXml


def readSplitFile(path):
    """Entries of a split file, one per line, blank lines ignored: an image stem (`000005`) or an image file name
    with its suffix (`1.jpg`, as the course's MAR20 splits write them), mixed freely. MarsError naming the file for
    a missing or empty file, or an entry that leaves the image folder."""
    if not path or not os.path.isfile(path):
        raise MarsError("split file {} does not exist; check mcfg.subsetMap".format(path))
    with open(path, "r", encoding="utf-8-sig") as f:  # -sig: a byte-order mark (Windows editors) is not a stem
        entries = [line.strip() for line in f if line.strip()]
    if not entries:
        raise MarsError("split file {} lists no images".format(path))
    for entry in entries:
        parts = entry.replace("\\", "/").split("/")
        if os.path.isabs(entry) or entry.startswith(("/", "\\")) or ".." in parts:
            raise MarsError("split file {} has entry {!r} that leaves the image folder; entries must be image "
                            "stems or file names relative to mcfg.imageDir (no '..', not absolute)".format(path, entry))
    return entries


def splitEntryStem(entry):
    """'1.jpg' / '1.PNG' -> ('1', '1.jpg' / '1.PNG'); '000005' or 'a.v2' (no image suffix) -> (entry, None)."""
    stem, suffix = os.path.splitext(entry)
    if suffix.lower() in IMAGE_SUFFIXES:
        return stem, entry
    return entry, None


def findImage(imageDir, stem, suffix, fileName=None):
    """imageDir/fileName when the split file named the file and it exists; else imageDir/<stem><suffix>, else the
    first imageDir/<stem><other image suffix> that exists (a data set may mix .jpg and .png, or write .JPG); None
    when there is none."""
    if fileName is not None and os.path.isfile(os.path.join(imageDir, fileName)):
        return os.path.join(imageDir, fileName)
    for candidate in (suffix,) + tuple(s for s in IMAGE_SUFFIXES + tuple(s.upper() for s in IMAGE_SUFFIXES) if s != suffix):
        path = os.path.join(imageDir, stem + candidate)
        if os.path.isfile(path):
            return path
    return None


def loadAnnotation(xmlPath, imagePath, classIndex, selected, knob):
    """Targets of one image from its VOC file.

    classIndex: class name -> index; selected: set of kept class names or None (all); knob names the
    selection knob for the error message. Returns origShape (h, w), classIndexes (n,) int64, boxesXyxy (n, 4)
    float32 in original-image pixels clipped to the image, difficult (n,) bool (VOC <difficult>), and the numbers of
    boxes clipped and dropped (empty or inverted after clipping).
    """
    width, height, objects = readVocXml(xmlPath, withDifficult=True)
    if width is None:  # no <size>: the image tells
        height, width = imreadBgr(imagePath).shape[:2]
    rows, classes, difficult = [], [], []
    for name, x0, y0, x1, y1, isDifficult in objects:
        if selected is not None and name not in selected:
            continue
        if name not in classIndex:
            raise MarsError("annotation {} has class {!r}, which is not in mcfg.classList; add it to "
                            "mcfg.classList or leave it out with mcfg.{}".format(xmlPath, name, knob))
        rows.append((x0, y0, x1, y1))
        classes.append(classIndex[name])
        difficult.append(isDifficult)
    boxes = np.asarray(rows, dtype=np.float32).reshape(-1, 4)
    clipped, valid = clipToImage(boxes, (height, width))
    numClipped = int((np.any(clipped != boxes, axis=1) & valid).sum())
    return ((int(height), int(width)), np.asarray(classes, dtype=np.int64)[valid], clipped[valid],
            np.asarray(difficult, dtype=bool)[valid], numClipped, int((~valid).sum()))


def clipToImage(boxesXyxy, shape):
    """(n, 4) boxes clipped to an image (h, w) -> (clipped (n, 4) float32 copy, valid (n,) bool: not empty)."""
    height, width = shape
    clipped = np.array(boxesXyxy, dtype=np.float32).reshape(-1, 4)
    np.clip(clipped[:, 0::2], 0, width, out=clipped[:, 0::2])
    np.clip(clipped[:, 1::2], 0, height, out=clipped[:, 1::2])
    return clipped, (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])


class VocDataset(Dataset):
    """Images of one split with their VOC boxes, every annotation parsed once at construction.

    Per image it keeps origShape (h, w), classIndexes (n,) int64, boxesXyxy (n, 4) float32 in original-image
    pixels, clipped to the image, and difficult (n,) bool, class-filtered by mcfg.trainSelectedClasses (train) or
    testSelectedClasses. Unless mcfg.useDifficult, difficult objects are never targets (training, validation loss)
    and evaluation ignores detections matched to them (meta "gtIgnore").
    numClipped / numDropped count the boxes clipped to their image / dropped as empty or outside.
    mosaic: probability that a training sample is a 4-image mosaic (mcfg.mosaic; the trainer sets it to 0 for the
    last mcfg.closeMosaicEpochs epochs).
    An item is an image index, or (index, key) as the training loader's EpochBatchSampler hands them out: the
    sample's augmentation then draws from np.random.default_rng(key) alone (a pure function of seed, epoch and
    position); a plain index draws from self.rng, one generator for the dataset.
    """

    def __init__(self, mcfg, splitName, train):
        self.mcfg = mcfg
        self.train = train
        self.inputShape = tuple(mcfg.inputShape)
        self.augment = bool(train and mcfg.augment)
        self.mosaic = float(mcfg.mosaic) if self.augment else 0.0
        self.useDifficult = bool(mcfg.useDifficult)
        self.rng = np.random.default_rng(mcfg.seed)  # augmentation of plain-index items (not the training loader's)
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

        self.imagePaths, self.origShapes, self.classIndexes, self.boxesXyxy, self.difficult = [], [], [], [], []
        numClipped = numDropped = 0
        for entry in readSplitFile(splitFile):
            stem, fileName = splitEntryStem(entry)
            imagePath = findImage(mcfg.imageDir, stem, mcfg.suffix, fileName)
            xmlPath = os.path.join(mcfg.annotationDir, stem + ".xml")
            if imagePath is None:
                raise MarsError("image {} listed in split file {} does not exist (nor with another image suffix: {}; "
                                "mcfg.suffix is the one tried first)".format(
                                    os.path.join(mcfg.imageDir, fileName or stem + mcfg.suffix), splitFile,
                                    " ".join(IMAGE_SUFFIXES)))
            if not os.path.isfile(xmlPath):
                raise MarsError("annotation {} listed in split file {} does not exist".format(xmlPath, splitFile))
            origShape, classes, boxes, difficult, clipped, dropped = loadAnnotation(xmlPath, imagePath, classIndex,
                                                                                    selected, knob)
            numClipped, numDropped = numClipped + clipped, numDropped + dropped
            self.imagePaths.append(imagePath)
            self.origShapes.append(origShape)
            self.classIndexes.append(classes)
            self.boxesXyxy.append(boxes)
            self.difficult.append(difficult if not self.useDifficult else np.zeros_like(difficult))
        self.numClipped, self.numDropped = numClipped, numDropped
        if numClipped or numDropped:
            log("{}: {} boxes clipped to their image, {} empty or outside boxes dropped ({})".format(
                splitName, numClipped, numDropped, splitFile))

    def __len__(self):
        return len(self.imagePaths)

    def numObjects(self):
        """Objects kept as targets over the whole split (difficult ones excluded unless mcfg.useDifficult)."""
        return int(sum(int((~d).sum()) for d in self.difficult))

    def loadImage(self, index):
        """-> imageBgr uint8 (H, W, 3), classIndexes (n,), boxesXyxy (n, 4) original pixels, difficult (n,) bool.
        When the image's size disagrees with the XML's <size>, the image is trusted and the boxes clipped to it."""
        imageBgr = imreadBgr(self.imagePaths[index])
        classes, boxes, difficult = self.classIndexes[index], self.boxesXyxy[index], self.difficult[index]
        if imageBgr.shape[:2] != self.origShapes[index]:
            boxes, valid = clipToImage(boxes, imageBgr.shape[:2])
            classes, boxes, difficult = classes[valid], boxes[valid], difficult[valid]
        return imageBgr, classes, boxes, difficult

    def augmentedSample(self, imageBgr, classes, boxes, rng):
        """Training augmentation of one sample's targets (difficult objects already removed): a mosaic with three
        random partners (probability self.mosaic), then the affine, flip and HSV of dl/aug.py, every draw from rng.
        -> image uint8 (h, w, 3) BGR, classes (k,), boxes (k, 4) network-input pixels."""
        if self.mosaic > 0 and rng.random() < self.mosaic:
            images, boxesList, classList = [imageBgr], [boxes], [classes]
            for partner in rng.integers(0, len(self), 3):
                partnerImage, partnerClasses, partnerBoxes, partnerDifficult = self.loadImage(int(partner))
                images.append(partnerImage)
                boxesList.append(partnerBoxes[~partnerDifficult])
                classList.append(partnerClasses[~partnerDifficult])
            imageBgr, boxes, keeps = mosaicCanvas(images, boxesList, self.inputShape, rng)
            classes = np.concatenate([c[k] for c, k in zip(classList, keeps)])
            image, boxes, keep = augmentFromConfig(self.mcfg, imageBgr, boxes, rng, mosaic=True)
        else:
            image, boxes, keep = augmentFromConfig(self.mcfg, imageBgr, boxes, rng)
        return image, classes[keep], boxes

    def __getitem__(self, item):
        """One sample; item: an image index, or (index, key) from EpochBatchSampler (see the class docstring).

        Returns:
            image: uint8 tensor (3, H, W), RGB, H, W = mcfg.inputShape.
            labels: float32 tensor (n, 5) rows (classIndex, x0, y0, x1, y1) in network-input pixels (the targets:
                difficult objects left out unless mcfg.useDifficult).
            meta: dict with "index" (int), "path" (image path), "origShape" (h, w), "scale" (float) and
                "pad" ((left, top) pixels) of the letterbox, "gt": float32 tensor (m, 5) rows
                (classIndex, x0, y0, x1, y1) in original-image pixels, class-filtered and unaugmented, difficult
                objects included, and "gtIgnore": bool tensor (m,), True for the difficult ones (evaluation
                ignores detections matched to them).
                In augmented training "scale"/"pad" still describe the plain letterbox, not the augmentation.
        """
        index, key = item if isinstance(item, tuple) else (item, None)
        imageBgr, classes, boxesOrig, difficult = self.loadImage(index)
        height, width = imageBgr.shape[:2]
        scale, _, pad = letterboxGeometry((height, width), self.inputShape)
        if self.augment:
            rng = self.rng if key is None else np.random.default_rng(key)
            image, kept, boxes = self.augmentedSample(imageBgr, classes[~difficult], boxesOrig[~difficult], rng)
            imageRgb = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)[::-1]))  # (3, H, W), BGR -> RGB
        else:
            imageRgb, scale, pad = networkInput(imageBgr, self.inputShape)
            kept, boxes = classes[~difficult], boxesToLetterbox(boxesOrig[~difficult], scale, pad)
        labels = np.concatenate((kept[:, None].astype(np.float32), boxes.astype(np.float32)), axis=1)
        gt = np.concatenate((classes[:, None].astype(np.float32), boxesOrig), axis=1)
        meta = {"index": int(index), "path": self.imagePaths[index], "origShape": (height, width),
                "scale": float(scale), "pad": (int(pad[0]), int(pad[1])), "gt": torch.from_numpy(gt),
                "gtIgnore": torch.from_numpy(difficult.copy())}
        return imageRgb, torch.from_numpy(labels), meta


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


def initWorker(workerId):
    """DataLoader worker_init_fn: one worker = one core (OpenCV's own threads would oversubscribe). Nothing to seed:
    a training sample's randomness comes with its key (dl/sampler.py)."""
    cv2.setNumThreads(0)


def makeDataLoader(mcfg, splitName, train, shuffle=None, batchSize=None, dataset=None):
    """DataLoader over VocDataset(mcfg, splitName, train) yielding batches in the Mars collate format.

    A training loader (train=True) draws its batches from an EpochBatchSampler (dl/sampler.py): call
    loader.batch_sampler.setEpoch(epoch, startPosition) before each epoch; under torch.distributed it hands this rank
    its share. Its data then depend only on (mcfg.seed, epoch, position), whatever mcfg.dcore. Other loaders read the
    split in file order (shuffle=True: a fixed shuffle from mcfg.seed). dataset: an existing VocDataset to wrap.
    """
    dataset = dataset or VocDataset(mcfg, splitName, train)
    workers = dict(num_workers=mcfg.dcore, persistent_workers=mcfg.dcore > 0, worker_init_fn=initWorker,
                   pin_memory=str(mcfg.device).startswith("cuda"), collate_fn=collate,
                   generator=torch.Generator().manual_seed(mcfg.seed))  # worker seeds: never from the global RNG
    shuffle = train if shuffle is None else shuffle
    if train:
        sampler = EpochBatchSampler(len(dataset), batchSize or mcfg.batchSize, mcfg.seed, shuffle, rank(), worldSize())
        return DataLoader(dataset, batch_sampler=sampler, **workers)
    return DataLoader(dataset, batch_size=batchSize or mcfg.batchSize, shuffle=shuffle, drop_last=False, **workers)
