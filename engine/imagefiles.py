"""Image files given on the command line (-predict PATH, -inspect PATH): listing, decoding, skipping bad ones."""
import os

from misc.errors import MarsError
from misc.img import IMAGE_SUFFIXES, imreadBgr
from misc.log import log, warn


def listImages(path, flag):
    """An image file -> [it]; a folder -> its image files (IMAGE_SUFFIXES, any case), sorted. flag ("-predict",
    "-inspect") names the option in the MarsError for a missing path or a folder without images."""
    if os.path.isdir(path):
        files = sorted(os.path.join(path, f) for f in os.listdir(path) if f.lower().endswith(IMAGE_SUFFIXES))
        if not files:
            raise MarsError("{} folder {} has no images ({})".format(flag, path, ", ".join(IMAGE_SUFFIXES)))
        return files
    if not os.path.isfile(path):
        raise MarsError("{} path {} does not exist".format(flag, path))
    return [path]


class DecodedImages(object):
    """Iterate (path, imageBgr uint8 (H, W, 3)) over the images of path (listImages); in a folder, one that cannot be
    decoded is warned about, skipped and counted in self.skipped, so the run goes on past it; a single image that
    cannot be decoded raises MarsError. finish() logs the last line, or raises MarsError when no image was decoded."""

    def __init__(self, path, flag):
        self.imagePaths, self.flag = listImages(path, flag), flag
        self.folder = os.path.isdir(path)
        self.done, self.skipped = 0, []

    def __len__(self):
        return len(self.imagePaths)

    def __iter__(self):
        for path in self.imagePaths:
            try:
                imageBgr = imreadBgr(path)
            except MarsError as e:
                if not self.folder:
                    raise MarsError("{} image {} cannot be decoded (not an image OpenCV reads, or damaged); pass a "
                                    ".jpg/.png/... file".format(self.flag, path)) from e
                warn("skipped {}: it cannot be decoded (not an image OpenCV reads, or damaged)".format(path))
                self.skipped.append(path)
                continue
            yield path, imageBgr
            self.done += 1

    def finish(self, what, outDir):
        """'<what> for N images (K skipped: cannot be decoded): outDir' as the last line; MarsError when N is 0."""
        if self.done == 0:
            raise MarsError("{}: none of the {} images could be decoded (first: {}); check the files".format(
                self.flag, len(self.imagePaths), self.skipped[0] if self.skipped else "-"))
        skipped = " ({} skipped: cannot be decoded)".format(len(self.skipped)) if self.skipped else ""
        log("{} for {} images{}: {}".format(what, self.done, skipped, outDir))
