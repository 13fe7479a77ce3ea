"""The easy demo drawing: square images of 1-5 aircraft of 20 types, each type its own colour, on a textured ground,
at random position, rotation and size (about 20-60 pixels long), no two boxes overlapping; a nano YOLOv8 tells
them apart after a few CPU minutes."""
import math

import cv2
import numpy as np

from demo.shapes import boxesApart, drawGround, typeColorBgr

def drawImage(rng, size, classDeck, objectsPerImage, typeParts):
    """One image and its objects [(classIndex, x0, y0, x1, y1)] in image pixels; classDeck() gives the next class."""
    image = drawGround(rng, size)
    objects, boxes = [], []
    for _ in range(rng.integers(objectsPerImage[0], objectsPerImage[1] + 1)):
        classIndex = classDeck()
        angle, length = rng.uniform(0, 2 * math.pi), rng.uniform(0.13, 0.26) * size
        rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]]) * length
        parts = [(points @ rotation.T, shade) for points, shade in typeParts[classIndex]]
        allPoints = np.concatenate([p for p, _ in parts])
        low, high = allPoints.min(0), allPoints.max(0)
        for _attempt in range(30):
            center = rng.uniform(-low + 1, size - 1 - high)
            box = np.concatenate((low + center, high + center))
            if boxesApart(box, boxes, 1):
                break
        else:
            continue  # no free room: leave this object out
        color = np.array(typeColorBgr(classIndex), dtype=np.float64)
        for points, shade in parts:
            polygon = np.round((points + center) * 4).astype(np.int32)  # 2 fractional bits (shift=2)
            cv2.fillPoly(image, [polygon], tuple(float(c) for c in color * shade), cv2.LINE_AA, shift=2)
        boxes.append(box)
        edges = box + 0.5  # cv2 vertex coordinates address pixel centres; boxes use pixel edges
        objects.append((classIndex, float(np.floor(edges[0])), float(np.floor(edges[1])),
                        float(min(size, np.ceil(edges[2]))), float(min(size, np.ceil(edges[3])))))
    return image, objects
