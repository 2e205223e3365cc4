"""Ordinal formulations: how an ordinal task (K ordered levels, e.g. ages 1..116) is cast as a head, a loss,
a distribution over the levels and a Grad-CAM target -- one object per formulation, looked up by name.

Adding a formulation is one new subclass with ``@register_formulation`` (plus its tests); the head, the training
loss, the numpy decoder used by the torch and ONNX paths, Grad-CAM and the uncertainty weighting all ask the
object. Torch is imported only inside the methods that need it, so the numpy decoding path
(:meth:`Formulation.level_probs`) works on an onnxruntime-only install.

Registered:

- ``coral`` -- K-1 binary "y > k" outputs sharing one weight vector with K-1 biases (Cao, Mirjalili & Raschka,
  "Rank consistent ordinal regression for neural networks", Pattern Recognition Letters 2020);
- ``binary`` -- K-1 independent binary classifiers (Niu et al., "Ordinal regression with multiple output CNN for
  age estimation", CVPR 2016, OR-CNN);
- ``corn`` -- K-1 *conditional* binary outputs, P(y > k | y > k-1), trained on the conditional subsets and
  chained by the product rule, so P(y > k) is rank-consistent by construction while the weights are not shared
  (Shi, Cao & Raschka, "Deep neural networks for rank-consistent ordinal regression based on conditional
  probabilities", Pattern Analysis and Applications 2023, arXiv 2111.08851);
- ``softmax`` -- K-way softmax decoded by its expected value (the reference of label-distribution methods);
- ``regression`` -- one output, the level index, trained with L1 (a point estimate, no distribution).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np

from faceattr.registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn


def sigmoid_np(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def softmax_np(x: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Softmax over the last axis of ``x / temperature`` (the temperature of :mod:`faceattr.tasks.calibration`)."""
    z = np.asarray(x, np.float64) / float(temperature)
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _from_exceedance(gt: np.ndarray) -> np.ndarray:
    """N x K level probabilities from N x (K-1) non-increasing P(y > k)."""
    n = gt.shape[0]
    upper = np.concatenate([np.ones((n, 1)), gt], -1)
    lower = np.concatenate([gt, np.zeros((n, 1))], -1)
    return np.clip(upper - lower, 0, None)


class Formulation:
    """Base class. ``regression_loss`` marks an L1/L2-type loss (the uncertainty weighting scales it by 1/2);
    ``point_estimate`` marks a head that yields one value and no distribution (its interval is the point)."""

    name: ClassVar[str] = ""
    regression_loss: ClassVar[bool] = False
    point_estimate: ClassVar[bool] = False
    threshold_logits: ClassVar[bool] = False  # outputs are K-1 logits of "y > k" (a Grad-CAM threshold target)

    def num_outputs(self, num_levels: int) -> int:
        return num_levels - 1

    def make_layer(self, in_features: int, num_levels: int) -> "nn.Module":
        from torch import nn

        return nn.Linear(in_features, self.num_outputs(num_levels))

    def loss(
        self, out: "torch.Tensor", labels: "torch.Tensor", upper: "torch.Tensor | None" = None
    ) -> "tuple[torch.Tensor, int]":
        raise NotImplementedError

    def level_probs(self, out: np.ndarray, num_levels: int) -> np.ndarray:
        """N x K probabilities of the levels (numpy: shared by the torch and ONNX paths)."""
        raise NotImplementedError

    def expected_value(self, out: "torch.Tensor", values: "torch.Tensor") -> "torch.Tensor":
        """Differentiable expected value per face (the Grad-CAM target of an ordinal task)."""
        raise NotImplementedError

    def check_outputs(self, out: np.ndarray, num_levels: int) -> np.ndarray:
        out = np.asarray(out, dtype=np.float64)
        if out.ndim != 2 or out.shape[-1] != self.num_outputs(num_levels):
            raise ValueError(
                f"{self.name}: expected N x {self.num_outputs(num_levels)} outputs for {num_levels} "
                f"levels, got shape {out.shape}"
            )
        return out


FORMULATIONS: Registry[Formulation] = Registry("ordinal formulation")


def register_formulation(cls: type[Formulation]) -> type[Formulation]:
    if not cls.name or cls.name in FORMULATIONS:
        raise ValueError(f"formulation name {cls.name!r} empty or taken")
    FORMULATIONS.register(cls.name, cls())
    return cls


def list_formulations() -> list[str]:
    return FORMULATIONS.names()


