"""Convert an Ultralytics YOLOv8 detection checkpoint (or its plain state dict) into a Mars state dict.

    python tools/convert.py SRC OUT [--backbone-only]

SRC is a `.pt` as saved by Ultralytics (unpickling it needs `ultralytics` installed and runs the file's code:
convert only checkpoints you trust) or a plain state dict with keys `model.<i>...`. The phase, class count and
regMax are inferred from tensor shapes. OUT loads with `torch.load(..., weights_only=True)`; with --backbone-only
it holds the `backbone.*` tensors that `mcfg.pretrainedBackboneUrl` expects.
"""
import argparse
import os
import re
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from config.mconfig import PHASES  # noqa: E402
from misc.errors import MarsError  # noqa: E402
from misc.files import atomicTorchSave  # noqa: E402

# Ultralytics yolov8.yaml layer index -> Mars module path (layers 10, 11, 13, 14, 17, 20 are Upsample/Concat)
LAYER_MAP = {
    0: "backbone.stem", 1: "backbone.stage1.0", 2: "backbone.stage1.1", 3: "backbone.stage2.0",
    4: "backbone.stage2.1", 5: "backbone.stage3.0", 6: "backbone.stage3.1", 7: "backbone.stage4.0",
    8: "backbone.stage4.1", 9: "backbone.stage4.2",
    12: "neck.topDown1", 15: "neck.topDown2", 16: "neck.down1", 18: "neck.bottomUp1", 19: "neck.down2",
    21: "neck.bottomUp2",
}
HEAD_LAYER = 22


def renameKey(key):
    """'model.2.m.0.cv1.conv.weight' -> 'backbone.stage1.1.bottlenecks.0.conv1.conv.weight'; None for dropped keys."""
    match = re.match(r"model\.(\d+)\.(.*)", key)
    if match is None:
        raise MarsError("key {!r} is not an Ultralytics 'model.<i>.' key; is this a YOLOv8 detection checkpoint?".format(key))
    layer, rest = int(match.group(1)), match.group(2)
    if layer == HEAD_LAYER:
        if rest.startswith("dfl."):
            return None  # the DFL projection is a fixed constant (0..regMax-1), a buffer in Mars
        rest = re.sub(r"^cv2\.", "boxBranches.", rest)
        rest = re.sub(r"^cv3\.", "clsBranches.", rest)
        return "head." + rest
    if layer not in LAYER_MAP:
        raise MarsError("key {!r}: layer {} has no weights in YOLOv8; is this a YOLOv8 (not v5/v9/v11) checkpoint?".format(key, layer))
    inBottleneck = re.match(r"m\.\d+\.", rest) is not None
    rest = re.sub(r"^m\.(\d+)\.", r"bottlenecks.\1.", rest)
    rest = re.sub(r"(^|\.)cv1\.", r"\1conv1." if inBottleneck else r"\1convIn.", rest)
    rest = re.sub(r"(^|\.)cv2\.", r"\1conv2." if inBottleneck else r"\1convOut.", rest)
    return LAYER_MAP[layer] + "." + rest


def inferPhase(stateDict):
    """-> (phase, nc, regMax) from tensor shapes; MarsError if they match no YOLOv8 phase."""
    try:
        c0 = stateDict["model.0.conv.weight"].shape[0]
        c4 = stateDict["model.9.cv2.conv.weight"].shape[0]
        n = len({k.split(".")[3] for k in stateDict if k.startswith("model.2.m.")})
        regMax = stateDict["model.22.cv2.0.2.weight"].shape[0] // 4
        nc = stateDict["model.22.cv3.0.2.weight"].shape[0]
    except KeyError as e:
        raise MarsError("source has no {} tensor: not an Ultralytics YOLOv8 detection checkpoint or state dict".format(e)) from e
    for phase, (w, r, depth) in PHASES.items():
        if (int(64 * w), int(512 * w * r), depth) == (c0, c4, n):
            return phase, nc, regMax
    raise MarsError("stem width {}, last-stage width {} and {} bottlenecks match no phase of {}".format(
        c0, c4, n, list(PHASES)))


def loadSource(path):
    """Ultralytics .pt or plain state dict -> {key: tensor} with 'model.<i>.' keys, float32."""
    if not os.path.isfile(path):
        raise MarsError("source file {} does not exist".format(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        try:
            import ultralytics  # noqa: F401  (needed to unpickle Ultralytics checkpoints)
        except ImportError as e:
            raise MarsError("{} is a pickled Ultralytics checkpoint; `pip install ultralytics` to convert it".format(path)) from e
        obj = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(obj, dict) and ("ema" in obj or "model" in obj) and not all(torch.is_tensor(v) for v in obj.values()):
        model = obj.get("ema") or obj.get("model")
        obj = model.state_dict() if hasattr(model, "state_dict") else model
    if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()):
        raise MarsError("{} holds neither an Ultralytics checkpoint nor a state dict".format(path))
    return {k: v.float() if v.is_floating_point() else v for k, v in obj.items()}


def convertStateDict(source, backboneOnly=False):
    """Ultralytics state dict -> (Mars state dict, phase, nc, regMax)."""
    phase, nc, regMax = inferPhase(source)
    converted = {}
    for key, value in source.items():
        newKey = renameKey(key)
        if newKey is not None and (not backboneOnly or newKey.startswith("backbone.")):
            converted[newKey] = value
    return converted, phase, nc, regMax


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src")
    parser.add_argument("out")
    parser.add_argument("--backbone-only", action="store_true", help="keep only backbone.* tensors")
    args = parser.parse_args(argv)
    try:
        stateDict, phase, nc, regMax = convertStateDict(loadSource(args.src), args.backbone_only)
        atomicTorchSave(stateDict, args.out)
    except MarsError as e:
        sys.stderr.write("mars: error: {}\n".format(e))
        return 2
    sys.stdout.write("wrote {} ({} tensors, phase={}, nc={}, regMax={}{})\n".format(
        args.out, len(stateDict), phase, nc, regMax, ", backbone only" if args.backbone_only else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
