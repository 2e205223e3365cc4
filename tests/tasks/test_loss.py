import math

import numpy as np
import pytest
import torch

from faceattr.tasks.decode import decode_task, ordinal_probs
from faceattr.tasks.task import MISSING, fairface_tasks, ordinal_task
from faceattr.training.losses import (
    create_weighting,
    interval_cross_entropy_loss,
    levels_from_labels,
    ordinal_binary_loss,
    task_loss,
)
from faceattr.training.weighting import DWAWeighting, UncertaintyWeighting


def test_levels_round_trip():
    labels = torch.tensor([0, 3, 8])
    lv = levels_from_labels(labels, 9)
    assert lv.shape == (3, 8)
    assert lv.sum(1).tolist() == [0, 3, 8]  # "level > k" for k < label
    # decoding confident logits built from the targets recovers every level
    logits = (lv * 2 - 1) * 20
    task = fairface_tasks()[0]
    for form in ("coral", "binary"):
        d = decode_task(logits.numpy(), task, form)
        assert d["index"].tolist() == [0, 3, 8]
        np.testing.assert_allclose(d["value"], np.asarray(task.values)[[0, 3, 8]], atol=1e-6)


def test_exact_age_round_trip_and_interval():
    task = ordinal_task("age", range(1, 117))
    ages = torch.tensor([1, 25, 116]) - 1
    logits = (levels_from_labels(ages, 116) * 2 - 1) * 30
    d = decode_task(logits.numpy(), task, "coral")
    np.testing.assert_allclose(d["value"], [1, 25, 116], atol=1e-6)
    assert d["low"].tolist() == [1, 25, 116] and d["high"].tolist() == [1, 25, 116]
    # a flat distribution over 20..29 gives that central interval and its mean
    p_gt = np.where(np.arange(115) < 19, 1.0, np.where(np.arange(115) < 29, 1 - (np.arange(115) - 18) / 10, 0.0))
    lg = np.log(np.clip(p_gt, 1e-12, 1) / np.clip(1 - p_gt, 1e-12, 1))[None]
    d = decode_task(lg, task, "coral", coverage=0.8)
    assert abs(d["value"][0] - 24.5) < 1e-3
    assert d["low"][0] == 20 and d["high"][0] == 28  # CDF reaches 0.1 at 20 and 0.9 at 28


def test_inconsistent_binary_classifiers_are_made_monotone():
    logits = np.array([[5.0, -5.0, 5.0, -5.0]])
    p = ordinal_probs(logits, "binary", 5)
    assert (p >= 0).all() and abs(p.sum() - 1) < 1e-9


def test_ordinal_loss_hand_computation():
    logits = torch.tensor([[0.5, -1.0, 2.0]])
    label = torch.tensor([2])  # targets 1, 1, 0
    loss, n = ordinal_binary_loss(logits, label)
    sp = lambda x: math.log1p(math.exp(x))  # noqa: E731 - softplus
    expected = sp(-0.5) + sp(1.0) + sp(2.0)
    assert n == 1 and abs(loss.item() - expected) < 1e-6


