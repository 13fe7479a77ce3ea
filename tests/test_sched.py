"""train/sched.py and train/opt.py: learning rate and momentum per iteration and parameter group (warm-up, cosine and
linear decay), the warm-up length rule, the three optimizer groups and their weight decay. Hand-computed values, and
Ultralytics' own rule where it has the same one."""
import math
import types

import numpy as np
import pytest
import torch
import torch.nn as nn

from model.base.yolomodel import YoloModel
from tests.helpers import makeConfig, requireOracle
from train.opt import makeOptimizer, parameterGroups
from misc.errors import MarsError
from train.sched import LearningRateSchedule, accumulation, rampedAccumulation, warmupIterations

requireOracle("ultralytics")
from ultralytics.engine.trainer import BaseTrainer as RefTrainer  # noqa: E402
from ultralytics.utils.torch_utils import one_cycle  # noqa: E402

BASE, MIN, BIAS, MOMENTUM = 0.01, 0.0001, 0.1, 0.937


def toyModel():
    """conv (weight + bias), BatchNorm (weight + bias), conv without bias: one parameter of each kind."""
    return nn.Sequential(nn.Conv2d(3, 4, 3, bias=True), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1, bias=False))


def scheduleAndOptimizer(schedulerType="COS", warmupEpochs=1.0, itersPerEpoch=200, maxEpoch=4, batchSize=16):
    mcfg = makeConfig("nano", nc=2, inputShape=(64, 64), baseLearningRate=BASE, minLearningRate=MIN,
                      warmupBiasLearningRate=BIAS, optimizerMomentum=MOMENTUM, schedulerType=schedulerType,
                      warmupEpochs=warmupEpochs, maxEpoch=maxEpoch, batchSize=batchSize)
    optimizer = makeOptimizer(mcfg, toyModel())
    return LearningRateSchedule(mcfg, itersPerEpoch), optimizer


def groupValues(optimizer):
    return {g["kind"]: (g["lr"], g["momentum"]) for g in optimizer.param_groups}


@pytest.mark.parametrize("warmupEpochs, itersPerEpoch, epochs, expected", [
    (3.0, 50, 200, 150),  # 3 epochs
    (3.0, 10, 200, 30),  # no 100-iteration floor (older Ultralytics releases and Mars had one)
    (3.0, 25, 12, 75),  # bench/versus.py's demo: 400 images in batches of 16
    (0.5, 7, 200, 4),  # round(3.5), half to even
    (1.5, 101, 200, 152),  # round(151.5)
    (3.0, 10, 3, 20),  # at most all but the last epoch
    (3.0, 100, 4, 300),  # no half-run cap
    (3.0, 10, 1, 0),  # one epoch: no warm-up
    (0.0, 50, 200, 0),  # no warm-up
    (-1.0, 50, 200, 0),
])
def test_warmup_length_rule(warmupEpochs, itersPerEpoch, epochs, expected):
    """round(min(warmupEpochs, epochs - 1) * batches per epoch), 0 when not positive: Ultralytics 8.4.190's formula."""
    assert warmupIterations(warmupEpochs, itersPerEpoch, epochs) == expected
    reference = min(warmupEpochs, max(epochs - 1, 0))
    assert expected == (round(reference * itersPerEpoch) if reference > 0 else 0)


@pytest.mark.parametrize("warmupEpochs, batches, epochs", [(3.0, 50, 100), (2.0, 64, 50), (3.0, 400, 20), (3.0, 10, 100),
                                                           (3.0, 25, 12), (3.0, 10, 3), (0.5, 7, 2), (3.0, 9, 1),
                                                           (0.0, 10, 10), (2.5, 3, 2)])
def test_warmup_length_equals_ultralytics(warmupEpochs, batches, epochs):
    """Ultralytics 8.4.190's own BaseTrainer._get_warmup_iterations on a stub holding its two inputs (args.warmup_epochs,
    epochs) gives Mars's warm-up, and the schedule uses it."""
    ref = types.SimpleNamespace(args=types.SimpleNamespace(warmup_epochs=warmupEpochs), epochs=epochs)
    expected = RefTrainer._get_warmup_iterations(ref, batches)
    assert warmupIterations(warmupEpochs, batches, epochs) == expected
    mcfg = makeConfig("nano", nc=2, inputShape=(64, 64), warmupEpochs=warmupEpochs, maxEpoch=epochs,
                      warmupMinIterations=0)
    assert LearningRateSchedule(mcfg, batches).warmup == expected


