"""Post-hoc calibration of what the tool prints: class probabilities and age intervals.

Fitted on data the model never trained on (its validation split), stored in the model's metadata
(``ModelMeta.calibration``), applied by :func:`~faceattr.tasks.decode.decode_outputs` on the torch and ONNX paths.
Applying it is numpy only; fitting the class calibrators also needs scipy (the training extra).

- **Class probabilities**: per nominal task, temperature scaling (Guo et al., "On calibration of modern neural
  networks", ICML 2017): ``softmax(logits / T)``, which never changes the predicted class, or bias-corrected
  temperature scaling (BCTS: Alexandari, Kundaje & Shrikumar, "Maximum likelihood with bias-corrected calibration
  is hard-to-beat at label shift adaptation", ICML 2020): ``softmax(logits / T + b)`` with one bias per class, which
  also corrects class priors that differ between the training mix and a test set and so can change a predicted
  class. Both minimise the negative log-likelihood on validation, each validation *source* (dataset) weighted
  equally, so that the larger dataset does not set the calibration of the smaller; :func:`fit` keeps the one with the
  lower mean per-source ECE on validation, cross-fitted (fitted on one half, measured on the other, both ways).
- **Intervals of a numeric ordinal task** (exact age): split conformal prediction (Vovk et al. 2005; Lei et al.,
  "Distribution-free predictive inference for regression", JASA 2018) with the normalised score
  ``s = |y - E| / sqrt(E)`` (E the expected value: errors grow with age). With ``n`` validation faces,
  ``q_c`` is the ceil((n + 1) c)-th smallest score, and ``[E - q_c sqrt(E), E + q_c sqrt(E)]`` (clipped to the
  task's range) holds the true value with probability at least ``c`` for an exchangeable new face
  (marginal coverage). Stored for c = 0.5, 0.8 and 0.95. A head whose distribution differs per face (CORN,
  softmax) can instead scale by the face's own spread, ``s = |y - E| / max(sd, 1)`` (sd the distribution's standard
  deviation: locally weighted conformal, Lei et al. 2018 sec. 5.2), so a confident face gets a narrow interval and
  a doubtful one a wide interval, with the same guarantee. :func:`fit` takes the scale whose 80 % interval is
  narrower on half of the validation faces (quantiles fitted on the other half) and then fits the quantiles on
  all of them; the choice and both widths are stored.

Measures: expected calibration error (top label, equal-width bins), Brier score, interval coverage and width.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from faceattr.tasks.formulations import softmax_np as softmax_t

COVERAGES = (0.5, 0.8, 0.95)
INTERVAL_METHOD = "split-conformal |y - E| / sqrt(E)"
INTERVAL_METHOD_SD = "split-conformal |y - E| / sd"
INTERVAL_METHODS = (INTERVAL_METHOD, INTERVAL_METHOD_SD)


def fit_temperature(logits: np.ndarray, labels: np.ndarray, lo: float = 0.05, hi: float = 20.0) -> float:
    """The temperature minimising the NLL (plain temperature scaling: :func:`fit_bias_temperature` without biases)."""
    return fit_bias_temperature(logits, labels, bias=False, t_range=(lo, hi))[0]


CLASS_METHODS = ("temperature", "temperature+bias")


def source_weights(groups: np.ndarray | None, n: int) -> np.ndarray:
    """Per-row weights summing to 1 that give every source (``groups`` value) the same total weight."""
    if groups is None:
        return np.full(n, 1.0 / n)
    groups = np.asarray(groups)
    _, inv, counts = np.unique(groups, return_inverse=True, return_counts=True)
    return 1.0 / (len(counts) * counts[inv])


def fit_bias_temperature(
    logits: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray | None = None,
    bias: bool = True,
    t_range: tuple[float, float] = (0.05, 20.0),
) -> tuple[float, np.ndarray]:
    """T (and, with ``bias``, per-class biases b, the last fixed at 0) minimising the weighted NLL of
    ``softmax(logits / T + b)``. Needs scipy (installed with the training extra)."""
    from scipy.optimize import minimize

    z, y = np.asarray(logits, np.float64), np.asarray(labels, np.int64)
    if z.ndim != 2 or y.shape != (len(z),) or not len(y):
        raise ValueError(f"need N x K logits and N labels, got {z.shape} and {y.shape}")
    k = z.shape[1]
    w = np.full(len(y), 1.0 / len(y)) if weights is None else np.asarray(weights, np.float64)
    onehot = np.eye(k)[y]

    def loss(x: np.ndarray) -> tuple[float, np.ndarray]:
        t = math.exp(x[0])
        b = np.r_[x[1:], 0.0] if bias else np.zeros(k)
        a = z / t + b
        a = a - a.max(1, keepdims=True)
        logp = a - np.log(np.exp(a).sum(1, keepdims=True))
        g = (np.exp(logp) - onehot) * w[:, None]  # d loss / d a
        grad_t = float((g * (-z / t)).sum())  # d a / d log T = -z / T
        grad = np.r_[grad_t, g.sum(0)[:-1]] if bias else np.array([grad_t])
        return float(-(w * logp[np.arange(len(y)), y]).sum()), grad

    x0 = np.zeros(k if bias else 1)
    r = minimize(
        loss,
        x0,
        jac=True,
        method="L-BFGS-B",
        bounds=[(math.log(t_range[0]), math.log(t_range[1]))] + [(-10, 10)] * (len(x0) - 1),
    )
    return float(math.exp(r.x[0])), (np.r_[r.x[1:], 0.0] if bias else np.zeros(k))


def apply_class_calibration(
    logits: np.ndarray, temperature: float = 1.0, bias: Sequence[float] | np.ndarray | None = None
) -> np.ndarray:
    """Calibrated class probabilities: ``softmax(logits / T + b)``."""
    z = np.asarray(logits, np.float64) / float(temperature)
    if bias is not None:
        b = np.asarray(bias, np.float64)
        if b.shape != (z.shape[-1],):
            raise ValueError(f"class calibration: {b.shape[0]} biases for {z.shape[-1]} classes")
        z = z + b
    return softmax_t(z)


def choose_class_method(
    logits: np.ndarray, labels: np.ndarray, groups: np.ndarray | None
) -> tuple[str, dict[str, float]]:
    """The class calibrator with the lower mean per-source ECE, cross-fitted on validation: fitted on the even rows and
    measured on the odd ones, and the other way round."""
    z, y = np.asarray(logits, np.float64), np.asarray(labels, np.int64)
    g = np.zeros(len(y), int) if groups is None else np.asarray(groups)
    halves = (np.arange(len(y)) % 2 == 0, np.arange(len(y)) % 2 == 1)
    scores = {}
    for method in CLASS_METHODS:
        eces = []
        for fit_m, test_m in (halves, halves[::-1]):
            t, b = fit_bias_temperature(
                z[fit_m], y[fit_m], source_weights(g[fit_m], int(fit_m.sum())), method != "temperature"
            )
            p = apply_class_calibration(z[test_m], t, b)
            eces += [ece(p[g[test_m] == s], y[test_m][g[test_m] == s]) for s in np.unique(g[test_m])]
        scores[method] = round(float(np.mean(eces)), 5)
    return min(CLASS_METHODS, key=lambda m: scores[m]), scores


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> list[dict[str, float]]:
    """Per equal-width confidence bin of the top label: count, mean confidence, accuracy (a reliability diagram)."""
    probs, labels = np.asarray(probs), np.asarray(labels)
    conf = probs.max(1)
    correct = (probs.argmax(1) == labels).astype(float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    out = []
    for b in range(bins):
        m = idx == b
        out.append(
            {
                "lo": float(edges[b]),
                "hi": float(edges[b + 1]),
                "n": int(m.sum()),
                "confidence": float(conf[m].mean()) if m.any() else float("nan"),
                "accuracy": float(correct[m].mean()) if m.any() else float("nan"),
            }
        )
    return out


def ece(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error of the top label: sum over the bins of :func:`reliability` of
    (share of faces) x |accuracy - mean confidence|."""
    n = len(labels)
    return float(
        sum(b["n"] / n * abs(b["accuracy"] - b["confidence"]) for b in reliability(probs, labels, bins) if b["n"])
    )


