from faceattr.loss.ordinal import (
    cross_entropy_loss,
    interval_cross_entropy_loss,
    l1_index_loss,
    levels_from_labels,
    ordinal_binary_loss,
    task_loss,
)
from faceattr.loss.weighting import WEIGHTINGS, LossWeighting, create_weighting

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
