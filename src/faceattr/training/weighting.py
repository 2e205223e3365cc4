"""Multi-task loss weighting. A weighting module returns (total loss, per-task weights); it never calls
``backward()``: the training loop does.

- ``uncertainty``: homoscedastic task uncertainty (Kendall, Gal & Cipolla, "Multi-task learning using uncertainty
  to weigh losses for scene geometry and semantics", CVPR 2018, eqs. 7 and 10). With one learned
  ``s_t = log sigma_t^2`` per task,

      L = sum_t  c_t * exp(-s_t) * L_t  +  s_t / 2,      c_t = 1 for classification-type losses (softmax
                                                         cross-entropy, the ordinal binary sub-problems),
                                                         c_t = 1/2 for regression losses (L1/L2),

  i.e. 1/sigma^2 * L_t + log sigma for a classification likelihood and 1/(2 sigma^2) * L_t + log sigma for a
  Gaussian one. The effective weight of task t is c_t * exp(-s_t).
- ``equal``: every weight 1.   ``fixed``: user-given weights.
- ``dwa``: Dynamic Weight Average (Liu, Johns & Davison, "End-to-end multi-task learning with attention",
  CVPR 2019, eq. 7): w_t = T * softmax_t(r_t / tau), r_t = L_t(e-1) / L_t(e-2), weights 1 for the first two epochs.
- ``gradnorm``: GradNorm (Chen, Badrinarayanan, Lee & Rabinovich, "GradNorm: gradient normalization for adaptive
  loss balancing in deep multitask networks", ICML 2018): learned weights w_t, renormalised to sum to T, are
  moved so that the gradient norms G_t = ||grad_W w_t L_t|| at the last shared layer W approach
  mean(G) * r_t^alpha, with r_t = (L_t / L_t(0)) / mean_t(L_t / L_t(0)) the relative inverse training rate
  (eq. 2 of the paper, alpha = 1.5). The network is trained on sum_t w_t L_t with w held fixed; the weights
  follow the gradient of L_grad = sum_t |G_t - target_t| alone, both from the one ``backward()``.
- ``rlw``: Random Loss Weighting (Lin et al., "Reasonable effectiveness of random weighting", TMLR 2022):
  w = T * softmax(z), z ~ N(0, I), drawn afresh every step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from faceattr.registry import Registry


class LossWeighting(nn.Module):
    """Base class: equal weights."""

    def __init__(self, task_names: Sequence[str]) -> None:
        super().__init__()
        self.task_names = tuple(task_names)

    def weights(self) -> dict[str, float]:
        return {t: 1.0 for t in self.task_names}

    def forward(self, losses: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        w = self.weights()
        total = sum(w[t] * losses[t] for t in self.task_names if t in losses)
        return total, w  # type: ignore[return-value]

    def end_epoch(self, epoch_losses: Mapping[str, float]) -> None:
        """Called with the epoch's mean task losses (used by DWA)."""

    def attach(self, model: nn.Module) -> None:
        """Called once with the network before training (GradNorm takes its last shared layer)."""


class EqualWeighting(LossWeighting):
    pass


class FixedWeighting(LossWeighting):
    def __init__(self, task_names: Sequence[str], weights: Mapping[str, float]) -> None:
        super().__init__(task_names)
        missing = set(self.task_names) - set(weights)
        if missing:
            raise ValueError(f"fixed weighting: no weight for tasks {sorted(missing)}")
        self._w = {t: float(weights[t]) for t in self.task_names}

    def weights(self) -> dict[str, float]:
        return dict(self._w)


