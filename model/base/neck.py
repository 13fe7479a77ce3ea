"""YOLOv8 neck: PAN-FPN (top-down then bottom-up) over backbone feat1..feat3."""
import torch
import torch.nn as nn

from model.base.components import C2f, Conv


class Neck(nn.Module):
    """feat1 (B, 256w, H/8), feat2 (B, 512w, H/16), feat3 (B, 512wr, H/32) ->
    C (B, 512w, H/16), X (B, 256w, H/8), Y (B, 512w, H/16), Z (B, 512wr, H/32)."""

    def __init__(self, w, r, n):
        super().__init__()
        c2, c3, c4 = int(256 * w), int(512 * w), int(512 * w * r)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.topDown1 = C2f(c4 + c3, c3, n)  # -> C at P4
        self.topDown2 = C2f(c3 + c2, c2, n)  # -> X at P3
        self.down1 = Conv(c2, c2, 3, 2)
        self.bottomUp1 = C2f(c2 + c3, c3, n)  # -> Y at P4
        self.down2 = Conv(c3, c3, 3, 2)
        self.bottomUp2 = C2f(c3 + c4, c4, n)  # -> Z at P5

    def forward(self, feat1, feat2, feat3):
        C = self.topDown1(torch.cat([self.upsample(feat3), feat2], 1))  # (B, 512w, H/16, W/16)
        X = self.topDown2(torch.cat([self.upsample(C), feat1], 1))  # (B, 256w, H/8, W/8)
        Y = self.bottomUp1(torch.cat([self.down1(X), C], 1))  # (B, 512w, H/16, W/16)
        Z = self.bottomUp2(torch.cat([self.down2(Y), feat3], 1))  # (B, 512wr, H/32, W/32)
        return C, X, Y, Z
