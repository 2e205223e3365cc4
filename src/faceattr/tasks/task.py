"""Task declarations: what a model predicts, declared rather than hard-coded.

A task is either *ordinal* (ordered levels, e.g. ages 1..116 or the nine FairFace age groups) or *nominal*
(unordered classes, e.g. gender or race). Labels are stored as integer indices into ``levels``/``classes``;
``MISSING`` (-1) marks a label that is not known for a sample, so one dataset may label only some tasks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from faceattr.tasks.labels import MISSING  # noqa: F401  (re-exported: the datasets and metrics import it here)

TaskKind = Literal["ordinal", "nominal"]


@dataclass(frozen=True)
class Task:
    """One attribute to estimate.

    ``levels`` are the ordered values of an ordinal task (numbers for exact ages, strings for groups);
    ``classes`` are the names of a nominal task's classes. ``values`` gives the numeric value of each ordinal
    level, used to decode an expected value (e.g. the midpoint of an age group), and defaults to the level
    itself when levels are numbers, else to the level index. ``groups`` declares the groups a numeric ordinal task
    is also reported in (e.g. FairFace's age groups for exact ages): ``(label, lowest value)`` pairs in increasing
    order; a grouped task's own levels are its groups.
    """

    name: str
    kind: TaskKind
    levels: tuple[Any, ...] = ()
    classes: tuple[str, ...] = ()
    values: tuple[float, ...] = ()
    groups: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in ("ordinal", "nominal"):
            raise ValueError(f"task {self.name!r}: kind must be 'ordinal' or 'nominal', got {self.kind!r}")
        if self.kind == "ordinal":
            if len(self.levels) < 2:
                raise ValueError(f"ordinal task {self.name!r} needs at least 2 levels")
            if self.classes:
                raise ValueError(f"ordinal task {self.name!r} takes levels, not classes")
            if not self.values:
                vals = (
                    tuple(float(v) for v in self.levels)
                    if all(isinstance(v, (int, float)) for v in self.levels)
                    else tuple(float(i) for i in range(len(self.levels)))
                )
                object.__setattr__(self, "values", vals)
            if len(self.values) != len(self.levels):
                raise ValueError(f"ordinal task {self.name!r}: {len(self.values)} values for {len(self.levels)} levels")
            if any(b <= a for a, b in zip(self.values, self.values[1:])):
                raise ValueError(f"ordinal task {self.name!r}: values must increase strictly")
        else:
            if len(self.classes) < 2:
                raise ValueError(f"nominal task {self.name!r} needs at least 2 classes")
            if self.levels:
                raise ValueError(f"nominal task {self.name!r} takes classes, not levels")
        if self.groups:
            if not self.is_numeric:
                raise ValueError(f"task {self.name!r}: only a numeric ordinal task declares groups")
            object.__setattr__(self, "groups", tuple((str(g), float(lo)) for g, lo in self.groups))
            if any(b[1] <= a[1] for a, b in zip(self.groups, self.groups[1:])):
                raise ValueError(f"task {self.name!r}: group bounds must increase strictly")
        names = self.labels
        if len(set(map(str, names))) != len(names):
            raise ValueError(f"task {self.name!r}: duplicate levels/classes")

    @property
    def labels(self) -> tuple[Any, ...]:
        return self.levels if self.kind == "ordinal" else self.classes

    @property
    def is_numeric(self) -> bool:
        """An ordinal task whose levels are numbers (exact ages): it has an MAE, CS@k and value intervals."""
        return self.kind == "ordinal" and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in self.levels
        )

    @property
    def group_labels(self) -> tuple[str, ...]:
        """The groups an ordinal task is reported in: its declared ``groups``, or a grouped task's own levels;
        none for a nominal task or a numeric one that declares none."""
        if self.kind != "ordinal":
            return ()
        if self.is_numeric:
            return tuple(g for g, _ in self.groups)
        return tuple(str(x) for x in self.levels)

    def group_of(self, value: float) -> int:
        """Index into :attr:`group_labels` of a numeric value rounded to a whole level (the last group whose lowest
        value it reaches)."""
        if not self.groups:
            raise ValueError(f"task {self.name!r} declares no groups")
        v = round(float(value))
        return max(0, sum(1 for _, lo in self.groups if v >= lo) - 1)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def num_outputs(self, formulation: str = "coral") -> int:
        """Outputs the head emits: K class logits for a nominal task; for an ordinal one, what its formulation
        needs (:mod:`faceattr.tasks.formulations`: K-1 threshold logits for CORAL/OR-CNN/CORN, K for softmax, 1 for
        regression)."""
        if self.kind == "nominal":
            return self.num_classes
        from faceattr.tasks.formulations import get_formulation

        return get_formulation(formulation).num_outputs(self.num_classes)

    def index(self, label: Any) -> int:
        """Index of ``label`` (compared as strings so '25' and 25 match); ``MISSING`` for None/empty."""
        if label is None or (isinstance(label, float) and label != label) or label == "":
            return MISSING
        key = str(label)
        for i, lv in enumerate(self.labels):
            if str(lv) == key:
                return i
        raise KeyError(f"task {self.name!r}: unknown label {label!r}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["groups"] = [list(g) for g in self.groups]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Task":
        levels = tuple(d.get("levels") or ())
        groups = d.get("groups")
        if groups is None and d["kind"] == "ordinal" and levels and all(isinstance(v, (int, float)) for v in levels):
            # metadata written before tasks declared their groups reported exact ages in FairFace's age groups
            groups = FAIRFACE_AGE_GROUP_BOUNDS
        return cls(
            name=str(d["name"]),
            kind=d["kind"],
            levels=levels,
            classes=tuple(d.get("classes") or ()),
            values=tuple(float(v) for v in (d.get("values") or ())),
            groups=tuple((str(g), float(lo)) for g, lo in (groups or ())),
        )


def ordinal_task(
    name: str,
    levels: Sequence[Any],
    values: Sequence[float] | None = None,
    groups: Sequence[tuple[str, float]] = (),
) -> Task:
    return Task(name=name, kind="ordinal", levels=tuple(levels), values=tuple(values or ()), groups=tuple(groups))


def nominal_task(name: str, classes: Sequence[str]) -> Task:
    return Task(name=name, kind="nominal", classes=tuple(classes))


# ---- the built-in task sets ------------------------------------------------------------------------------------
UTK_AGE_MIN, UTK_AGE_MAX = 1, 116
UTK_GENDERS = ("male", "female")
UTK_RACES = ("White", "Black", "Asian", "Indian", "Others")
FAIRFACE_AGE_GROUPS = ("0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "more than 70")
# Midpoints (years) of the FairFace groups, used to decode an expected age; the last group is open, 75 is a guess
# documented here rather than hidden.
FAIRFACE_AGE_MIDPOINTS = (1.0, 6.0, 14.5, 24.5, 34.5, 44.5, 54.5, 64.5, 75.0)
# FairFace's groups as (label, lowest age): how exact ages are also reported (the literature's groups)
FAIRFACE_AGE_GROUP_BOUNDS = tuple(zip(FAIRFACE_AGE_GROUPS, (0.0, 3.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0)))
FAIRFACE_GENDERS = ("Male", "Female")
FAIRFACE_RACES = ("White", "Black", "Latino_Hispanic", "East Asian", "Southeast Asian", "Indian", "Middle Eastern")


def utkface_tasks() -> tuple[Task, ...]:
    return (
        ordinal_task("age", range(UTK_AGE_MIN, UTK_AGE_MAX + 1), groups=FAIRFACE_AGE_GROUP_BOUNDS),
        nominal_task("gender", UTK_GENDERS),
        nominal_task("race", UTK_RACES),
    )


def fairface_tasks() -> tuple[Task, ...]:
    return (
        ordinal_task("age", FAIRFACE_AGE_GROUPS, FAIRFACE_AGE_MIDPOINTS),
        nominal_task("gender", FAIRFACE_GENDERS),
        nominal_task("race", FAIRFACE_RACES),
    )


def age_to_group(age: float, groups: Sequence[str] = FAIRFACE_AGE_GROUPS) -> int:
    """Index of the FairFace-style group ('a-b' or 'more than N') that contains ``age`` rounded to whole years."""
    age = round(float(age))
    for i, g in enumerate(groups):
        if g.startswith("more than"):
            return i
        lo, hi = (int(x) for x in g.split("-"))
        if age <= hi:
            return i
    return len(groups) - 1


def tasks_to_json(tasks: Sequence[Task]) -> list[dict[str, Any]]:
    return [t.to_dict() for t in tasks]


def tasks_from_json(items: Sequence[dict[str, Any]]) -> tuple[Task, ...]:
    return tuple(Task.from_dict(d) for d in items)


def task_from_spec(d: Any) -> Task:
    """A task declared in a config: ``{name: age, kind: ordinal, levels: [...], values: [...], groups: [{label: 0-17,
    from: 0}, ...]}`` or ``{name: g, kind: nominal, classes: [...]}`` (groups also as ``[label, from]`` pairs, as a
    saved config writes them). A malformed declaration raises ``ValueError`` naming the task."""
    if not isinstance(d, dict) or "name" not in d:
        raise ValueError(f"a declared task must be a mapping with a name, got {d!r}")
    name = d["name"]
    try:
        if d.get("kind") == "ordinal":
            groups = [(g["label"], g["from"]) if isinstance(g, dict) else (g[0], g[1]) for g in d.get("groups") or ()]
            return ordinal_task(name, d["levels"], d.get("values") or None, groups)
        if d.get("kind") == "nominal":
            return nominal_task(name, d["classes"])
    except KeyError as e:
        raise ValueError(f"task {name!r}: missing {e.args[0]!r}") from e
    except (TypeError, IndexError) as e:
        raise ValueError(f"task {name!r}: {e}") from e
    raise ValueError(f"task {name!r}: kind must be 'ordinal' or 'nominal', got {d.get('kind')!r}")
