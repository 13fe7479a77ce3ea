"""eval/tide.py against the tidecv 1.0.1 oracle (TIDE's own error breakdown), on a hand-made set with one planted
error of each kind and on random sets with difficult boxes, equal and tied scores and the maxDets cap."""
import contextlib
import io

import numpy as np
import pytest
import torch

from eval.tide import MAIN_ERRORS, SPECIAL_ERRORS, tideBreakdown
from tests.helpers import requireOracle


def oracle(preds, gts, ignore, nc, maxDets=100):
    """tidecv's numbers for Mars rows (eval/tide.py "Feeding tidecv"): overall and per class (its internals), and
    the error kind of each detection / gt."""
    tidecv = requireOracle("tidecv")
    gtData, predData = tidecv.Data("gt", max_dets=maxDets), tidecv.Data("preds")
    for image in sorted(set(preds[:, 0].astype(int).tolist()) | set(gts[:, 0].astype(int).tolist())):
        gtData.add_image(image, str(image))
    for row, isIgnored in zip(gts.tolist(), ignore.tolist()):
        box = [row[2], row[3], row[4] - row[2], row[5] - row[3]]
        add = gtData.add_ignore_region if isIgnored else gtData.add_ground_truth
        add(int(row[0]), int(row[1]), box)
    for row in preds.tolist():
        predData.add_detection(int(row[0]), int(row[1]), row[2], [row[3], row[4], row[5] - row[3], row[6] - row[4]])
    tide = tidecv.TIDE()
    with contextlib.redirect_stdout(io.StringIO()):
        run = tide.evaluate(gtData, predData, mode=tidecv.TIDE.BOX)
        errors = tide.get_all_errors()
    base = {c: obj.get_ap() for c, obj in run.ap_data.objs.items() if not obj.is_empty()}
    kinds = dict(zip(MAIN_ERRORS, tidecv.TIDE._error_types))
    fixed = {name: run.fix_errors(lambda e, t=kind: isinstance(e, t)) for name, kind in kinds.items()}
    fixed["FalsePos"] = run.fix_errors(transform=tidecv.FalsePositiveError.fix)
    fixed["FalseNeg"] = run.fix_errors(false_neg_dict=run.false_negatives)
    perClassAp = np.full(nc, np.nan)
    perClassDAp = {name: np.full(nc, np.nan) for name in fixed}
    for c, ap in base.items():
        perClassAp[c] = ap
        for name, data in fixed.items():
            perClassDAp[name][c] = data.objs[c].get_ap() - ap
    predError = np.array([("TP" if ann.get("used") else "") for ann in predData.annotations], dtype=object)
    predIgnored = np.array([("used" in ann and ann["used"] is None) for ann in predData.annotations])
    gtMissed = np.zeros(len(gts), dtype=bool)
    for error in run.errors:
        if isinstance(error, tidecv.MissedError):
            gtMissed[error.gt["_id"]] = True
        else:
            predError[error.pred["_id"]] = error.short_name
    dAP = dict(errors["main"]["preds"], **errors["special"]["preds"])
    return dict(mAP=run.ap, dAP=dAP, counts={k: len(run.error_dict[t]) for k, t in kinds.items()},
                perClassAp=perClassAp, perClassDAp=perClassDAp, predError=predError.astype(str),
                predIgnored=predIgnored, gtMissed=gtMissed)


def assertSame(mine, theirs):
    assert mine["mAP"] == pytest.approx(theirs["mAP"], abs=1e-6)
    for name in MAIN_ERRORS + SPECIAL_ERRORS:
        assert mine["dAP"][name] == pytest.approx(theirs["dAP"][name], abs=1e-6), name
        np.testing.assert_allclose(mine["perClassDAp"][name], theirs["perClassDAp"][name], atol=1e-6, rtol=0,
                                   err_msg=name)
    np.testing.assert_allclose(mine["perClassAp"], theirs["perClassAp"], atol=1e-6, rtol=0)
    assert mine["counts"] == theirs["counts"]
    assert mine["predError"].tolist() == theirs["predError"].tolist()
    assert mine["predIgnored"].tolist() == theirs["predIgnored"].tolist()
    assert mine["gtMissed"].tolist() == theirs["gtMissed"].tolist()


