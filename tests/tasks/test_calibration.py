"""Calibration: temperature fitting on a known miscalibration, the conformal quantile, coverage on a synthetic case
with a known answer, ECE/Brier by hand, and calibrated outputs identical on the torch and ONNX paths."""

import math

import numpy as np
import pytest

from faceattr.tasks.calibration import (
    INTERVAL_METHOD,
    INTERVAL_METHOD_SD,
    apply_class_calibration,
    brier,
    choose_class_method,
    choose_interval_method,
    conformal_interval,
    conformal_quantile,
    conformal_scores,
    ece,
    fit,
    fit_bias_temperature,
    fit_temperature,
    interval_method,
    interval_scale,
    softmax_t,
    source_weights,
    spread,
)
from faceattr.tasks.decode import decode_task
from faceattr.tasks.task import nominal_task, ordinal_task


def test_temperature_recovers_a_known_miscalibration():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2.0, (20000, 3))
    p = softmax_t(true_logits)
    y = np.array([rng.choice(3, p=pi) for pi in p])  # labels drawn from the true probabilities
    overconfident = true_logits * 2.5  # a network 2.5x too sure of itself
    t = fit_temperature(overconfident, y)
    assert t == pytest.approx(2.5, rel=0.05)
    assert ece(softmax_t(overconfident, t), y) < ece(softmax_t(overconfident), y) / 3
    assert np.array_equal(softmax_t(overconfident, t).argmax(1), overconfident.argmax(1))  # classes unchanged


def test_ece_and_brier_by_hand():
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    y = np.array([0, 1, 0, 0])
    # bins: 0.9 -> accuracy 0.5, gap 0.4 (half the faces); 0.6 -> accuracy 1.0, gap 0.4 (half): ECE 0.4
    assert ece(probs, y) == pytest.approx(0.4)
    # Brier: (0.1^2 + 0.1^2) + (0.9^2 + 0.9^2) + 2 * (0.4^2 + 0.4^2), over 4 faces
    assert brier(probs, y) == pytest.approx((0.02 + 1.62 + 2 * 0.32) / 4)


def test_conformal_quantile_is_the_finite_sample_rank():
    s = np.arange(1, 10, dtype=float)  # n = 9
    assert conformal_quantile(s, 0.8) == 8.0  # ceil(10 * 0.8) = 8th smallest
    assert conformal_quantile(s, 0.5) == 5.0
    assert conformal_quantile(s, 0.95) == math.inf  # ceil(9.5) = 10 > n: no finite interval guarantees it
    with pytest.raises(ValueError):
        conformal_quantile(s, 1.0)


def test_conformal_coverage_on_a_known_case():
    """Ages with errors proportional to sqrt(age): the calibrated 80 % interval covers 80 % of new faces."""
    rng = np.random.default_rng(1)

    def draw(n):
        age = rng.uniform(2, 90, n)
        est = age + rng.normal(0, 1.3, n) * np.sqrt(age)
        return age, est

    a_cal, e_cal = draw(3000)
    a_new, e_new = draw(20000)
    for c in (0.5, 0.8, 0.95):
        q = conformal_quantile(conformal_scores(e_cal, a_cal), c)
        lo, hi = conformal_interval(e_new, q, -1e9, 1e9)
        cover = ((a_new >= lo) & (a_new <= hi)).mean()
        assert abs(cover - c) < 0.02, (c, cover)


def test_bias_corrected_temperature_recovers_a_known_shift():
    """Labels drawn from softmax(z / 2 + b): BCTS recovers T = 2 and b (last class at 0); plain temperature cannot
    fix the priors, so the cross-fitted choice takes the bias; without a shift the biases come out near 0."""
    rng = np.random.default_rng(4)
    z = rng.normal(0, 3, (6000, 3))
    b_true = np.array([0.8, -0.5, 0.0])
    p = softmax_t(z / 2 + b_true)
    y = (rng.random(6000)[:, None] > p.cumsum(1)).sum(1)
    t, b = fit_bias_temperature(z, y)
    assert t == pytest.approx(2.0, rel=0.08) and b == pytest.approx(b_true, abs=0.1)
    assert choose_class_method(z, y, None)[0] == "temperature+bias"
    y0 = (rng.random(6000)[:, None] > softmax_t(z / 2).cumsum(1)).sum(1)
    t0, b0 = fit_bias_temperature(z, y0, bias=False)
    assert t0 == pytest.approx(2.0, rel=0.08) and not b0.any()
    t1, b1 = fit_bias_temperature(z, y0)  # no shift to correct: the biases stay near 0, either choice is the same
    assert t1 == pytest.approx(2.0, rel=0.08) and np.abs(b1).max() < 0.1
    # two sources weigh the same whatever their sizes: 1/(2*3) for each of three rows, 1/(2*1) for the one
    np.testing.assert_allclose(source_weights(np.array(["u", "u", "u", "f"]), 4), [1 / 6, 1 / 6, 1 / 6, 1 / 2])
    with pytest.raises(ValueError, match="biases"):
        apply_class_calibration(z[:2], 1.0, [0.1, 0.2])