@pytest.mark.parametrize("warmupEpochs, itersPerEpoch, epochs, expected", [
    (1.0, 38, 12, 100),  # the demo: 38 iterations by 8.4.190's rule, Mars's floor makes it 100
    (3.0, 50, 200, 150),  # longer than the floor: 8.4.190's rule
    (1.0, 7, 30, 100),  # a student without cfgops' warmupMinIterations 0
    (1.0, 7, 20, 70),  # the floor is at most half the run
    (3.0, 10, 3, 20),  # 8.4.190's rule is never shortened (20 > 15, half the run)
    (0.0, 50, 200, 0),  # no warm-up stays none
])
def test_warmup_floor(warmupEpochs, itersPerEpoch, epochs, expected):
    """mcfg.warmupMinIterations (default 100): max(8.4.190's iterations, min(100, half the run)); the schedule uses it,
    and the stage-3 configs (cfgops distillation tags) set it to 0."""
    assert warmupIterations(warmupEpochs, itersPerEpoch, epochs, 100) == expected
    mcfg = makeConfig("nano", nc=2, inputShape=(64, 64), warmupEpochs=warmupEpochs, maxEpoch=epochs)
    assert mcfg.warmupMinIterations == 100 and LearningRateSchedule(mcfg, itersPerEpoch).warmup == expected
    from cfgops import demo
    assert demo.mcfg(["nano", "distillation"]).warmupMinIterations == 0 and demo.mcfg(["nano"]).warmupMinIterations == 100


def test_cosine_schedule_per_iteration_and_group():
    """1 warm-up epoch of 200 iterations (warm-up 200), 4 epochs = 800 iterations. Hand values at step 0, 100, 400."""
    schedule, optimizer = scheduleAndOptimizer("COS")
    assert schedule.warmup == 200 and schedule.total == 800
    assert [g["kind"] for g in optimizer.param_groups] == ["conv", "norm", "bias"]
    schedule.apply(optimizer, 0)  # bias starts at warmupBiasLearningRate, the others at 0; momentum at 0.8
    assert groupValues(optimizer) == {"conv": (0.0, 0.8), "norm": (0.0, 0.8), "bias": (BIAS, 0.8)}
    schedule.apply(optimizer, 100)  # half-way: target 1e-4 + 0.0099 (1 + cos(pi / 8)) / 2 = 0.00962320368593087
    values = groupValues(optimizer)
    assert values["conv"][0] == pytest.approx(0.004811601842965435, rel=1e-12)
    assert values["norm"][0] == pytest.approx(0.004811601842965435, rel=1e-12)
    assert values["bias"][0] == pytest.approx(0.054811601842965435, rel=1e-12)
    assert all(m == pytest.approx((0.8 + MOMENTUM) / 2, rel=1e-12) for _, m in values.values())
    schedule.apply(optimizer, 400)  # past warm-up, half-way through the run: the mean of base and min
    assert groupValues(optimizer) == {k: (pytest.approx(0.00505, rel=1e-12), MOMENTUM) for k in ("conv", "norm", "bias")}
    assert schedule.decayed(800) == MIN  # the end, exactly
    assert schedule.decayed(0) == BASE


def test_linear_schedule_ends_at_min():
    schedule, optimizer = scheduleAndOptimizer("LINEAR")
    schedule.apply(optimizer, 600)
    assert groupValues(optimizer)["conv"] == (pytest.approx(MIN + (BASE - MIN) * 0.25, rel=1e-12), MOMENTUM)
    assert schedule.decayed(800) == MIN and schedule.decayed(0) == BASE
    assert schedule.decayed(10 ** 6) == MIN  # never below


