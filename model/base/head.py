"""YOLOv8 decoupled detection head: per level a box branch (4 * regMax DFL logits) and a class branch (nc logits)."""
import math

import torch
import torch.nn as nn

from model.base.components import Conv


class DetectHead(nn.Module):
    """[X (B, c0, H0, W0), Y (B, c1, H1, W1), Z (B, c2, H2, W2)] -> list of (B, 4*regMax + nc, Hi, Wi):
    channels [0, 4*regMax) are the box distribution (ltrb, regMax bins each), then nc class logits."""

    def __init__(self, channels, nc, regMax=16):
        super().__init__()
        self.nc, self.regMax = nc, regMax
        cBox = max(16, channels[0] // 4, 4 * regMax)
        cCls = max(channels[0], min(nc, 100))
        self.boxBranches = nn.ModuleList(
            nn.Sequential(Conv(c, cBox, 3), Conv(cBox, cBox, 3), nn.Conv2d(cBox, 4 * regMax, 1)) for c in channels)
        self.clsBranches = nn.ModuleList(
            nn.Sequential(Conv(c, cCls, 3), Conv(cCls, cCls, 3), nn.Conv2d(cCls, nc, 1)) for c in channels)

    def initBiases(self, strides, imageSize=640):
        """YOLOv8's prior: box logits 1.0; class logits log(5 / nc / (imageSize / stride)^2) (~5 objects per image)."""
        for box, cls, s in zip(self.boxBranches, self.clsBranches, strides):
            nn.init.constant_(box[-1].bias, 1.0)
            nn.init.constant_(cls[-1].bias, math.log(5 / self.nc / (imageSize / s) ** 2))

    def forward(self, xs, classFeatures=None):
        """classFeatures: None, or a list that receives each level's class-branch features, the input of its last
        (1x1) convolution: (B, cCls, Hi, Wi) per level (a distillation student reads them, YoloStudentModel)."""
        outputs = []
        for x, box, cls in zip(xs, self.boxBranches, self.clsBranches):
            features = cls[1](cls[0](x))
            if classFeatures is not None:
                classFeatures.append(features)
            outputs.append(torch.cat([box(x), cls[2](features)], 1))
        return outputs