class UncertaintyWeighting(LossWeighting):
    """Kendall et al. (2018) homoscedastic uncertainty; see the module docstring for the formula."""

    scale: torch.Tensor

    def __init__(self, task_names: Sequence[str], regression_tasks: Sequence[str] = (), init: float = 0.0) -> None:
        super().__init__(task_names)
        self.log_vars = nn.Parameter(torch.full((len(self.task_names),), float(init)))
        self.register_buffer(
            "scale", torch.tensor([0.5 if t in set(regression_tasks) else 1.0 for t in self.task_names])
        )

    def weights(self) -> dict[str, float]:
        w = (self.scale * torch.exp(-self.log_vars.detach())).tolist()
        return dict(zip(self.task_names, w))

    def forward(self, losses: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        total = self.log_vars.sum() * 0.0
        for i, t in enumerate(self.task_names):
            if t in losses:
                s = self.log_vars[i]
                total = total + self.scale[i] * torch.exp(-s) * losses[t] + 0.5 * s
        return total, self.weights()


class DWAWeighting(LossWeighting):
    def __init__(self, task_names: Sequence[str], temperature: float = 2.0) -> None:
        super().__init__(task_names)
        self.temperature = temperature
        self.history: list[dict[str, float]] = []
        self._w = {t: 1.0 for t in self.task_names}

    def weights(self) -> dict[str, float]:
        return dict(self._w)

    def end_epoch(self, epoch_losses: Mapping[str, float]) -> None:
        self.history.append({t: float(epoch_losses[t]) for t in self.task_names})
        if len(self.history) >= 2:
            prev, prev2 = self.history[-1], self.history[-2]
            r = [prev[t] / max(prev2[t], 1e-12) / self.temperature for t in self.task_names]
            m = max(r)
            e = [math.exp(x - m) for x in r]
            self._w = {t: len(e) * x / sum(e) for t, x in zip(self.task_names, e)}

    def get_extra_state(self) -> dict:
        return {"history": self.history, "w": self._w}

    def set_extra_state(self, state: dict) -> None:
        self.history = list(state.get("history", []))
        self._w = dict(state.get("w", self._w))


class RandomWeighting(LossWeighting):
    def __init__(self, task_names: Sequence[str], generator: torch.Generator | None = None) -> None:
        super().__init__(task_names)
        self.generator = generator
        self._w = {t: 1.0 for t in self.task_names}

    def weights(self) -> dict[str, float]:
        return dict(self._w)

    def forward(self, losses: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        if self.training:
            z = torch.randn(len(self.task_names), generator=self.generator)
            self._w = dict(zip(self.task_names, (len(self.task_names) * torch.softmax(z, 0)).tolist()))
        return super().forward(losses)


class GradNormWeighting(LossWeighting):
    """GradNorm (Chen et al. 2018); see the module docstring. Needs :meth:`attach` before training."""

    initial: torch.Tensor

    def __init__(self, task_names: Sequence[str], alpha: float = 1.5) -> None:
        super().__init__(task_names)
        self.alpha = float(alpha)
        self.w = nn.Parameter(torch.ones(len(self.task_names)))
        self.register_buffer("initial", torch.zeros(len(self.task_names)))
        self._shared: list[nn.Parameter] = []

    def attach(self, model: nn.Module) -> None:
        shared = getattr(model, "shared", None)
        if shared is None or not len(shared):
            raise ValueError("gradnorm needs a model with shared layers (model.shared)")
        weights = [p for p in shared[-1].parameters() if p.ndim > 1 and p.requires_grad]
        if not weights:
            raise ValueError("gradnorm: the last shared stage has no weight tensor")
        self._shared = [weights[-1]]

    def weights(self) -> dict[str, float]:
        return dict(zip(self.task_names, self.w.detach().tolist()))

    def forward(self, losses: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        with torch.no_grad():  # renormalise after the previous step: sum w = T, w > 0
            self.w.clamp_(min=1e-3)
            self.w.mul_(len(self.task_names) / self.w.sum())
        names = [t for t in self.task_names if t in losses]
        idx = [self.task_names.index(t) for t in names]
        w = self.w[idx]
        L = torch.stack([losses[t] for t in names])
        total = (w.detach() * L).sum()
        if not (self.training and self._shared and torch.is_grad_enabled() and len(names) > 1):
            return total, self.weights()
        if bool((self.initial[idx] == 0).any()):
            self.initial[idx] = torch.where(self.initial[idx] == 0, L.detach().float(), self.initial[idx])
        norms = []
        for t in names:
            g = torch.autograd.grad(losses[t], self._shared, retain_graph=True, allow_unused=True)[0]
            norms.append(torch.zeros((), device=L.device) if g is None else g.detach().float().norm())
        G = w * torch.stack(norms)
        ratio = L.detach().float() / self.initial[idx].clamp(min=1e-12)
        target = (G.mean() * (ratio / ratio.mean()) ** self.alpha).detach()
        l_grad = (G - target).abs().sum()
        # the network's gradient comes from `total`; the weights' from l_grad alone (value unchanged)
        return total + (l_grad - l_grad.detach()), self.weights()


WEIGHTINGS: Registry[Callable[..., LossWeighting]] = Registry("loss weighting")
WEIGHTINGS.register("uncertainty", lambda tasks, regression, fixed: UncertaintyWeighting(tasks, regression))
WEIGHTINGS.register("equal", lambda tasks, regression, fixed: EqualWeighting(tasks))
WEIGHTINGS.register("fixed", lambda tasks, regression, fixed: FixedWeighting(tasks, fixed or {}))
WEIGHTINGS.register("dwa", lambda tasks, regression, fixed: DWAWeighting(tasks))
WEIGHTINGS.register("gradnorm", lambda tasks, regression, fixed: GradNormWeighting(tasks))
WEIGHTINGS.register("rlw", lambda tasks, regression, fixed: RandomWeighting(tasks))


def create_weighting(
    name: str,
    task_names: Sequence[str],
    regression_tasks: Sequence[str] = (),
    fixed_weights: Mapping[str, float] | None = None,
) -> LossWeighting:
    return WEIGHTINGS.get(name)(task_names, regression_tasks, fixed_weights)
