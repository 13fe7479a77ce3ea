"""The demo's aircraft: 20 types (5 wing planform families x 4 engine layouts), their colours, polygons and the
textured ground, shared by the easy and the hard drawing (demo/easy.py, demo/hard.py). Pure functions of their
arguments and a numpy Generator."""
import cv2
import numpy as np

NUM_CLASSES = 20
# wing families: (span, leading-edge y at the root, root chord, tip chord, sweep, tail span, tail chord, fuselage width)
# in fuselage lengths; nose at y = -0.5, tail at y = +0.5
FAMILIES = (
    (1.00, -0.08, 0.22, 0.07, 0.25, 0.38, 0.12, 0.10),  # swept airliner
    (1.20, -0.10, 0.16, 0.10, 0.00, 0.42, 0.12, 0.11),  # straight-wing transport
    (0.62, -0.08, 0.52, 0.03, 0.45, 0.00, 0.00, 0.09),  # delta fighter, no tailplane
    (0.70, 0.00, 0.30, 0.06, 0.30, 0.34, 0.15, 0.10),  # swept fighter
    (1.40, -0.15, 0.28, 0.06, 0.45, 0.28, 0.10, 0.09),  # long-span swept bomber
)
ENGINE_LAYOUTS = ("none", "wing2", "wing4", "rear2")
LENGTH_FACTORS = (1.0, 0.9, 1.15, 0.8)  # per engine layout: relative fuselage length



def classNames():
    """["A1", ..., "A20"]: the MAR20 class names."""
    return ["A{}".format(i + 1) for i in range(NUM_CLASSES)]


def typeColorBgr(typeIndex):
    """Distinct colour per type: 10 hues x 2 shades (light and saturated-dark), as a BGR tuple of ints."""
    saturation, value = ((170, 245), (255, 150))[typeIndex // 10]
    hsv = np.array([[[(typeIndex % 10) * 18, saturation, value]]], dtype=np.uint8)
    return tuple(int(v) for v in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])


def _planform(span, rootY, rootChord, tipChord, sweep):
    """Hexagon of a symmetric wing (both halves through the centreline): (6, 2) local (x, y)."""
    h = span / 2
    return np.array([(-h, rootY + sweep), (0, rootY), (h, rootY + sweep),
                     (h, rootY + sweep + tipChord), (0, rootY + rootChord), (-h, rootY + sweep + tipChord)])


def rectangle(cx, cy, width, length):
    """Rectangle (4, 2) of width across x and length along y, centred at (cx, cy)."""
    return np.array([(cx - width / 2, cy - length / 2), (cx + width / 2, cy - length / 2),
                     (cx + width / 2, cy + length / 2), (cx - width / 2, cy + length / 2)])


def boxesApart(box, boxes, gap):
    """True when box [x0, y0, x1, y1] keeps at least gap pixels away from every box in boxes."""
    return all(box[0] >= b[2] + gap or box[2] + gap <= b[0] or box[1] >= b[3] + gap or box[3] + gap <= b[1]
               for b in boxes)


def aircraftParts(typeIndex):
    """Polygons of one type in local units (fuselage length 1 times the type's length factor, nose up).

    Returns [(points (K, 2) float, shade)], drawn in order; shade multiplies the type colour.
    """
    span, rootY, rootChord, tipChord, sweep, tailSpan, tailChord, width = FAMILIES[typeIndex % 5]
    layout = ENGINE_LAYOUTS[(typeIndex // 5) % 4]
    width *= (1.0, 1.25, 0.85, 1.1)[(typeIndex // 5) % 4]
    fuselage = np.array([(0, -0.5), (width / 2, -0.38), (width / 2, 0.35), (width / 4, 0.5),
                         (-width / 4, 0.5), (-width / 2, 0.35), (-width / 2, -0.38)])
    parts = [(_planform(span, rootY, rootChord, tipChord, sweep), 0.8)]
    if tailSpan > 0:
        parts.append((_planform(tailSpan, 0.48 - tailChord - 0.1 * tailSpan, tailChord, tailChord * 0.45,
                                0.1 * tailSpan), 0.8))
    parts.append((fuselage, 1.0))
    engineXs = {"none": (), "wing2": (0.35,), "wing4": (0.3, 0.62), "rear2": ()}[layout]
    for fraction in engineXs:
        for side in (-1, 1):
            x = side * fraction * span / 2
            leadingEdgeY = rootY + sweep * fraction
            parts.append((rectangle(x, leadingEdgeY - 0.02, 0.07, 0.16), 0.45))
    if layout == "rear2":
        for side in (-1, 1):
            parts.append((rectangle(side * (width / 2 + 0.04), 0.3, 0.08, 0.18), 0.45))
    factor = LENGTH_FACTORS[(typeIndex // 5) % 4]
    return [(points * factor, shade) for points, shade in parts]


def drawGround(rng, size):
    """Textured ground: uint8 (size, size, 3) BGR: smooth tinted noise, grain, a few patches and taxiway lines."""
    base = rng.uniform(95, 150) + rng.uniform(-12, 12, 3)
    lowFrequency = base + rng.normal(0, 14, (6, 6, 1)) + rng.normal(0, 4, (6, 6, 3))  # mostly brightness, a little tint
    smooth = cv2.resize(lowFrequency.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
    grain = rng.standard_normal((size, size, 1), dtype=np.float32) * 6
    image = np.clip(smooth + grain, 0, 255).astype(np.uint8)
    for _ in range(rng.integers(1, 4)):
        gray = int(np.clip(base.mean() + rng.uniform(-35, 35), 0, 255))
        center = (int(rng.integers(0, size)), int(rng.integers(0, size)))
        axes = (int(rng.integers(8, size // 3)), int(rng.integers(8, size // 3)))
        cv2.ellipse(image, center, axes, float(rng.uniform(0, 180)), 0, 360, (gray, gray, gray + 5), -1, cv2.LINE_AA)
    for _ in range(rng.integers(0, 3)):
        gray = int(np.clip(base.mean() + rng.uniform(20, 60), 0, 255))
        p0 = (int(rng.integers(0, size)), 0) if rng.random() < 0.5 else (0, int(rng.integers(0, size)))
        p1 = (int(rng.integers(0, size)), size - 1) if p0[1] == 0 else (size - 1, int(rng.integers(0, size)))
        cv2.line(image, p0, p1, (gray, gray, gray), int(rng.integers(3, 9)), cv2.LINE_AA)
    return image


class ClassDeck(object):
    """Class indexes in shuffled rounds of all numClasses, so every run of numClasses draws holds every class."""

    def __init__(self, rng, numClasses=NUM_CLASSES):
        self.rng, self.numClasses, self.cards = rng, numClasses, []

    def __call__(self):
        if not self.cards:
            self.cards.extend(self.rng.permutation(self.numClasses).tolist())
        return self.cards.pop()

    def putBack(self, classIndex):
        """Return a drawn class that found no room: it is the next one drawn."""
        self.cards.append(classIndex)
