import pytest

from faceattr.tasks.task import (
    FAIRFACE_AGE_GROUPS,
    MISSING,
    Task,
    age_to_group,
    fairface_tasks,
    nominal_task,
    ordinal_task,
    tasks_from_json,
    tasks_to_json,
    utkface_tasks,
)


def test_builtin_task_sets():
    age, gender, race = utkface_tasks()
    assert (
        age.kind == "ordinal"
        and age.num_classes == 116
        and age.num_outputs() == 115
        and age.num_outputs("softmax") == 116
        and age.num_outputs("regression") == 1
    )
    assert age.values[0] == 1.0 and age.values[-1] == 116.0
    assert gender.num_outputs() == 2 and race.num_classes == 5
    fage, _, frace = fairface_tasks()
    assert fage.num_outputs("corn") == 8 and frace.num_classes == 7
    assert fage.values[3] == 24.5


def test_index_and_missing():
    t = ordinal_task("age", FAIRFACE_AGE_GROUPS)
    assert t.index("3-9") == 1 and t.index("") == MISSING and t.index(None) == MISSING
    with pytest.raises(KeyError):
        t.index("100-110")
    n = nominal_task("g", ["m", "f"])
    assert n.index("f") == 1


def test_invalid_declarations():
    with pytest.raises(ValueError):
        Task("x", "ordinal", levels=(1,))
    with pytest.raises(ValueError):
        Task("x", "nominal", classes=("a", "a"))
    with pytest.raises(ValueError):
        Task("x", "weird", classes=("a", "b"))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ordinal_task("x", ["a", "b"], values=[2.0, 1.0])


def test_json_round_trip():
    tasks = fairface_tasks()
    assert tasks_from_json(tasks_to_json(tasks)) == tasks


@pytest.mark.parametrize(
    "age,group",
    [
        (0, "0-2"),
        (2, "0-2"),
        (3, "3-9"),
        (9.4, "3-9"),
        (9.6, "10-19"),
        (69, "60-69"),
        (70, "more than 70"),
        (116, "more than 70"),
    ],
)
def test_age_to_group(age, group):
    assert FAIRFACE_AGE_GROUPS[age_to_group(age)] == group


def test_groups_are_declared_by_the_task_not_assumed():
    import numpy as np

    from faceattr.tasks.metrics import compute_metrics
    from faceattr.tasks.task import FAIRFACE_AGE_GROUPS, Task, ordinal_task, utkface_tasks

    age = utkface_tasks()[0]
    assert age.group_labels == FAIRFACE_AGE_GROUPS and age.group_of(2.4) == 0 and age.group_of(75) == 8
    plain = ordinal_task("score", range(0, 11))  # a numeric task that declares no groups
    assert plain.group_labels == ()
    m = compute_metrics([plain], {"score": {"value": np.array([1.0, 5.0])}}, {"score": np.array([1, 7])})["overall"]
    assert m["score"]["mae"] == 1.0 and "group_exact" not in m["score"]
    kids = ordinal_task("age", range(0, 18), groups=[("infant", 0), ("child", 2), ("teen", 13)])
    assert kids.group_labels == ("infant", "child", "teen") and kids.group_of(12.6) == 2
    assert Task.from_dict(kids.to_dict()) == kids
    # metadata written before tasks declared groups: exact ages were reported in FairFace's groups, and still are
    old = {"name": "age", "kind": "ordinal", "levels": list(range(1, 117)), "classes": [], "values": []}
    assert Task.from_dict(old).group_labels == FAIRFACE_AGE_GROUPS
    import pytest

    with pytest.raises(ValueError, match="increase"):
        ordinal_task("age", range(0, 18), groups=[("a", 5), ("b", 5)])
