"""YOLOv8 backbone (CSPDarknet with C2f stages and SPPF)."""
import torch.nn as nn

from model.base.components import C2f, SPPF, Conv


class Backbone(nn.Module):
    """Input (B, 3, H, W) -> feat0 (B, 128w, H/4, W/4), feat1 (B, 256w, H/8, W/8),
    feat2 (B, 512w, H/16, W/16), feat3 (B, 512wr, H/32, W/32). At 640: 160, 80, 40, 20 cells."""

    def __init__(self, w, r, n):
        super().__init__()
        c0, c1, c2, c3, c4 = int(64 * w), int(128 * w), int(256 * w), int(512 * w), int(512 * w * r)
        self.stem = Conv(3, c0, 3, 2)  # P1/2
        self.stage1 = nn.Sequential(Conv(c0, c1, 3, 2), C2f(c1, c1, n, shortcut=True))  # P2/4
        self.stage2 = nn.Sequential(Conv(c1, c2, 3, 2), C2f(c2, c2, 2 * n, shortcut=True))  # P3/8
        self.stage3 = nn.Sequential(Conv(c2, c3, 3, 2), C2f(c3, c3, 2 * n, shortcut=True))  # P4/16
        self.stage4 = nn.Sequential(Conv(c3, c4, 3, 2), C2f(c4, c4, n, shortcut=True), SPPF(c4, c4, 5))  # P5/32

    def forward(self, x):
        feat0 = self.stage1(self.stem(x))
        feat1 = self.stage2(feat0)
        feat2 = self.stage3(feat1)
        feat3 = self.stage4(feat2)
        return feat0, feat1, feat2, feat3