def test_shape_checks():
    with pytest.raises(ValueError):
        ordinal_binary_loss(torch.zeros(2, 3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError):
        ordinal_binary_loss(torch.zeros(2, 3), torch.tensor([0, 9]))


def _task(kind: str, form: str, k: int):
    """A task whose head has ``k`` outputs under ``form`` (labels up to 5 in these tests)."""
    from faceattr.tasks.formulations import get_formulation
    from faceattr.tasks.task import nominal_task

    if kind == "nominal":
        return nominal_task("t", [f"c{i}" for i in range(k)])
    levels = next(n for n in range(6, 30) if get_formulation(form).num_outputs(n) == k)
    return ordinal_task("t", range(levels))


@pytest.mark.parametrize(
    "kind,form,k",
    [
        ("ordinal", "coral", 5),
        ("ordinal", "binary", 5),
        ("ordinal", "softmax", 6),
        ("ordinal", "regression", 1),
        ("nominal", "coral", 6),
    ],
)
def test_masked_labels_contribute_nothing(kind, form, k):
    kind = _task(kind, form, k)
    torch.manual_seed(0)
    w = torch.randn(8, k, requires_grad=True)
    labels = torch.tensor([0, 2, MISSING, 5, MISSING, 1, 3, MISSING])
    keep = labels != MISSING
    loss, n = task_loss(w, labels, kind, form)
    (g_all,) = torch.autograd.grad(loss, w)
    loss2, n2 = task_loss(w[keep], labels[keep], kind, form)
    assert n == n2 == 5 and torch.allclose(loss, loss2)
    assert torch.all(g_all[~keep] == 0)
    # all missing: zero loss, zero gradient, no NaN
    loss0, n0 = task_loss(w, torch.full((8,), MISSING), kind, form)
    (g0,) = torch.autograd.grad(loss0, w)
    assert n0 == 0 and loss0.item() == 0 and torch.all(g0 == 0)


def test_uncertainty_weighting_hand_computation():
    uw = UncertaintyWeighting(["age", "gender", "reg"], regression_tasks=["reg"])
    with torch.no_grad():
        uw.log_vars.copy_(torch.tensor([1.0, -0.5, 0.3]))
    losses = {"age": torch.tensor(4.0), "gender": torch.tensor(0.7), "reg": torch.tensor(2.0)}
    total, w = uw(losses)
    expected = (math.exp(-1.0) * 4.0 + 0.5) + (math.exp(0.5) * 0.7 - 0.25) + (0.5 * math.exp(-0.3) * 2.0 + 0.15)
    assert abs(total.item() - expected) < 1e-5
    assert abs(w["age"] - math.exp(-1)) < 1e-6 and abs(w["reg"] - 0.5 * math.exp(-0.3)) < 1e-6
    # d total / d s_t = -c_t exp(-s_t) L_t + 1/2: zero at s_t = log(2 c_t L_t), the fixed point the weights converge to
    (g,) = torch.autograd.grad(total, uw.log_vars)
    assert abs(g[0].item() - (-math.exp(-1.0) * 4.0 + 0.5)) < 1e-5
    assert uw.log_vars.grad is None  # the module never calls backward itself


def test_uncertainty_log_vars_converge_to_fixed_point():
    uw = UncertaintyWeighting(["a", "b"])
    opt = torch.optim.Adam(uw.parameters(), lr=0.05)
    losses = {"a": torch.tensor(10.0), "b": torch.tensor(0.2)}
    for _ in range(600):
        total, _ = uw(losses)
        opt.zero_grad()
        total.backward()
        opt.step()
    np.testing.assert_allclose(uw.log_vars.detach().numpy(), [math.log(20.0), math.log(0.4)], atol=0.02)


def test_other_weightings():
    eq = create_weighting("equal", ["a", "b"])
    total, w = eq({"a": torch.tensor(1.0), "b": torch.tensor(2.0)})
    assert total.item() == 3.0 and w == {"a": 1.0, "b": 1.0}
    fx = create_weighting("fixed", ["a", "b"], fixed_weights={"a": 0.5, "b": 2.0})
    assert fx({"a": torch.tensor(1.0), "b": torch.tensor(2.0)})[0].item() == 4.5
    with pytest.raises(ValueError):
        create_weighting("fixed", ["a", "b"], fixed_weights={"a": 1.0})
    with pytest.raises(ValueError):
        create_weighting("magic", ["a"])
    dwa = DWAWeighting(["a", "b"], temperature=2.0)
    dwa.end_epoch({"a": 1.0, "b": 1.0})
    assert dwa.weights() == {"a": 1.0, "b": 1.0}
    dwa.end_epoch({"a": 0.5, "b": 1.0})  # a improved faster -> smaller weight
    w = dwa.weights()
    ra, rb = 0.5 / 2, 1.0 / 2
    assert abs(w["a"] - 2 * math.exp(ra) / (math.exp(ra) + math.exp(rb))) < 1e-9 and w["a"] < w["b"]
    rlw = create_weighting("rlw", ["a", "b", "c"])
    _, w = rlw({"a": torch.tensor(1.0), "b": torch.tensor(1.0), "c": torch.tensor(1.0)})
    assert abs(sum(w.values()) - 3.0) < 1e-5


# ---- interval-censored ordinal labels (a FairFace age group on a model of exact ages) -------------------------
def test_exact_interval_equals_plain_label():
    torch.manual_seed(1)
    logits = torch.randn(6, 7)
    labels = torch.tensor([0, 3, 7, MISSING, 5, 1])
    a, n = ordinal_binary_loss(logits, labels)
    b, m = ordinal_binary_loss(logits, labels, labels.clone())
    assert n == m == 5 and torch.allclose(a, b)


def test_interval_leaves_the_inner_thresholds_out():
    logits = torch.tensor([[0.5, -1.0, 2.0, 0.3]])  # 5 levels, thresholds k = 0..3
    lo, hi = torch.tensor([1]), torch.tensor([3])  # level in 1..3: y>0 yes, y>1 and y>2 unknown, y>3 no
    loss, n = ordinal_binary_loss(logits, lo, hi)
    sp = lambda x: math.log1p(math.exp(x))  # noqa: E731 - softplus
    assert n == 1 and abs(loss.item() - (sp(-0.5) + sp(0.3))) < 1e-6
    lg = logits.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(ordinal_binary_loss(lg, lo, hi)[0], lg)
    assert g[0, 1] == 0 and g[0, 2] == 0 and g[0, 0] != 0 and g[0, 3] != 0


def test_interval_over_every_level_counts_as_missing():
    logits = torch.randn(2, 4, requires_grad=True)
    loss, n = ordinal_binary_loss(logits, torch.tensor([0, 2]), torch.tensor([4, 2]))
    assert n == 1
    with pytest.raises(ValueError):
        ordinal_binary_loss(logits, torch.tensor([3, 2]), torch.tensor([1, 2]))  # upper below lower
    with pytest.raises(ValueError):
        ordinal_binary_loss(logits, torch.tensor([0, 2]), torch.tensor([5]))  # shape


def test_softmax_interval_is_minus_log_probability_of_the_interval():
    logits = torch.tensor([[0.1, 1.0, -0.5, 2.0, 0.0]])
    loss, n = interval_cross_entropy_loss(logits, torch.tensor([1]), torch.tensor([3]))
    p = torch.softmax(logits, 1)[0]
    assert n == 1 and abs(loss.item() + math.log(p[1:4].sum().item())) < 1e-6
    exact, _ = interval_cross_entropy_loss(logits, torch.tensor([2]), torch.tensor([2]))
    assert abs(exact.item() - torch.nn.functional.cross_entropy(logits, torch.tensor([2])).item()) < 1e-6


def test_regression_interval_costs_distance_to_the_interval():
    pred = torch.tensor([[2.0], [5.5], [0.0]])
    loss, n = task_loss(
        pred,
        torch.tensor([1, 2, MISSING]),
        ordinal_task("t", range(6)),
        "regression",
        upper=torch.tensor([3, 4, MISSING]),
    )
    assert n == 2 and abs(loss.item() - (0.0 + 1.5) / 2) < 1e-6
