"""The "hard" demo drawing (demo/writer.py, style="hard"): scenes closer to real remote sensing (MAR20), to tune
on something less easy than the easy demo.

An image is width x height pixels, each side drawn in (min, max) (e.g. 320..640, not square), with about 4-20
aircraft of the easy demo's 20 types (demo/shapes.aircraftParts), fuselage 24-72 pixels long (one ground sample
distance per image times the type's length factor, a little jitter). What makes it hard:
- colour carries no class: each aircraft's livery (white, greys, green or brown camouflage, a small random tint)
  is drawn independently of its type, so the types differ by shape only;
- clutter that is not an object: aprons with slab joints, taxiways with centre lines, buildings and hangars
  (rectangles, L shapes), vehicles, tree clumps, and cross / T shapes in aircraft liveries;
- drop shadows (the silhouette darkened, offset away from one sun per image) under aircraft, buildings and crosses;
- parking rows (3-6 aircraft of random types side by side, one heading), aircraft that overlap a little (box IoU
  up to MAX_OVERLAP_IOU with every earlier box), aircraft partly under a tree clump or a cloud (at most
  MAX_OCCLUDED of the box), aircraft cut by the image border (less than MIN_VISIBLE of the box inside: not drawn).
A box is the pixel-edge box (x0, y0, x1, y1) of the drawn silhouette (the pixels of coverage >= ALPHA_MIN / 255),
clipped to the image; an occluder or a later aircraft on top does not shrink it (as annotators box a whole aircraft).
Everything is drawn by alpha blending of cv2-rasterised windows, so a pixel no silhouette covers keeps its value.
"""
import math

import cv2
import numpy as np

from demo.shapes import LENGTH_FACTORS, boxesApart, drawGround, rectangle

HARD_VERSION = 2  # bump when the hard drawing changes, so cached hard demo data is regenerated
OBJECTS_PER_IMAGE = (4, 20)  # aircraft per image (min, max) tried; one that finds no room is left out
LENGTH_RANGE = (24.0, 72.0)  # fuselage length, image pixels (at 320 px input a nano needs aircraft this large)
# the "fine" drawing (demo/writer.py style "fine"): fine-grained types in one tone, small and many, as MAR20 at 320 px:
# about 10 aircraft of 20-40 px per 320 px image, every one in the light grey livery (colour says nothing at all)
FINE_OBJECTS_PER_IMAGE = (8, 12)
FINE_LENGTH_RANGE = (20.0, 40.0)
FINE_LIVERY = "lightGrey"
MAX_OVERLAP_IOU = 0.3  # an aircraft's box overlaps every earlier box by at most this IoU
MIN_VISIBLE = 0.4  # a border-cut aircraft keeps at least this fraction of its full box inside the image
MAX_OCCLUDED = 0.4  # an occluder covers at most this fraction of any aircraft box
OCCLUDED_FRACTION = 0.15  # probability that an aircraft gets an occluder
ALPHA_MIN = 96  # coverage (of 255) from which a rasterised pixel is drawn; below it the pixel is left as it was
MIN_CONTRAST = 28  # grey levels between a livery's mean and the ground's mean under the aircraft
# livery name: (relative frequency, base BGR, camouflage blotch BGRs)
LIVERIES = {
    "white": (0.20, (236, 236, 232), ()),
    "lightGrey": (0.25, (186, 184, 180), ()),
    "grey": (0.20, (146, 144, 140), ()),
    "darkGrey": (0.10, (96, 94, 92), ()),
    "greenCamo": (0.15, (72, 102, 86), ((48, 72, 58), (62, 92, 118))),
    "brownCamo": (0.10, (70, 104, 132), ((56, 84, 76), (42, 56, 72))),
}
LIVERY_NAMES = tuple(LIVERIES)
LIVERY_P = np.array([LIVERIES[n][0] for n in LIVERY_NAMES]) / sum(LIVERIES[n][0] for n in LIVERY_NAMES)


def sideRange(imageSize):
    """(min, max) image side in pixels from a pair or one int (a fixed size)."""
    if isinstance(imageSize, (int, np.integer)):
        return int(imageSize), int(imageSize)
    low, high = (int(v) for v in imageSize)
    return low, high


