"""The device policy of training: mixed precision on CUDA and deterministic algorithms."""
import os

import torch


def autocastDtype(device, amp):
    """The autocast dtype of mcfg.amp on this device: None (float32) on the CPU or without amp; on CUDA bfloat16
    where the card computes it natively (compute capability 8.0 and newer: A100, RTX 30xx, H100; every ROCm card),
    else float16 with a grad scaler (T4, V100: bf16 there is emulated, without bf16 convolutions)."""
    if device.type != "cuda" or not amp:
        return None
    native = bool(torch.version.hip) or torch.cuda.get_device_capability(device) >= (8, 0)
    return torch.bfloat16 if native else torch.float16


def setDeterminism(deterministic, deviceType):
    """mcfg.deterministic: torch's deterministic algorithms. On CUDA, cuBLAS needs CUBLAS_WORKSPACE_CONFIG for that (set
    here unless the user set it; before the first matmul), and an op without a deterministic CUDA kernel warns
    instead of stopping the run. Without it, cuDNN may pick the fastest kernels (benchmark)."""
    if deterministic:
        if deviceType == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=deviceType == "cuda")
        torch.backends.cudnn.benchmark = False
    elif deviceType == "cuda":
        torch.backends.cudnn.benchmark = True
