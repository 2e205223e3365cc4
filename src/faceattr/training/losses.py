"""The training losses: per-task losses (:mod:`faceattr.tasks`) and the loss weightings."""

from faceattr.tasks.kinds import task_loss
from faceattr.tasks.ordinal import (
    cross_entropy_loss,
    interval_cross_entropy_loss,
    l1_index_loss,
    levels_from_labels,
    ordinal_binary_loss,
)
from faceattr.training.weighting import WEIGHTINGS, LossWeighting, create_weighting

__all__ = [
    "cross_entropy_loss",
    "interval_cross_entropy_loss",
    "l1_index_loss",
    "levels_from_labels",
    "ordinal_binary_loss",
    "task_loss",
    "WEIGHTINGS",
    "LossWeighting",
    "create_weighting",
]