@pytest.mark.parametrize("schedulerType", ["COS", "LINEAR"])
def test_schedule_equals_ultralytics_interpolation(schedulerType):
    """Every iteration: decay = base * Ultralytics' lf (one_cycle for cosine, its linear lambda) over iterations;
    warm-up = np.interp(step, [0, nw], [bias lr or 0, target]) and momentum np.interp(step, [0, nw], [0.8, 0.937]),
    as in Ultralytics' BaseTrainer._do_train."""
    schedule, optimizer = scheduleAndOptimizer(schedulerType)
    total, warmup, lrf = 800, 200, MIN / BASE
    lf = one_cycle(1, lrf, total) if schedulerType == "COS" else (lambda x: max(1 - x / total, 0) * (1.0 - lrf) + lrf)
    previous = None
    for step in range(total):
        returned = schedule.apply(optimizer, step)
        target = BASE * lf(step)
        for group in optimizer.param_groups:
            if step <= warmup:  # Ultralytics' ni <= nw: at ni == nw the interpolation ends on the targets, exactly
                lr = np.interp(step, [0, warmup], [BIAS if group["kind"] == "bias" else 0.0, target])
                momentum = np.interp(step, [0, warmup], [0.8, MOMENTUM])
            else:
                lr, momentum = target, MOMENTUM
            assert group["lr"] == pytest.approx(lr, rel=1e-9, abs=1e-15), (step, group["kind"])
            assert group["momentum"] == pytest.approx(momentum, rel=1e-12), (step, group["kind"])
            if step == warmup:
                assert (lr, momentum) == (target, MOMENTUM)  # Ultralytics: on its targets
                assert (group["lr"], group["momentum"]) == (schedule.decayed(step), MOMENTUM)  # Mars: on its own
        assert returned == optimizer.param_groups[0]["lr"]
        if step >= warmup:  # decays monotonically after the warm-up
            assert previous is None or returned <= previous
            previous = returned


def test_no_warmup_starts_at_base():
    schedule, optimizer = scheduleAndOptimizer(warmupEpochs=0.0)
    schedule.apply(optimizer, 0)
    assert groupValues(optimizer) == {k: (BASE, MOMENTUM) for k in ("conv", "norm", "bias")}


# --- gradient accumulation (mcfg.nominalBatchSize) ------------------------------------------------------------------
def ultralyticsAccumulate(nbs, batch, batches, epochs):
    """BaseTrainer._build_train_pipeline: max(round(nbs / batch), 1), at most batches * epochs."""
    return min(max(round(nbs / batch), 1), batches * epochs)


def ultralyticsRamp(ni, nw, acc0):
    """BaseTrainer._do_train: during warm-up (nw and ni <= nw) max(1, int(np.interp(ni, [0, nw], [1, acc0]).round()))."""
    return max(1, int(np.interp(ni, [0, nw], [1, acc0]).round())) if nw and ni <= nw else acc0


@pytest.mark.parametrize("batch", [1, 3, 8, 16, 20, 24, 32, 43, 64, 100])
@pytest.mark.parametrize("nw", [0, 1, 6, 7, 10, 75, 300])
def test_accumulation_ramp_equals_ultralytics(nw, batch):
    """Batches per optimizer step for a nominal batch of 64, at every iteration ni of a warm-up of nw and after it:
    Ultralytics 8.4.190's accumulate, its cap and its ramp (np.interp, rounded half to even), value for value."""
    batches, epochs = 25, 12
    acc0 = accumulation(64, batch, batches * epochs)
    assert acc0 == ultralyticsAccumulate(64, batch, batches, epochs)
    assert [rampedAccumulation(ni, nw, acc0) for ni in range(nw + 5)] == [ultralyticsRamp(ni, nw, acc0)
                                                                          for ni in range(nw + 5)]
    assert accumulation(0, batch, batches * epochs) == 1  # nominalBatchSize 0: a step per batch
    assert accumulation(64, batch, 2) == min(acc0, 2) == ultralyticsAccumulate(64, batch, 1, 2)  # capped at the run


