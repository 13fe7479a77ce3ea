"""bench/speed/cuda_step.py without a GPU: the precision policy, the device it measures, its memory reading, and that
no benchmark script imports another (what they share lives in bench/common.py)."""
import ast
import contextlib
import inspect
import os
import weakref

import pytest
import torch

from bench.speed import cuda_step

BENCH_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")

GPU1 = torch.device("cuda", 1)


def fakeBf16(monkeypatch, native):
    """torch.cuda.is_bf16_supported answering native, and torch.cuda.device recording the device made current;
    returns the list of (current device, including_emulation) per call."""
    calls, current = [], []

    @contextlib.contextmanager
    def device(d):
        current.append(torch.device(d))
        yield
        current.pop()

    def isBf16Supported(including_emulation=True):
        calls.append((current[-1] if current else None, including_emulation))
        return native

    monkeypatch.setattr(torch.cuda, "device", device)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", isBf16Supported)
    return calls


def test_installed_torch_takes_including_emulation():
    assert "including_emulation" in inspect.signature(torch.cuda.is_bf16_supported).parameters


def test_amp_defaults_to_fp16_without_asking_for_bf16(monkeypatch):
    calls = fakeBf16(monkeypatch, native=False)
    assert cuda_step.ampPolicy("fp16", GPU1) == torch.float16
    assert calls == []


def test_bf16_asks_the_measured_device_for_native_support(monkeypatch):
    calls = fakeBf16(monkeypatch, native=True)
    assert cuda_step.ampPolicy("bf16", GPU1) == torch.bfloat16
    assert calls == [(GPU1, False)]


def test_bf16_without_native_support_stops_with_one_line(monkeypatch):
    fakeBf16(monkeypatch, native=False)
    with pytest.raises(SystemExit) as stop:
        cuda_step.ampPolicy("bf16", GPU1)
    message = str(stop.value.code)
    assert "bf16" in message and "cuda:1" in message and "\n" not in message


def test_amp_off_or_cpu_runs_fp32_only(monkeypatch):
    calls = fakeBf16(monkeypatch, native=True)
    assert cuda_step.ampPolicy("off", GPU1) is None
    assert cuda_step.ampPolicy("bf16", torch.device("cpu")) is None
    assert calls == []
    with pytest.raises(ValueError):
        cuda_step.ampPolicy("fp8", GPU1)


def test_policy_line_names_the_precision():
    assert "fp16" in cuda_step.describePolicy(torch.float16, GPU1)
    assert "grad scaler" in cuda_step.describePolicy(torch.float16, GPU1)
    assert "bf16" in cuda_step.describePolicy(torch.bfloat16, GPU1)
    assert "off" in cuda_step.describePolicy(None, GPU1)


def test_missing_cuda_stops_with_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as stop:
        cuda_step.main(["--device", "cuda:1"])
    message = str(stop.value.code)
    assert "CUDA is not available" in message and "\n" not in message


def test_device_gets_its_index(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    assert cuda_step.resolveDevice("cuda") == GPU1
    assert cuda_step.resolveDevice("cuda:0") == torch.device("cuda", 0)
    assert cuda_step.resolveDevice("cpu") == torch.device("cpu")
    for name in ("cuda:2", "nonsense"):
        with pytest.raises(SystemExit) as stop:
            cuda_step.resolveDevice(name)
        assert "\n" not in str(stop.value.code)


def test_side_memory_names_the_device_and_frees_the_side(monkeypatch):
    events, sides = [], []
    held = 3 * 2 ** 30  # allocated before the side is built; its peak is half a GiB above that

    def record(name, result=None):
        def call(device=None):
            events.append((name, device))
            return result() if callable(result) else result
        return call

    monkeypatch.setattr(torch.cuda, "synchronize", record("synchronize"))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", record("reset"))
    monkeypatch.setattr(torch.cuda, "memory_allocated", record("allocated", lambda: held))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", record("peak", lambda: held + 2 ** 29))
    monkeypatch.setattr(torch.cuda, "empty_cache",
                        lambda: events.append(("empty", "freed" if sides and sides[0]() is None else "")))

    class Side:
        def __call__(self, images, targets):
            events.append(("step", None))

    def build():
        side = Side()
        sides.append(weakref.ref(side))
        events.append(("build", None))
        return side

    assert cuda_step.sideMemory(build, [(None, None)] * 2, GPU1) == 0.5
    named = [e for e in events if e[0] in ("synchronize", "reset", "allocated", "peak")]
    assert named and all(device == GPU1 for _, device in named)
    order = [name for name, _ in events if name != "empty"]
    assert order == ["allocated", "build", "step", "step", "synchronize", "reset", "step", "step", "synchronize",
                     "peak"]
    assert events[0] == ("empty", "") and events[-1] == ("empty", "freed")  # emptied before, and after the side went
    assert sides[0]() is None


def test_bench_scripts_do_not_import_each_other():
    """Every bench script imports bench.common at most: no script (bench/*.py, bench/speed/*.py) imports another."""
    paths = [os.path.join(folder, name) for folder in (BENCH_DIR, os.path.join(BENCH_DIR, "speed"))
             for name in os.listdir(folder) if name.endswith(".py") and name not in ("__init__.py", "common.py")]
    scripts = {os.path.splitext(os.path.basename(p))[0] for p in paths}
    assert {"versus", "distill", "cuda_step", "train_step", "loss", "evaluator", "dataloader"} <= scripts
    for path in paths:
        with open(path) as f:
            tree = ast.parse(f.read())
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        imported |= {"{}.{}".format(node.module, alias.name) for node in ast.walk(tree)
                     if isinstance(node, ast.ImportFrom) and node.module in ("bench", "bench.speed") for alias in node.names}
        others = {name for name in imported if name in scripts or
                  (name.startswith("bench.") and name.split(".")[-1] in scripts)}
        assert not others, (path, others)