# ----------------------------------------------------------------------------------------------------------------
# raster helpers: a window is (x0, y0, width, height) in image pixels; its arrays are (height, width)

def polygonWindow(polygons, margin=2):
    """Integer window (x0, y0, width, height) holding every pixel the polygons [(K, 2) image pixels] touch."""
    points = np.concatenate(polygons)
    low = np.floor(points.min(0)).astype(int) - margin
    high = np.ceil(points.max(0)).astype(int) + margin + 1
    return int(low[0]), int(low[1]), int(high[0] - low[0]), int(high[1] - low[1])


def polygonAlpha(points, window):
    """Coverage uint8 (height, width) of one polygon (K, 2) in image pixels (pixel centres at integers) inside the
    window: cv2's anti-aliased fill with 2 fractional bits, coverage below ALPHA_MIN set to 0."""
    x0, y0, width, height = window
    alpha = np.zeros((height, width), np.uint8)
    cv2.fillPoly(alpha, [np.round((points - (x0, y0)) * 4).astype(np.int32)], 255, cv2.LINE_AA, shift=2)
    alpha[alpha < ALPHA_MIN] = 0
    return alpha


def circlesWindow(circles, margin=2):
    """Integer window (x0, y0, width, height) holding the circles [(cx, cy, radius)] in image pixels."""
    return polygonWindow([np.array([(cx - r, cy - r), (cx + r, cy + r)]) for cx, cy, r in circles], margin)


def circlesAlpha(circles, window):
    """Coverage uint8 (height, width) of the union of circles [(cx, cy, radius)] in image pixels inside the window."""
    x0, y0, width, height = window
    alpha = np.zeros((height, width), np.uint8)
    for cx, cy, radius in circles:
        cv2.circle(alpha, (int(round((cx - x0) * 4)), int(round((cy - y0) * 4))), int(round(radius * 4)), 255, -1,
                   cv2.LINE_AA, shift=2)
    return alpha


def _overlap(imageShape, window):
    """((image rows, image cols), (window rows, window cols)) slices of the part of the window inside the image,
    or None when they do not meet."""
    x0, y0, width, height = window
    ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x0 + width, imageShape[1]), min(y0 + height, imageShape[0])
    if ix0 >= ix1 or iy0 >= iy1:
        return None
    return (slice(iy0, iy1), slice(ix0, ix1)), (slice(iy0 - y0, iy1 - y0), slice(ix0 - x0, ix1 - x0))


def blend(image, alpha, colors, window, opacity=1.0):
    """image uint8 (H, W, 3) in place: where alpha (uint8, window-shaped) covers, move towards colors (a BGR triple
    or float (height, width, 3)) by alpha / 255 * opacity. Pixels of alpha 0 keep their exact value."""
    parts = _overlap(image.shape, window)
    if parts is None:
        return
    (iy, ix), (wy, wx) = parts
    a = alpha[wy, wx, None].astype(np.float32) * (opacity / 255.0)
    colors = np.asarray(colors, np.float32)
    if colors.ndim == 3:
        colors = colors[wy, wx]
    region = image[iy, ix].astype(np.float32)
    image[iy, ix] = np.clip(region + a * (colors - region) + 0.5, 0, 255).astype(np.uint8)


def darken(image, alpha, window, factor):
    """image in place: multiplied by factor (0..1) where alpha fully covers (a drop shadow)."""
    parts = _overlap(image.shape, window)
    if parts is None:
        return
    (iy, ix), (wy, wx) = parts
    a = alpha[wy, wx, None].astype(np.float32) / 255.0
    image[iy, ix] = np.clip(image[iy, ix] * (1.0 - a * (1.0 - factor)) + 0.5, 0, 255).astype(np.uint8)


def maskBox(mask, window, imageShape):
    """Pixel-edge box [x0, y0, x1, y1] (floats) of the mask's nonzero pixels inside an image of imageShape
    (H, W, ...), or None when none is inside."""
    parts = _overlap(imageShape, window)
    if parts is None:
        return None
    (iy, ix), (wy, wx) = parts
    inside = mask[wy, wx] > 0
    rows, cols = np.flatnonzero(inside.any(1)), np.flatnonzero(inside.any(0))
    if len(rows) == 0:
        return None
    return [float(ix.start + cols[0]), float(iy.start + rows[0]), float(ix.start + cols[-1] + 1),
            float(iy.start + rows[-1] + 1)]