def test_accumulation_in_the_schedule():
    """The schedule's accumulate and stepImages follow mcfg.nominalBatchSize and the global batch; AdamW with
    nominalBatchSize 0 steps per 64 images (train/sched.py nominalBatchSize), SGD per batch."""
    def schedule(**fields):
        mcfg = makeConfig("nano", nc=2, inputShape=(64, 64), maxEpoch=10, warmupEpochs=1.0, warmupMinIterations=0,
                          **fields)
        return LearningRateSchedule(mcfg, 20, fields.get("batchSize", 16) * fields.pop("ranks", 1))
    assert (schedule(batchSize=16).accumulate, schedule(batchSize=16).stepImages) == (1, 16)
    sgd = schedule(batchSize=16, nominalBatchSize=64)
    assert (sgd.accumulate, sgd.stepImages, sgd.warmup) == (4, 64, 20)
    assert [sgd.accumulation(ni) for ni in (0, 5, 10, 15, 20, 21, 199)] == [1, 2, 2, 3, 4, 4, 4]
    assert schedule(batchSize=16, nominalBatchSize=64, optimizerType="AdamW").accumulate == 4
    adamw = schedule(batchSize=16, optimizerType="AdamW")
    assert (adamw.accumulate, adamw.stepImages) == (4, 64)
    assert schedule(batchSize=8, optimizerType="AdamW", nominalBatchSize=32).accumulate == 4
    assert schedule(batchSize=100, optimizerType="AdamW").stepImages == 100
    mcfg = makeConfig("nano", nc=2, inputShape=(64, 64), batchSize=8, nominalBatchSize=64)
    assert LearningRateSchedule(mcfg, 20, 8 * 4).accumulate == 2  # 4 ranks: the global batch of 32 images


@pytest.mark.parametrize("value", [-1, 1.5, "64", True])
def test_nominal_batch_size_must_be_a_non_negative_int(value):
    with pytest.raises(MarsError, match=r"^mcfg.nominalBatchSize=.* must be a non-negative integer"):
        makeConfig("nano", nc=2, inputShape=(64, 64), nominalBatchSize=value)


# --- optimizer groups and weight decay -------------------------------------------------------------------------
def test_groups_equal_ultralytics_on_yolov8():
    """The three groups of a nano YoloModel are Ultralytics' build_optimizer groups (weight / bn / bias)."""
    model = YoloModel(makeConfig("nano", nc=20, inputShape=(64, 64)))
    convWeights, normWeights, biases = parameterGroups(model)
    ref = RefTrainer.build_optimizer(types.SimpleNamespace(), model, name="SGD", lr=0.01, momentum=0.9, decay=5e-4)
    refGroups = {g["param_group"]: {id(p) for p in g["params"]} for g in ref.param_groups}
    assert {id(p) for p in convWeights} == refGroups["weight"]
    assert {id(p) for p in normWeights} == refGroups["bn"]
    assert {id(p) for p in biases} == refGroups["bias"]
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(p.dim() == 4 for p in convWeights)
    assert all(names[id(p)].endswith(".bias") for p in biases)
    assert len(convWeights) + len(normWeights) + len(biases) == len(list(model.parameters()))


@pytest.mark.parametrize("images", [16, 64, 128])
def test_weight_decay_on_conv_weights_only_scaled_per_64_images(images):
    mcfg = makeConfig("nano", nc=2, inputShape=(64, 64), optimizerWeightDecay=5e-4, batchSize=4)
    optimizer = makeOptimizer(mcfg, toyModel(), stepImages=images)
    decays = {g["kind"]: g["weight_decay"] for g in optimizer.param_groups}
    assert decays == {"conv": pytest.approx(5e-4 * images / 64, rel=1e-12), "norm": 0.0, "bias": 0.0}
    if images >= 64:  # Ultralytics: weight_decay * batch * accumulate / nbs, accumulate = max(round(64 / batch), 1)
        assert decays["conv"] == pytest.approx(5e-4 * images * max(round(64 / images), 1) / 64, rel=1e-12)
    assert makeOptimizer(mcfg, toyModel()).param_groups[0]["weight_decay"] == pytest.approx(5e-4 * 4 / 64)


def test_weight_decay_moves_only_conv_weights():
    """A step with zero gradients: only weight decay acts. SGD nesterov from a zero momentum buffer moves a
    conv weight w by -lr * (1 + momentum) * decay * w; BatchNorm weights and every bias stay put."""
    torch.manual_seed(0)
    model = toyModel()
    mcfg = makeConfig("nano", nc=2, inputShape=(64, 64), optimizerWeightDecay=5e-4, batchSize=64,
                      baseLearningRate=1.0, optimizerMomentum=0.9)
    optimizer = makeOptimizer(mcfg, model)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-1, 1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    for name, p in model.named_parameters():
        if name in ("0.weight", "2.weight"):
            expected = before[name] * (1 - 1.0 * (1 + 0.9) * 5e-4)
            assert torch.allclose(p, expected, rtol=0, atol=1e-7) and not torch.equal(p, before[name]), name
        else:
            assert torch.equal(p, before[name]), name
    assert math.isclose(optimizer.param_groups[0]["weight_decay"], 5e-4)
