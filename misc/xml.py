"""Pascal VOC annotation files: read one XML file into plain numbers.

A VOC file looks like

    <annotation>
      <size><width>800</width><height>800</height><depth>3</depth></size>
      <object><name>A1</name><difficult>0</difficult><bndbox><xmin>10</xmin>...<ymax>90</ymax></bndbox></object>
      ...
    </annotation>

Boxes are returned as written: original-image pixels, (x0, y0, x1, y1). Files that declare a DOCTYPE or an
ENTITY are refused before parsing, so no entity is ever expanded (no "billion laughs", no external files).
"""
import xml.etree.ElementTree as ElementTree

from misc.errors import MarsError

_FORBIDDEN = (b"<!doctype", b"<!entity")


def _number(element, tag, path, what):
    """float of the text of element/tag; MarsError naming the file when it is missing or not a number."""
    text = element.findtext(tag)
    if text is None or not text.strip():
        raise MarsError("annotation file {}: {} has no <{}>".format(path, what, tag))
    try:
        return float(text.strip())
    except ValueError as e:
        raise MarsError("annotation file {}: {} <{}> is {!r}, not a number".format(path, what, tag, text.strip())) from e


def _flag(element, tag):
    """VOC 0/1 flag element/tag as a bool: '1' (or any non-zero number) is True; missing or empty is False."""
    text = (element.findtext(tag) or "").strip()
    try:
        return float(text) != 0 if text else False
    except ValueError:
        return text.lower() == "true"


def readVocXml(path, withDifficult=False):
    """Read one Pascal VOC annotation file.

    Returns:
        width, height: image size in pixels from <size>, or (None, None) when <size> is missing or zero
            (the caller then reads the image itself).
        objects: list of (className, x0, y0, x1, y1), coordinates as floats in original-image pixels,
            exactly as written (no clipping, no 1-based correction); with withDifficult, (className, x0, y0, x1,
            y1, difficult) where difficult is the object's <difficult> flag as a bool (missing = False).
    Raises MarsError naming the file for a missing file, a DOCTYPE/ENTITY declaration, malformed XML,
    or an <object> without <name> or <bndbox>.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise MarsError("annotation file {} cannot be read: {}".format(path, e.strerror or e)) from e
    lowered = raw.lower()
    for token in _FORBIDDEN:
        if token in lowered:
            raise MarsError("annotation file {} contains a {} declaration; VOC annotations must be plain XML "
                            "(remove the declaration)".format(path, token[2:].decode().upper()))
    try:
        root = ElementTree.fromstring(raw)
    except ElementTree.ParseError as e:
        raise MarsError("annotation file {} is not valid XML: {}".format(path, e)) from e

    width = height = None
    size = root.find("size")
    if size is not None and size.findtext("width") is not None and size.findtext("height") is not None:
        width = int(_number(size, "width", path, "<size>"))
        height = int(_number(size, "height", path, "<size>"))
        if width <= 0 or height <= 0:
            width = height = None

    objects = []
    for index, obj in enumerate(root.iter("object")):
        name = obj.findtext("name")
        if name is None or not name.strip():
            raise MarsError("annotation file {}: object #{} has no <name>".format(path, index))
        box = obj.find("bndbox")
        if box is None:
            raise MarsError("annotation file {}: object #{} ({}) has no <bndbox>".format(path, index, name.strip()))
        what = "object #{} ({})".format(index, name.strip())
        row = (name.strip(), _number(box, "xmin", path, what), _number(box, "ymin", path, what),
               _number(box, "xmax", path, what), _number(box, "ymax", path, what))
        objects.append(row + (_flag(obj, "difficult"),) if withDifficult else row)
    return width, height, objects


def vocXmlText(fileName, width, height, objects, names):
    """Pascal VOC XML text for objects [(classIndex, x0, y0, x1, y1)] in image pixels."""
    lines = ["<annotation>", "  <folder>images</folder>", "  <filename>{}</filename>".format(fileName),
             "  <size><width>{}</width><height>{}</height><depth>3</depth></size>".format(width, height)]
    for classIndex, x0, y0, x1, y1 in objects:
        lines.append("  <object><name>{}</name><difficult>0</difficult><bndbox><xmin>{:g}</xmin><ymin>{:g}</ymin>"
                     "<xmax>{:g}</xmax><ymax>{:g}</ymax></bndbox></object>".format(names[classIndex], x0, y0, x1, y1))
    lines.append("</annotation>")
    return "\n".join(lines) + "\n"
