"""The ordinal formulation registry: every registered formulation builds a head, trains, and decodes to a
distribution; CORN's loss and decoding checked by hand."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from faceattr.tasks.decode import decode_task
from faceattr.tasks.formulations import Formulation, get_formulation, list_formulations, register_formulation
from faceattr.tasks.kinds import make_head
from faceattr.tasks.ordinal import corn_loss
from faceattr.tasks.task import ordinal_task
from faceattr.training.weighting import GradNormWeighting, create_weighting


@pytest.mark.parametrize("name", list_formulations())
def test_every_formulation_trains_and_decodes(name):
    torch.manual_seed(0)
    task = ordinal_task("age", range(1, 11))
    form = get_formulation(name)
    head = make_head(8, task, name, dropout=0.0)
    x = torch.randn(16, 8)
    y = torch.randint(0, 10, (16,))
    y[0] = -1  # a missing label counts for nothing
    out = head(x)
    assert out.shape == (16, form.num_outputs(10)) == (16, task.num_outputs(name))
    loss, n = form.loss(out, y)
    assert n == 15 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in head.parameters())
    dec = decode_task(out.detach().numpy(), task, name)
    assert dec["probs"].shape == (16, 10)
    np.testing.assert_allclose(dec["probs"].sum(1), 1.0, atol=1e-6)
    assert ((dec["value"] >= 1) & (dec["value"] <= 10)).all()
    ev = form.expected_value(out, torch.as_tensor(task.values, dtype=out.dtype))
    assert ev.shape == (16,)
    with pytest.raises(ValueError, match="outputs"):
        form.level_probs(np.zeros((2, form.num_outputs(10) + 1)), 10)


def test_unknown_formulation_names_the_choices():
    with pytest.raises(ValueError, match="corn"):
        get_formulation("corall")
    with pytest.raises(ValueError, match="taken"):

        @register_formulation
        class Again(Formulation):
            name = "coral"


def test_corn_loss_by_hand():
    a, b = 0.5, -1.0
    p0, p1 = 1 / (1 + math.exp(-a)), 1 / (1 + math.exp(-b))
    logits = torch.tensor([[a, b]] * 5)
    lab = torch.tensor([0, 1, 2, 1, 0])
    up = torch.tensor([0, 1, 2, 2, 1])  # last two: intervals [1, 2] (to the top) and [0, 1]
    want = [
        -math.log(1 - p0),
        -(math.log(p0) + math.log(1 - p1)),
        -(math.log(p0) + math.log(p1)),
        -math.log(p0),
        -math.log(1 - p0 * p1),
    ]
    for i, w in enumerate(want):
        loss, n = corn_loss(logits[i : i + 1], lab[i : i + 1], up[i : i + 1])
        assert n == 1 and loss.item() == pytest.approx(w, rel=1e-5), i
    loss, n = corn_loss(logits, lab, up)
    assert n == 5 and loss.item() == pytest.approx(sum(want) / 5, rel=1e-5)
    # exact labels: the same as the binary cross-entropies of CORN's conditional training subsets
    lg = torch.randn(7, 4)
    y = torch.tensor([0, 1, 2, 3, 4, 2, 1])
    ref = 0.0
    for i in range(7):
        for k in range(4):
            if y[i] > k - 1:  # sub-problem k sees the samples with y > k-1
                t = float(y[i] > k)
                ref += float(nn.functional.binary_cross_entropy_with_logits(lg[i, k], torch.tensor(t)))
    assert corn_loss(lg, y)[0].item() == pytest.approx(ref / 7, rel=1e-5)


def test_corn_decoding_is_rank_consistent():
    out = np.array([[2.0, -1.0, 3.0]])  # conditional logits: P(y > k) = prod of sigmoids, never increasing
    probs = get_formulation("corn").level_probs(out, 4)
    s = 1 / (1 + np.exp(-out[0]))
    gt = np.cumprod(s)
    np.testing.assert_allclose(probs[0], [1 - gt[0], gt[0] - gt[1], gt[1] - gt[2], gt[2]], atol=1e-12)


def test_gradnorm_balances_gradient_norms():
    torch.manual_seed(0)
    shared = nn.Sequential(nn.Linear(4, 8))
    model = nn.Module()
    model.shared = shared
    heads = nn.ModuleList([nn.Linear(8, 1), nn.Linear(8, 1)])
    w = create_weighting("gradnorm", ["big", "small"])
    assert isinstance(w, GradNormWeighting)
    w.attach(model)
    opt = torch.optim.SGD([*shared.parameters(), *heads.parameters(), *w.parameters()], lr=0.01)
    x = torch.randn(64, 4)
    for _ in range(100):
        z = shared(x)
        losses = {"big": 10 * heads[0](z).pow(2).mean(), "small": 0.1 * heads[1](z).pow(2).mean()}
        total, weights = w(losses)
        opt.zero_grad()
        total.backward()
        opt.step()
    assert sum(weights.values()) == pytest.approx(2.0, rel=1e-4)
    assert weights["big"] < 0.95 and weights["small"] > 1.05  # the task with the larger gradient is weighed down
    with pytest.raises(ValueError, match="shared"):
        w.attach(nn.Linear(2, 2))
