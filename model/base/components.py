"""YOLOv8 building blocks. Leaf modules take plain arguments so tests can build them from literals."""
import torch
import torch.nn as nn

BN_EPS = 1e-3  # YOLOv8's BatchNorm epsilon
BN_MOMENTUM = 0.03  # YOLOv8's BatchNorm momentum


class Conv(nn.Module):
    """Conv2d (no bias) + BatchNorm2d + SiLU. (B, cIn, H, W) -> (B, cOut, H/s, W/s)."""

    def __init__(self, cIn, cOut, k=1, s=1, act=True):
        super().__init__()
        self.conv = nn.Conv2d(cIn, cOut, k, s, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(cOut, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = nn.SiLU() if act else nn.Identity()  # not in place: autograd would copy the input to keep it

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    """Two 3x3 Convs with an optional residual. (B, c, H, W) -> (B, c, H, W)."""

    def __init__(self, c, shortcut=True):
        super().__init__()
        self.conv1 = Conv(c, c, 3)
        self.conv2 = Conv(c, c, 3)
        self.shortcut = shortcut

    def forward(self, x):
        y = self.conv2(self.conv1(x))
        return x + y if self.shortcut else y


class C2f(nn.Module):
    """CSP layer with 2 convs: split, n Bottlenecks chained on one half, concat every output, fuse.

    (B, cIn, H, W) -> (B, cOut, H, W); hidden width c = cOut / 2, fused input (n + 2) * c.
    """

    def __init__(self, cIn, cOut, n=1, shortcut=False):
        super().__init__()
        self.c = cOut // 2
        self.convIn = Conv(cIn, 2 * self.c, 1)
        self.convOut = Conv((n + 2) * self.c, cOut, 1)
        self.bottlenecks = nn.ModuleList(Bottleneck(self.c, shortcut) for _ in range(n))

    def forward(self, x):
        ys = list(self.convIn(x).chunk(2, 1))  # 2 x (B, c, H, W)
        for m in self.bottlenecks:
            ys.append(m(ys[-1]))
        return self.convOut(torch.cat(ys, 1))  # (B, (n+2)c, H, W) -> (B, cOut, H, W)


class SPPF(nn.Module):
    """Spatial pyramid pooling, fast: three chained k x k max-pools, concat, fuse. (B, cIn, H, W) -> (B, cOut, H, W)."""

    def __init__(self, cIn, cOut, k=5):
        super().__init__()
        c = cIn // 2
        self.convIn = Conv(cIn, c, 1)
        self.convOut = Conv(4 * c, cOut, 1)
        self.pool = nn.MaxPool2d(k, 1, k // 2)

    def forward(self, x):
        ys = [self.convIn(x)]
        for _ in range(3):
            ys.append(self.pool(ys[-1]))
        return self.convOut(torch.cat(ys, 1))