def _iou(box, boxes):
    """IoU (N,) of one [x0, y0, x1, y1] box with (N, 4) boxes (same units)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    width = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    height = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = width * height
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum((box[2] - box[0]) * (box[3] - box[1]) + areas - inter, 1e-9)


def _rotated(points, angle, scale, center):
    """Local (K, 2) points rotated by angle (radians), scaled, moved to center: image pixels."""
    c, s = math.cos(angle), math.sin(angle)
    return points @ (np.array([[c, -s], [s, c]]) * scale).T + center


# ----------------------------------------------------------------------------------------------------------------
# colours

def chooseLivery(rng):
    """A livery name from LIVERIES by frequency (never by class)."""
    return LIVERY_NAMES[int(rng.choice(len(LIVERY_NAMES), p=LIVERY_P))]


def liveryColors(rng, name, height, width, groundMean=None):
    """Colour field float32 (height, width, 3) BGR of a livery: base + random tint, camouflage blotches, grain.

    groundMean: mean grey level of the ground under the object; the field is shifted to be at least MIN_CONTRAST
    away from it.
    """
    _, base, blotches = LIVERIES[name]
    tint = rng.uniform(-12, 12) + rng.normal(0, 5, 3)
    field = np.empty((height, width, 3), np.float32)
    field[:] = np.array(base) + tint
    for blotch in blotches:  # low-frequency noise above a level: irregular patches of the second / third colour
        noise = cv2.resize(rng.standard_normal((4, 4)).astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
        field[noise > 0.45] = np.array(blotch) + tint
    field += rng.standard_normal((height, width, 1), dtype=np.float32) * 3
    mean = float(field.mean())
    if groundMean is not None and abs(mean - groundMean) < MIN_CONTRAST:
        brighter = mean >= groundMean
        if brighter and groundMean + MIN_CONTRAST > 235 or not brighter and groundMean - MIN_CONTRAST < 20:
            brighter = not brighter
        field += groundMean + (MIN_CONTRAST if brighter else -MIN_CONTRAST) - mean
    return field


def treeColors(rng, height, width):
    """Colour field float32 (height, width, 3) BGR of tree crowns: dark green with strong grain."""
    field = np.empty((height, width, 3), np.float32)
    field[:] = np.array((40, 78, 52)) + rng.normal(0, 6, 3)
    field += rng.standard_normal((height, width, 1), dtype=np.float32) * 10
    return field


# ----------------------------------------------------------------------------------------------------------------
# ground and clutter

def drawHardGround(rng, width, height):
    """Airfield ground uint8 (height, width, 3): demo/shapes.drawGround's textured ground tinted as grass / soil / concrete,
    taxiways (asphalt, yellow centre line), aprons (concrete slabs) and grain. Returns (image, aprons [x0, y0, x1, y1])."""
    image = drawGround(rng, max(width, height))[:height, :width].astype(np.float32)
    terrain = ((0.92, 1.06, 0.94), (0.9, 1.0, 1.08), (1.0, 1.0, 1.0))[int(rng.integers(0, 3))]  # grass, soil, neutral
    image *= np.array(terrain, np.float32)
    image = np.clip(image, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(1, 3))):  # taxiways edge to edge
        gray = int(rng.uniform(55, 90))
        if rng.random() < 0.5:
            p0, p1 = (int(rng.integers(0, width)), -5), (int(rng.integers(0, width)), height + 5)
        else:
            p0, p1 = (-5, int(rng.integers(0, height))), (width + 5, int(rng.integers(0, height)))
        cv2.line(image, p0, p1, (gray, gray, gray + 3), int(rng.integers(10, 23)), cv2.LINE_AA)
        cv2.line(image, p0, p1, (40, 170, 200), 1, cv2.LINE_AA)
    aprons = []
    for _ in range(int(rng.integers(0, 3))):
        w, h = int(rng.uniform(0.3, 0.7) * width), int(rng.uniform(0.3, 0.7) * height)
        x0, y0 = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
        gray = float(rng.uniform(150, 195))
        cv2.rectangle(image, (x0, y0), (x0 + w - 1, y0 + h - 1), (gray, gray, gray - 4), -1)
        slab = int(rng.integers(12, 25))
        for x in range(x0 + slab, x0 + w, slab):
            cv2.line(image, (x, y0), (x, y0 + h - 1), (gray - 14,) * 3, 1)
        for y in range(y0 + slab, y0 + h, slab):
            cv2.line(image, (x0, y), (x0 + w - 1, y), (gray - 14,) * 3, 1)
        if rng.random() < 0.6:  # a painted lead-in line
            y = int(rng.integers(y0, y0 + h))
            cv2.line(image, (x0, y), (x0 + w - 1, y), (60, 180, 210) if rng.random() < 0.7 else (235, 235, 235), 1)
        aprons.append([x0, y0, x0 + w, y0 + h])
    grain = rng.standard_normal((height, width, 1), dtype=np.float32) * 3
    return np.clip(image + grain, 0, 255).astype(np.uint8), aprons


def drawShadow(image, polygons, offset, factor):
    """Drop shadow in place: the union of polygons [(K, 2) image pixels] moved by offset (2,) pixels, the image
    multiplied by factor (0..1) there."""
    moved = [points + offset for points in polygons]
    window = polygonWindow(moved)
    shadow = np.zeros((window[3], window[2]), np.uint8)
    for points in moved:
        np.maximum(shadow, polygonAlpha(points, window), out=shadow)
    darken(image, shadow, window, factor)


def _drawShape(image, polygons, colors, shadowOffset):
    """Polygons [(K, 2) image pixels] over their drop shadow (offset (2,) pixels); colors: BGR triple or a field
    over the polygons' window (as polygonWindow)."""
    drawShadow(image, polygons, shadowOffset, 0.6)
    window = polygonWindow(polygons)
    for points in polygons:
        blend(image, polygonAlpha(points, window), colors, window)