# gts (image, class, x0, y0, x1, y1), the last one difficult
HAND_GTS = [
    (0, 0, 10, 10, 50, 50),  # A
    (0, 1, 100, 100, 150, 150),  # B
    (0, 0, 200, 10, 260, 70),  # C
    (1, 1, 0, 0, 40, 40),  # D: nothing detects it -> Miss
    (1, 1, 50, 50, 90, 90),  # E
    (1, 0, 100, 100, 140, 140),  # F: found late, so removing the duplicate raises class 0's precision there
    (2, 0, 0, 0, 100, 100),  # difficult
]
# detections (image, class, score, x0, y0, x1, y1) and the error kind each one plants
HAND_PREDS = [
    ((0, 0, 0.9, 11, 11, 50, 50), "TP"),  # A
    ((0, 0, 0.8, 10, 10, 51, 51), "Dupe"),  # A again, IoU > 0.5 with the used A
    ((0, 2, 0.7, 101, 101, 150, 150), "Cls"),  # on B with the wrong class
    ((0, 0, 0.6, 200, 10, 225, 70), "Loc"),  # C with IoU 25 / 60 = 0.42
    ((0, 1, 0.5, 30, 10, 70, 50), "Both"),  # wrong class (A is class 0), IoU 1 / 3 with A
    ((0, 0, 0.4, 300, 300, 340, 340), "Bkg"),  # on nothing
    ((1, 1, 0.55, 51, 50, 90, 91), "TP"),  # E
    ((2, 0, 0.45, 10, 10, 50, 50), "Bkg"),  # inside the difficult box: ignored, classified Bkg as tidecv does
    ((3, 1, 0.35, 0, 0, 20, 20), "Bkg"),  # an image without gts
    ((1, 0, 0.3, 100, 100, 140, 141), "TP"),  # F
]


def test_hand_made_set_has_each_error_kind():
    preds = torch.tensor([p for p, _ in HAND_PREDS], dtype=torch.float64)
    gts = torch.tensor(HAND_GTS, dtype=torch.float64)
    ignore = torch.tensor([False] * 6 + [True])
    mine = tideBreakdown(preds, gts, 3, gtIgnore=ignore)
    assert mine["predError"].tolist() == [kind for _, kind in HAND_PREDS]
    assert mine["predIgnored"].tolist() == [False] * 7 + [True, False, False]
    assert mine["gtMissed"].tolist() == [False, False, False, True, False, False, False]
    assert mine["counts"] == dict(Cls=1, Loc=1, Both=1, Dupe=1, Bkg=3, Miss=1)
    for name in ("Cls", "Loc", "Dupe", "Bkg", "Miss", "FalsePos", "FalseNeg"):
        assert mine["dAP"][name] > 0, name
    assertSame(mine, oracle(preds.numpy(), gts.numpy(), ignore.numpy(), 3))


def randomSet(seed, numImages=20, nc=4, tiedScores=False):
    """Gts with ~20 % difficult, detections jittered from gts (some with the wrong class, some duplicated) plus random
    ones, an image with detections only and one with gts only."""
    rng = np.random.default_rng(seed)
    gts, preds = [], []
    for image in range(numImages):
        if image == 1:
            continue  # detections only (below)
        for _ in range(rng.integers(1, 8)):
            x0, y0 = rng.uniform(0, 200, 2)
            w, h = rng.uniform(10, 80, 2)
            gts.append((image, rng.integers(nc), x0, y0, x0 + w, y0 + h))
    gts = np.array(gts, dtype=np.float64)
    ignore = rng.random(len(gts)) < 0.2
    for gt in gts:
        if gt[0] == 2:
            continue  # gts only
        for _ in range(rng.integers(0, 4)):
            w, h = gt[4] - gt[2], gt[5] - gt[3]
            jitter = rng.normal(0, 0.25, 4) * [w, h, w, h]
            cls = gt[1] if rng.random() < 0.7 else rng.integers(nc)
            preds.append((gt[0], cls, rng.random(), *(gt[2:] + jitter)))
    for image in range(numImages):
        if image == 2:
            continue
        for _ in range(rng.integers(0, 6)):
            x0, y0 = rng.uniform(0, 200, 2)
            w, h = rng.uniform(5, 80, 2)
            preds.append((image, rng.integers(nc), rng.random(), x0, y0, x0 + w, y0 + h))
    preds = np.array(preds, dtype=np.float64)
    preds[:, 3:] = np.sort(preds[:, 3:].reshape(-1, 2, 2), axis=1).reshape(-1, 4)  # x0 <= x1, y0 <= y1
    if tiedScores:
        preds[:, 2] = np.round(preds[:, 2], 1)
    return preds, gts, ignore


@pytest.mark.parametrize("seed,tiedScores,maxDets", [(0, False, 100), (1, False, 100), (2, False, 5),
                                                      (3, True, 100), (4, True, 6)])
def test_random_sets_equal_tidecv(seed, tiedScores, maxDets):
    preds, gts, ignore = randomSet(seed, tiedScores=tiedScores)
    mine = tideBreakdown(torch.from_numpy(preds), torch.from_numpy(gts), 4, gtIgnore=torch.from_numpy(ignore),
                         maxDets=maxDets)
    theirs = oracle(preds, gts, ignore, 4, maxDets=maxDets)
    assert ignore.any() and mine["predIgnored"].any()
    assert all(mine["counts"][k] > 0 for k in MAIN_ERRORS), mine["counts"]
    assertSame(mine, theirs)


def test_empty_inputs():
    result = tideBreakdown(torch.zeros(0, 7), torch.zeros(0, 6), 3)
    assert np.isnan(result["mAP"]) and np.isnan(result["perClassAp"]).all()