def test_per_face_scale_is_chosen_when_it_is_informative():
    """Each face's error has its own known sd (in the distribution the head gives): the sd-scaled conformal interval
    keeps 80 % coverage and is narrower than the sqrt(E) one, and fit() picks it; when the distribution's sd says
    nothing (unrelated to the error, which grows with sqrt(age)), fit() keeps sqrt(E)."""
    rng = np.random.default_rng(2)
    vals = np.arange(1, 117, dtype=float)

    def draw(n, informative):
        age = rng.uniform(5, 80, n)
        sd = rng.choice([1.0, 3.0, 12.0], n)  # the distribution's sd: the error's own, or unrelated to it
        noise = sd if informative else 0.9 * np.sqrt(age)
        est = age + rng.normal(0, 1, n) * noise
        return age, est, sd

    for informative, want in ((True, INTERVAL_METHOD_SD), (False, INTERVAL_METHOD)):
        a_cal, e_cal, sd_cal = draw(4000, informative)
        method, widths = choose_interval_method(e_cal, sd_cal, a_cal, 1, 116)
        assert method == want, widths
    a_cal, e_cal, sd_cal = draw(4000, True)
    a_new, e_new, sd_new = draw(20000, True)
    q = conformal_quantile(conformal_scores(e_cal, a_cal, INTERVAL_METHOD_SD, sd_cal), 0.8)
    lo, hi = conformal_interval(e_new, q, -1e9, 1e9, INTERVAL_METHOD_SD, sd_new)
    assert abs(((a_new >= lo) & (a_new <= hi)).mean() - 0.8) < 0.02
    q0 = conformal_quantile(conformal_scores(e_cal, a_cal), 0.8)
    lo0, hi0 = conformal_interval(e_new, q0, -1e9, 1e9)
    assert np.median(hi - lo) < 0.8 * np.median(hi0 - lo0)
    # spread(): the sd of a distribution, by hand: mass 1/2 on 2 and 4 -> sd 1
    p = np.zeros((1, 116))
    p[0, [1, 3]] = 0.5
    assert spread(p, vals, np.array([3.0]))[0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="unknown interval method"):
        interval_method({"interval": {"age": {"method": "x"}}}, "age")


def test_fit_and_decode_apply_the_calibration():
    age = ordinal_task("age", range(1, 11))
    gender = nominal_task("gender", ["m", "f"])
    rng = np.random.default_rng(0)
    raw = {"age": rng.normal(0, 1, (200, 9)), "gender": rng.normal(0, 3, (200, 2))}
    labels = {"age": rng.integers(0, 10, 200), "gender": rng.integers(0, 2, 200)}
    dec = {"age": decode_task(raw["age"], age), "gender": decode_task(raw["gender"], gender)}
    cal = fit(raw, dec, labels, [age, gender], "test data")
    assert cal["temperature"]["gender"] > 1.5  # random labels: the logits are far too sure
    assert set(cal["interval"]["age"]["q"]) == {"0.5", "0.8", "0.95"}
    d = decode_task(raw["gender"], gender, calibration=cal)
    assert d["probs"].max(1).mean() < dec["gender"]["probs"].max(1).mean()
    a = decode_task(raw["age"], age, coverage=0.8, calibration=cal)
    q = cal["interval"]["age"]["q"]["0.8"]
    np.testing.assert_allclose(
        a["high"] - a["value"],
        np.minimum(
            q
            * interval_scale(
                a["value"], cal["interval"]["age"]["method"], spread(a["probs"], np.arange(1, 11), a["value"])
            ),
            10 - a["value"],
        ),
    )


@pytest.mark.slow
def test_calibrated_outputs_agree_on_torch_and_onnx(tiny_checkpoint, tmp_path):
    """The calibration travels with the model into the ONNX file and is applied there the same way."""
    import json
    import shutil

    from conftest import a_face_path
    from faceattr.runtime.predictor import Predictor
    from faceattr.training.export import export_onnx
    from faceattr.vision.image import load_image, square_resize

    ck = tmp_path / "m.safetensors"
    shutil.copy(tiny_checkpoint, ck)
    meta = json.loads(tiny_checkpoint.with_suffix(".json").read_text())
    meta["calibration"] = {
        "temperature": {"gender": 1.7, "race": 0.8},
        "bias": {"race": [0.3, -0.2, 0.1, 0.0, 0.0, 0.0, 0.0][: len(meta["tasks"][2]["classes"])]},
        "interval": {"age": {"method": INTERVAL_METHOD, "q": {"0.5": 0.4, "0.8": 1.1, "0.95": 2.0}}},
    }
    ck.with_suffix(".json").write_text(json.dumps(meta))
    onnx_path = export_onnx(ck, tmp_path / "m.onnx")
    pt, po = Predictor.from_checkpoint(ck), Predictor.from_onnx(onnx_path)
    chip = square_resize(load_image(a_face_path()), 64)[None]
    a, b = pt.predict_chips(chip)[0], po.predict_chips(chip)[0]
    for t in ("gender", "race"):
        for k, v in a[t].probabilities.items():
            assert abs(v - b[t].probabilities[k]) < 1e-4
    assert a["age"].interval == pytest.approx(b["age"].interval, abs=1e-3)
    half = a["age"].interval[1] - a["age"].value
    assert half == pytest.approx(min(1.1 * math.sqrt(max(a["age"].value, 1)), 116 - a["age"].value), rel=1e-4)
    with pytest.raises(ValueError, match="calibrated for coverage"):
        Predictor.from_checkpoint(ck, coverage=0.7)
    # the per-face scale (the distribution's sd) travels and applies the same way
    meta["calibration"]["interval"]["age"]["method"] = INTERVAL_METHOD_SD
    ck.with_suffix(".json").write_text(json.dumps(meta))
    onnx_path = export_onnx(ck, tmp_path / "m2.onnx")
    a2 = Predictor.from_checkpoint(ck).predict_chips(chip)[0]
    b2 = Predictor.from_onnx(onnx_path).predict_chips(chip)[0]
    assert a2["age"].interval == pytest.approx(b2["age"].interval, abs=1e-3)
    assert a2["age"].interval != pytest.approx(a["age"].interval, abs=1e-3)