def drawClutter(rng, image, aircraftBoxes, sunOffset):
    """Things that are not objects, kept 4 pixels off the aircraft boxes: buildings and hangars, vehicles, tree
    clumps, and cross / T shapes in aircraft liveries. sunOffset: shadow offset (2,) per pixel of height."""
    height, width = image.shape[:2]
    areaFactor = width * height / 480.0 ** 2
    siteAngle = float(rng.uniform(0, math.pi / 2))

    def place(extent, tries=8):  # a centre whose square of half-side extent is inside and free, or None
        if 2 * extent >= min(width, height):
            return None
        for _ in range(tries):
            center = rng.uniform((extent, extent), (width - extent, height - extent))
            if boxesApart([*(center - extent), *(center + extent)], aircraftBoxes, 4):
                return center
        return None

    for _ in range(int(rng.poisson(2.0 * areaFactor))):  # buildings: rectangles, L shapes, striped hangars
        length, depth = rng.uniform(16, 90), rng.uniform(12, 50)
        center = place(0.5 * math.hypot(length, depth))
        if center is None:
            continue
        angle = siteAngle + (0 if rng.random() < 0.7 else rng.uniform(0, math.pi))
        pieces = [rectangle(0, 0, length, depth)]
        if rng.random() < 0.35:  # an L: a wing along one end
            wingLength, wingWidth = depth * rng.uniform(1.5, 2.5), length * rng.uniform(0.25, 0.45)
            pieces.append(rectangle(0, depth * 0.5, wingWidth, wingLength) + (length * 0.3, 0))
        polygons = [_rotated(p, angle, 1.0, center) for p in pieces]
        gray = rng.uniform(90, 210)
        color = np.array((gray, gray, gray)) + rng.normal(0, 8, 3)
        _drawShape(image, polygons, color, sunOffset * rng.uniform(3, 8))
        if rng.random() < 0.5:  # ridge or hangar ribs
            ribs = [np.array([(-length / 2 + 2, 0), (length / 2 - 2, 0)])] if rng.random() < 0.5 else \
                [np.array([(x, -depth / 2 + 1), (x, depth / 2 - 1)]) for x in np.arange(-length / 2 + 4, length / 2 - 2, 5)]
            for rib in ribs:
                line = np.round(_rotated(rib, angle, 1.0, center)).astype(np.int32)
                cv2.line(image, tuple(line[0]), tuple(line[1]), tuple(float(c) for c in color * 0.8), 1, cv2.LINE_AA)
    for _ in range(int(rng.poisson(2.0 * areaFactor))):  # vehicle groups
        count, angle = int(rng.integers(1, 7)), float(rng.uniform(0, math.pi))
        center = place(4 * count + 6)
        if center is None:
            continue
        for k in range(count):
            size = (rng.uniform(6, 11), rng.uniform(3, 5))
            color = (rng.uniform(200, 240),) * 3 if rng.random() < 0.4 else rng.uniform(30, 200, 3)
            spot = center + np.array((math.cos(angle), math.sin(angle))) * (k - count / 2) * 7
            _drawShape(image, [_rotated(rectangle(0, 0, size[1], size[0]), angle, 1.0, spot)], color, sunOffset * 1.5)
    for _ in range(int(rng.poisson(2.5 * areaFactor))):  # crosses and Ts in liveries, aircraft-sized
        length = rng.uniform(*LENGTH_RANGE)
        center = place(0.7 * length)
        if center is None:
            continue
        barWidth, span = length * rng.uniform(0.08, 0.15), length * rng.uniform(0.5, 1.3)
        crossWidth = barWidth * rng.uniform(1, 1.8)
        along = -0.5 * (length - crossWidth) if rng.random() < 0.4 else length * rng.uniform(-0.2, 0.1)  # T or +
        pieces = [rectangle(0, 0, barWidth, length), rectangle(0, along, span, crossWidth)]
        polygons = [_rotated(p, rng.uniform(0, 2 * math.pi), 1.0, center) for p in pieces]
        window = polygonWindow(polygons)
        _drawShape(image, polygons, liveryColors(rng, chooseLivery(rng), window[3], window[2]), sunOffset * 2)
    for _ in range(int(rng.poisson(2.0 * areaFactor))):  # tree clumps
        radius = rng.uniform(4, 12)
        center = place(2 * radius)
        if center is not None:
            drawTrees(rng, image, center, radius)