def get_formulation(name: str) -> Formulation:
    return FORMULATIONS.get(name)


@register_formulation
class Coral(Formulation):
    name = "coral"
    threshold_logits = True

    def make_layer(self, in_features: int, num_levels: int) -> "nn.Module":
        from faceattr.tasks.heads import CoralLayer

        return CoralLayer(in_features, num_levels)

    def loss(
        self, out: "torch.Tensor", labels: "torch.Tensor", upper: "torch.Tensor | None" = None
    ) -> "tuple[torch.Tensor, int]":
        from faceattr.tasks.ordinal import ordinal_binary_loss

        return ordinal_binary_loss(out, labels, upper)

    def level_probs(self, out: np.ndarray, num_levels: int) -> np.ndarray:
        out = self.check_outputs(out, num_levels)
        return _from_exceedance(np.minimum.accumulate(sigmoid_np(out), axis=-1))

    def expected_value(self, out: "torch.Tensor", values: "torch.Tensor") -> "torch.Tensor":
        import torch

        return values[0] + (torch.sigmoid(out) * (values[1:] - values[:-1])).sum(1)


@register_formulation
class Binary(Coral):
    """OR-CNN: the CORAL loss on independent classifiers; decoding makes P(y > k) non-increasing."""

    name = "binary"

    def make_layer(self, in_features: int, num_levels: int) -> "nn.Module":
        return Formulation.make_layer(self, in_features, num_levels)


@register_formulation
class Corn(Formulation):
    """CORN: output k is the logit of P(y > k | y > k-1); P(y > k) = prod_{j <= k} sigmoid(out_j)."""

    name = "corn"

    def loss(
        self, out: "torch.Tensor", labels: "torch.Tensor", upper: "torch.Tensor | None" = None
    ) -> "tuple[torch.Tensor, int]":
        from faceattr.tasks.ordinal import corn_loss

        return corn_loss(out, labels, upper)

    def level_probs(self, out: np.ndarray, num_levels: int) -> np.ndarray:
        out = self.check_outputs(out, num_levels)
        return _from_exceedance(np.cumprod(sigmoid_np(out), axis=-1))

    def expected_value(self, out: "torch.Tensor", values: "torch.Tensor") -> "torch.Tensor":
        import torch

        gt = torch.cumprod(torch.sigmoid(out), 1)
        return values[0] + (gt * (values[1:] - values[:-1])).sum(1)


@register_formulation
class Softmax(Formulation):
    name = "softmax"

    def num_outputs(self, num_levels: int) -> int:
        return num_levels

    def loss(
        self, out: "torch.Tensor", labels: "torch.Tensor", upper: "torch.Tensor | None" = None
    ) -> "tuple[torch.Tensor, int]":
        from faceattr.tasks.ordinal import interval_cross_entropy_loss

        return interval_cross_entropy_loss(out, labels, upper)

    def level_probs(self, out: np.ndarray, num_levels: int) -> np.ndarray:
        return softmax_np(self.check_outputs(out, num_levels))

    def expected_value(self, out: "torch.Tensor", values: "torch.Tensor") -> "torch.Tensor":
        import torch

        return (torch.softmax(out, 1) * values).sum(1)


@register_formulation
class Regression(Formulation):
    """One output, the level index (L1). Its 'distribution' splits the mass between the two nearest levels."""

    name = "regression"
    regression_loss = True
    point_estimate = True

    def num_outputs(self, num_levels: int) -> int:
        return 1

    def loss(
        self, out: "torch.Tensor", labels: "torch.Tensor", upper: "torch.Tensor | None" = None
    ) -> "tuple[torch.Tensor, int]":
        from faceattr.tasks.ordinal import l1_index_loss

        return l1_index_loss(out, labels, upper)

    def level_probs(self, out: np.ndarray, num_levels: int) -> np.ndarray:
        out = self.check_outputs(out, num_levels)
        idx = np.clip(out[:, 0], 0, num_levels - 1)
        lo = np.floor(idx).astype(int)
        hi = np.minimum(lo + 1, num_levels - 1)
        frac = idx - lo
        p = np.zeros((len(idx), num_levels))
        np.add.at(p, (np.arange(len(idx)), lo), 1 - frac)
        np.add.at(p, (np.arange(len(idx)), hi), frac)
        return p

    def expected_value(self, out: "torch.Tensor", values: "torch.Tensor") -> "torch.Tensor":
        return out[:, 0]
