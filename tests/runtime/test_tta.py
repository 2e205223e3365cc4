"""Flip test-time augmentation: every face, or only the uncertain ones (faceattr.runtime.tta)."""

import numpy as np
import pytest

from faceattr.errors import UsageError
from faceattr.runtime.tta import check_flip, flip_words, run_numpy, uncertain
from faceattr.tasks.task import nominal_task, ordinal_task

TASKS = (ordinal_task("age", list(range(1, 5))), nominal_task("gender", ("male", "female")))


def toy_net(calls):
    """A 'network' whose gender logits are the image's two pixels (so that the mirror image swaps them) and whose
    age outputs are the pixels' sum; it records each batch's size."""

    def run(x):
        calls.append(len(x))
        g = x[:, 0, 0, :].astype(np.float64)
        return {"gender": g, "age": np.repeat(g.sum(1, keepdims=True), 3, 1)}

    return run


# face 0: logits (5, -5), P(male) = 0.99995 -> certain; face 1: (0.1, 0), P = 0.525 -> uncertain; face 2: (-3, 1)
X = np.array([[[[5.0, -5.0]]], [[[0.1, 0.0]]], [[[-3.0, 1.0]]]])


def test_uncertain_faces_by_calibrated_top_probability():
    raw = {"gender": X[:, 0, 0, :]}
    # P(female | face 2) = 1 / (1 + e^-4) = 0.982
    assert uncertain(raw, {"gender": 0.8}, TASKS, None).tolist() == [False, True, False]
    assert uncertain(raw, {"gender": 0.99}, TASKS, None).tolist() == [False, True, True]
    # a temperature of 20 turns face 0's logits into P = 1 / (1 + e^-0.5) = 0.622 and face 2's into 0.550
    cal = {"temperature": {"gender": 20.0}}
    assert uncertain(raw, {"gender": 0.8}, TASKS, cal).tolist() == [True, True, True]
    assert uncertain(raw, {"gender": 0.6}, TASKS, cal).tolist() == [False, True, True]


def test_gated_flip_mirrors_only_the_uncertain_faces():
    calls: list[int] = []
    run = toy_net(calls)
    out = run_numpy(run, X, {"gender": 0.8}, TASKS)
    assert calls == [3, 1]  # one pass for all, a second for face 1's mirror image only
    # face 1: the mean of (0.1, 0) and its mirror (0, 0.1); faces 0 and 2 keep their single view
    np.testing.assert_allclose(out["gender"], [[5, -5], [0.05, 0.05], [-3, 1]])
    np.testing.assert_allclose(out["age"][:, 0], [0, 0.1, -2])
    # every face's outputs are those of no flip or of full flip
    calls.clear()
    full, none = run_numpy(run, X, True), run_numpy(run, X, False)
    assert calls == [6, 3]
    np.testing.assert_allclose(out["gender"][1], full["gender"][1])
    np.testing.assert_allclose(out["gender"][[0, 2]], none["gender"][[0, 2]])
    calls.clear()
    np.testing.assert_allclose(run_numpy(run, X, np.bool_(True))["gender"], full["gender"])  # a numpy boolean
    assert calls == [6]
    # nobody uncertain: no second pass
    calls.clear()
    run_numpy(run, X, {"gender": 0.5}, TASKS)
    assert calls == [3]


def test_check_flip_validates_against_the_models_tasks():
    assert check_flip(True, TASKS) is True and check_flip(False, TASKS) is False
    assert check_flip({"gender": 1}, TASKS) == {"gender": 1.0}
    for bad in ({"age": 0.8}, {"race": 0.8}, {"gender": 0.0}, {"gender": 1.5}, {"gender": True}, {}, "yes", None):
        with pytest.raises(UsageError):
            check_flip(bad, TASKS)


def test_flip_words():
    assert flip_words(False) == "" and "flip" in flip_words(True)
    assert "gender < 0.8" in flip_words({"gender": 0.8})


def test_gated_flip_on_a_real_model_matches_one_of_the_two_paths(tiny_checkpoint):
    """The Predictor and the torch evaluation path agree, face by face, with either the plain or the full-flip
    outputs, and a per-call tta_flip=True keeps the predictor's thresholds."""
    from faceattr.data.dataset import TensorDataset
    from faceattr.models.checkpoint import load_model
    from faceattr.runtime.predictor import Predictor
    from faceattr.training.inference import predict_outputs

    rng = np.random.default_rng(0)
    chips = rng.integers(0, 256, (6, 64, 64, 3), dtype=np.uint8)

    def gender(pred, flip=None):
        return np.array(
            [[f["gender"].probabilities[c] for c in ("male", "female")] for f in pred.predict_chips(chips, flip)]
        )

    probs = {"none": gender(Predictor.from_checkpoint(tiny_checkpoint))}
    conf = np.sort(probs["none"].max(1))
    thr = float(conf[2] + conf[3]) / 2  # half the faces below, half above
    for name, flip in (("full", True), ("all", {"gender": 1.0}), ("gated", {"gender": thr})):
        probs[name] = gender(Predictor.from_checkpoint(tiny_checkpoint, tta_flip=flip))
    np.testing.assert_allclose(probs["all"], probs["full"], atol=1e-5)  # threshold 1: every face is uncertain
    sure = probs["none"].max(1) >= thr
    assert sure.sum() == 3
    np.testing.assert_allclose(probs["gated"][sure], probs["none"][sure], atol=1e-6)
    np.testing.assert_allclose(probs["gated"][~sure], probs["full"][~sure], atol=1e-5)
    gated = Predictor.from_checkpoint(tiny_checkpoint, tta_flip={"gender": thr})
    assert gated.predict_chips(chips, tta_flip=False)[0]["gender"].probabilities == pytest.approx(
        dict(zip(("male", "female"), probs["none"][0]))
    )
    np.testing.assert_allclose(gender(gated, True), probs["gated"], atol=1e-6)
    # the torch evaluation path (faceattr evaluate of a checkpoint) gates the same way
    model, meta = load_model(tiny_checkpoint)
    ds = TensorDataset(chips, np.zeros((6, 0), np.int64), ())
    run = {
        f: predict_outputs(model, ds, 4, meta.mean, meta.std, f, meta.tasks, meta.calibration) for f in (False, True)
    }
    g = predict_outputs(model, ds, 4, meta.mean, meta.std, {"gender": thr}, meta.tasks, meta.calibration)
    for k in g:
        np.testing.assert_allclose(g[k][sure], run[False][k][sure], atol=1e-5)
        np.testing.assert_allclose(g[k][~sure], run[True][k][~sure], atol=1e-5)