def drawTrees(rng, image, center, radius):
    """A clump of 3-8 dark green crowns in place around center (2,) pixels, spread about radius pixels."""
    circles = [(*(center + rng.normal(0, radius * 0.6, 2)), radius * rng.uniform(0.45, 0.8))
               for _ in range(int(rng.integers(3, 9)))]
    window = circlesWindow(circles)
    blend(image, circlesAlpha(circles, window), treeColors(rng, window[3], window[2]), window)


# ----------------------------------------------------------------------------------------------------------------
# aircraft

def _aircraftShape(typeParts, classIndex, fuselageLength, angle):
    """[(points (K, 2) pixels around (0, 0), shade)] of one aircraft: fuselage fuselageLength pixels, heading angle."""
    scale = fuselageLength / LENGTH_FACTORS[(classIndex // 5) % 4]
    return [(_rotated(points, angle, scale, 0.0), shade) for points, shade in typeParts[classIndex]]


def _extentBox(shape, center):
    """Pixel-edge box [x0, y0, x1, y1] around the shape's vertices moved to center (before rasterisation)."""
    points = np.concatenate([p for p, _ in shape]) + center
    return np.concatenate((points.min(0) - 0.5, points.max(0) + 0.5))


def _fits(box, width, height, boxes):
    """The box keeps MIN_VISIBLE of its area inside the image and overlaps every earlier box by at most
    MAX_OVERLAP_IOU (compared on visible boxes)."""
    visible = np.clip(box, 0, [width, height, width, height])
    visibleArea = max(visible[2] - visible[0], 0) * max(visible[3] - visible[1], 0)
    if visibleArea < MIN_VISIBLE * (box[2] - box[0]) * (box[3] - box[1]):
        return False
    return not boxes or _iou(visible, boxes).max() <= MAX_OVERLAP_IOU


def planAircraft(rng, width, height, classDeck, typeParts, count, aprons, lengthRange=LENGTH_RANGE):
    """Where the aircraft go: [{"classIndex", "shape" (points around (0, 0), shade), "center" (2,)}], at most count.

    One fuselage scale per image; parking rows of 3-6 (on an apron when there is one, heading along its sides),
    then single aircraft: anywhere inside, near an earlier one (overlap) or across the border. A class that finds
    no room goes back to classDeck. lengthRange: (min, max) fuselage length in pixels.
    """
    baseLength = rng.uniform(lengthRange[0] / 0.8, lengthRange[1] / 1.15)  # fuselage of length factor 1
    plans, boxes = [], []

    def length(classIndex):
        factor = LENGTH_FACTORS[(classIndex // 5) % 4]
        return float(np.clip(baseLength * factor * rng.uniform(0.92, 1.08), *lengthRange))

    def add(classIndex, shape, center):
        box = _extentBox(shape, center)
        if not _fits(box, width, height, boxes):
            return False
        plans.append({"classIndex": classIndex, "shape": shape, "center": np.asarray(center, np.float64)})
        boxes.append(np.clip(box, 0, [width, height, width, height]))
        return True

    rows = int(rng.random() < 0.5) + int(rng.random() < 0.2)
    for _ in range(rows):
        size = min(int(rng.integers(3, 7)), count - len(plans))
        if size < 2:
            break
        if aprons and rng.random() < 0.8:
            apron = aprons[int(rng.integers(0, len(aprons)))]
            start = rng.uniform(apron[:2], apron[2:])
            angle = int(rng.integers(0, 4)) * math.pi / 2 + rng.normal(0, 0.04)
        else:
            start, angle = rng.uniform((0, 0), (width, height)), rng.uniform(0, 2 * math.pi)
        axis = np.array((math.cos(angle), math.sin(angle)))  # wing direction: aircraft stand wingtip to wingtip
        members = []
        for _ in range(size):
            classIndex = classDeck()
            members.append((classIndex, _aircraftShape(typeParts, classIndex, length(classIndex), angle)))
        position = 0.0
        for classIndex, shape in members:
            projection = np.concatenate([p for p, _ in shape]) @ axis
            center = start + axis * (position - projection.min())
            position += projection.max() - projection.min() + rng.uniform(2, 6)
            if not add(classIndex, shape, center):
                classDeck.putBack(classIndex)
    while len(plans) < count:
        classIndex = classDeck()
        shape = _aircraftShape(typeParts, classIndex, length(classIndex), rng.uniform(0, 2 * math.pi))
        points = np.concatenate([p for p, _ in shape])
        low, high = points.min(0), points.max(0)
        for _attempt in range(25):
            mode = rng.random()
            if mode < 0.15 and plans:  # next to an earlier aircraft: a little overlap
                other = plans[int(rng.integers(0, len(plans)))]
                direction = rng.uniform(0, 2 * math.pi)
                reach = 0.5 * (np.ptp(np.concatenate([p for p, _ in other["shape"]]), 0).mean() + (high - low).mean())
                center = other["center"] + np.array((math.cos(direction), math.sin(direction))) * reach * rng.uniform(0.55, 0.9)
            elif mode < 0.27:  # across the border
                center = rng.uniform(-low, (width, height) - high)
                side = int(rng.integers(0, 4))
                extent = (high - low)[side % 2]
                center[side % 2] = rng.uniform(-0.3, 0.3) * extent + (0 if side < 2 else (width, height)[side % 2])
            else:
                center = rng.uniform(-low + 1, np.maximum((width, height) - high - 1, -low + 2))
            if add(classIndex, shape, center):
                break
        else:
            classDeck.putBack(classIndex)
            break  # the image is full
    return plans


def occlude(rng, image, boxes):
    """Tree clumps (opaque) and clouds (translucent, soft) over some aircraft, each covering at most MAX_OCCLUDED
    of every aircraft box it touches. boxes: (N, 4) pixel-edge boxes. Returns the covered fraction (N,) per box."""
    covered = np.zeros(len(boxes))
    for box in boxes:
        if rng.random() >= OCCLUDED_FRACTION:
            continue
        side = math.sqrt((box[2] - box[0]) * (box[3] - box[1]))
        corner = np.array((box[0] if rng.random() < 0.5 else box[2], box[1] if rng.random() < 0.5 else box[3]))
        center = corner + rng.uniform(-0.25, 0.25, 2) * side
        radius = side * rng.uniform(0.3, 0.55)
        cloud = rng.random() < 0.4
        for _shrink in range(5):
            circles = [(*(center + rng.normal(0, radius * 0.4, 2)), radius * rng.uniform(0.4, 0.7)) for _ in range(4)]
            window = circlesWindow(circles, 4)
            alpha = circlesAlpha(circles, window)
            if cloud:
                alpha = cv2.GaussianBlur(alpha, (0, 0), radius * 0.25)
            fractions = _coverage(alpha, window, boxes)
            if fractions.max() <= MAX_OCCLUDED:
                break
            radius *= 0.75
        else:
            continue
        if cloud:
            blend(image, alpha, (rng.uniform(228, 250),) * 3, window, opacity=rng.uniform(0.7, 0.95))
        else:
            blend(image, alpha, treeColors(rng, window[3], window[2]), window)
        covered = np.maximum(covered, fractions)
    return covered


def _coverage(alpha, window, boxes):
    """Fraction (N,) of each [x0, y0, x1, y1] box's pixels where alpha (window-shaped) is at least half."""
    x0, y0 = window[:2]
    fractions = np.zeros(len(boxes))
    for k, (bx0, by0, bx1, by1) in enumerate(np.asarray(boxes, int)):
        part = alpha[max(by0 - y0, 0):max(by1 - y0, 0), max(bx0 - x0, 0):max(bx1 - x0, 0)]
        fractions[k] = np.count_nonzero(part >= 128) / max((bx1 - bx0) * (by1 - by0), 1)
    return fractions


def drawHardImage(rng, width, height, classDeck, typeParts, objectsPerImage=OBJECTS_PER_IMAGE, lengthRange=LENGTH_RANGE,
                  livery=None):
    """One hard image uint8 (height, width, 3) BGR, its objects [(classIndex, x0, y0, x1, y1)] (pixel-edge boxes)
    and the scene (for tests and pictures).

    classDeck(): the next class (with putBack(classIndex)); typeParts: demo/shapes.aircraftParts per class;
    lengthRange: (min, max) fuselage length, pixels; livery: None (each aircraft draws one from LIVERIES by frequency)
    or one LIVERIES name for every aircraft (the fine drawing; the tint and the contrast to the ground still vary).
    scene: {"ground": the image before the aircraft bodies (their shadows drawn), "unoccluded": the image before the
    occluders, "aircraft": [{"classIndex", "livery", "polygons" [(K, 2) image pixels], "box", "covered" (fraction
    under an occluder)}] in drawing order, the order of objects}.
    """
    image, aprons = drawHardGround(rng, width, height)
    count = int(rng.integers(objectsPerImage[0], objectsPerImage[1] + 1))
    plans = planAircraft(rng, width, height, classDeck, typeParts, count, aprons, lengthRange)
    sunAngle = rng.uniform(0, 2 * math.pi)
    sunOffset = np.array((math.cos(sunAngle), math.sin(sunAngle)))
    drawClutter(rng, image, [_extentBox(p["shape"], p["center"]) for p in plans], sunOffset)
    for plan in plans:  # every shadow first: shadows fall on the ground, not on other aircraft
        plan["polygons"] = [points + plan["center"] for points, _ in plan["shape"]]
        extent = np.ptp(np.concatenate(plan["polygons"]), 0).max()
        drawShadow(image, plan["polygons"], sunOffset * 0.12 * extent, rng.uniform(0.5, 0.7))
    ground = image.copy()
    objects, aircraft = [], []
    for plan in plans:
        window = polygonWindow(plan["polygons"])
        (iy, ix), _ = _overlap(image.shape, window)  # never None: at least MIN_VISIBLE of the box is inside
        name = chooseLivery(rng) if livery is None else livery
        colors = liveryColors(rng, name, window[3], window[2], float(ground[iy, ix].mean()))
        mask = np.zeros((window[3], window[2]), np.uint8)
        for points, (_, shade) in zip(plan["polygons"], plan["shape"]):
            alpha = polygonAlpha(points, window)
            blend(image, alpha, colors * shade, window)
            np.maximum(mask, alpha, out=mask)
        box = maskBox(mask, window, image.shape)
        objects.append((plan["classIndex"], *box))
        aircraft.append({"classIndex": plan["classIndex"], "livery": name, "polygons": plan["polygons"], "box": box})
    unoccluded = image.copy()
    covered = occlude(rng, image, [o[1:] for o in objects])
    for record, fraction in zip(aircraft, covered):
        record["covered"] = float(fraction)
    return image, objects, {"ground": ground, "unoccluded": unoccluded, "aircraft": aircraft}