def brier(probs: np.ndarray, labels: np.ndarray) -> float:
    """Multi-class Brier score: mean over faces of sum_k (p_k - 1[y = k])^2."""
    onehot = np.zeros_like(np.asarray(probs, np.float64))
    onehot[np.arange(len(labels)), labels] = 1.0
    return float(((probs - onehot) ** 2).sum(1).mean())


def conformal_quantile(scores: np.ndarray, coverage: float) -> float:
    """Split-conformal quantile: the ceil((n + 1) c)-th smallest of n scores (infinite when that exceeds n)."""
    s = np.sort(np.asarray(scores, np.float64))
    if not len(s) or not 0 < coverage < 1:
        raise ValueError("need scores and a coverage in (0, 1)")
    k = math.ceil((len(s) + 1) * coverage)
    return float(s[k - 1]) if k <= len(s) else math.inf


def spread(probs: np.ndarray, values: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Standard deviation of each row's distribution over ``values`` (rows of ``probs`` sum to 1)."""
    d = np.asarray(values, np.float64)[None, :] - np.asarray(expected, np.float64)[:, None]
    return np.sqrt(np.clip((np.asarray(probs, np.float64) * d**2).sum(-1), 0.0, None))


def interval_scale(expected: np.ndarray, method: str = INTERVAL_METHOD, sd: np.ndarray | None = None) -> np.ndarray:
    """The per-face scale of the conformal score: sqrt(E), or the distribution's sd (floored at 1)."""
    if method == INTERVAL_METHOD:
        return np.sqrt(np.clip(np.asarray(expected, np.float64), 1.0, None))
    if method == INTERVAL_METHOD_SD:
        if sd is None:
            raise ValueError(f"interval method {method!r} needs the distribution's sd")
        return np.clip(np.asarray(sd, np.float64), 1.0, None)
    raise ValueError(f"unknown interval method {method!r}; known: {list(INTERVAL_METHODS)}")


def conformal_scores(
    expected: np.ndarray, truth: np.ndarray, method: str = INTERVAL_METHOD, sd: np.ndarray | None = None
) -> np.ndarray:
    return np.abs(np.asarray(truth, np.float64) - expected) / interval_scale(expected, method, sd)


def conformal_interval(
    expected: np.ndarray,
    q: float,
    lo: float,
    hi: float,
    method: str = INTERVAL_METHOD,
    sd: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    half = q * interval_scale(expected, method, sd)
    return np.clip(expected - half, lo, hi), np.clip(expected + half, lo, hi)


def choose_interval_method(
    expected: np.ndarray, sd: np.ndarray, truth: np.ndarray, lo: float, hi: float, coverage: float = 0.8
) -> tuple[str, dict[str, float]]:
    """The scale whose ``coverage`` interval is narrower (median width) on the odd-numbered faces, its quantile
    fitted on the even-numbered ones; returns it and each method's median width."""
    a, b = np.arange(len(truth)) % 2 == 0, np.arange(len(truth)) % 2 == 1
    widths = {}
    for m in INTERVAL_METHODS:
        q = conformal_quantile(conformal_scores(expected[a], truth[a], m, sd[a]), coverage)
        low, high = conformal_interval(expected[b], q, lo, hi, m, sd[b])
        widths[m] = round(float(np.median(high - low)), 4)
    return min(INTERVAL_METHODS, key=lambda m: widths[m]), widths


def fit(
    raw: Mapping[str, np.ndarray],
    decoded: Mapping[str, Mapping[str, Any]],
    labels: Mapping[str, np.ndarray],
    tasks: Sequence[Any],
    source: str,
    groups: np.ndarray | None = None,
) -> dict[str, Any]:
    """Fit the class calibrators (nominal tasks) and conformal quantiles (numeric ordinal tasks) on validation outputs:
    ``raw`` head outputs, ``decoded`` predictions (uncalibrated), exact ``labels`` (-1 = missing), ``groups`` the
    source dataset of each row (weighted equally; None: one source)."""
    cal: dict[str, Any] = {
        "fitted_on": source,
        "temperature": {},
        "bias": {},
        "class_method": {},
        "interval": {},
        "n": {},
    }
    for t in tasks:
        if t.name not in labels or t.name not in raw:
            continue
        y = np.asarray(labels[t.name])
        m = y >= 0
        if m.sum() < 20:
            continue
        if t.kind == "nominal":
            z, g = np.asarray(raw[t.name])[m], (None if groups is None else np.asarray(groups)[m])
            method, ece_cv = choose_class_method(z, y[m], g)
            temp, bias = fit_bias_temperature(z, y[m], source_weights(g, len(z)), method != "temperature")
            cal["temperature"][t.name] = round(temp, 5)
            if method != "temperature":
                cal["bias"][t.name] = [round(float(v), 5) for v in bias]
            cal["class_method"][t.name] = {
                "method": method,
                "chosen_by": {"cross_fitted_mean_ece_per_source_on_validation": ece_cv},
            }
            cal["n"][t.name] = int(m.sum())
        elif t.is_numeric:
            vals = np.asarray(t.values)
            e = np.asarray(decoded[t.name]["value"])[m]
            sd = spread(np.asarray(decoded[t.name]["probs"])[m], vals, e)
            truth = vals[y[m]]
            method, widths = choose_interval_method(e, sd, truth, float(vals[0]), float(vals[-1]))
            scores = conformal_scores(e, truth, method, sd)
            cal["interval"][t.name] = {
                "method": method,
                "q": {str(c): round(conformal_quantile(scores, c), 5) for c in COVERAGES},
                "chosen_by": {"median_width_80_on_half_of_validation": widths},
            }
            cal["n"][t.name] = int(m.sum())
    return cal


def interval_method(cal: Mapping[str, Any] | None, task: str) -> str:
    """The conformal score a model's calibration of ``task`` was fitted with (older models: sqrt(E))."""
    m = str(((cal or {}).get("interval") or {}).get(task, {}).get("method", INTERVAL_METHOD))
    if m not in INTERVAL_METHODS:
        raise ValueError(f"calibration of {task!r}: unknown interval method {m!r}; known: {list(INTERVAL_METHODS)}")
    return m


def interval_for(cal: Mapping[str, Any] | None, task: str, coverage: float) -> float | None:
    """The stored conformal quantile of ``task`` for ``coverage`` (None when not calibrated for it)."""
    if not cal:
        return None
    q = (cal.get("interval") or {}).get(task, {}).get("q", {})
    key = next((k for k in q if abs(float(k) - coverage) < 1e-9), None)
    return None if key is None else float(q[key])
