"""Deterministic Job names and action hashes."""

from __future__ import annotations

import re

import pytest

from agentrun.api.naming import action_hash, canonical_json, job_name, output_name

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
UID = "6f1c2a9e-0000-4000-8000-000000000001"


def assert_label(name: str) -> None:
    assert len(name) <= 63, name
    assert DNS1123_LABEL.match(name), name


@pytest.mark.parametrize("step", [1, 2, 20, 999, 1000])
@pytest.mark.parametrize(
    "run_name",
    [
        "r",
        "web-oom",
        "a" * 63,
        "x" * 253,  # the longest metadata.name
        "a" * 39 + "-" + "b" * 50,  # the cut lands right after a dash
        "a" * 38 + "--" + "b" * 50,
    ],
)
def test_job_name_is_a_dns1123_label_of_at_most_63_chars(run_name: str, step: int) -> None:
    assert_label(job_name(run_name, UID, step))


def test_job_name_is_a_label_even_for_a_dotted_run_name() -> None:
    assert_label(job_name("alert.web-oom.prod", UID, 1))


def test_job_name_is_deterministic_and_readable() -> None:
    name = job_name("web-oom", UID, 3)
    assert name == job_name("web-oom", UID, 3)
    assert name.startswith("web-oom-s3-")


def test_job_name_differs_per_uid_and_step() -> None:
    names = {
        job_name("web-oom", uid, step)
        for uid in (UID, UID[:-1] + "2", "other")
        for step in (1, 2, 3)
    }
    assert len(names) == 9


def test_job_name_differs_for_long_names_sharing_a_prefix_on_other_runs() -> None:
    # Two runs whose names agree in their first 40 characters must still not collide.
    a = job_name("p" * 40 + "-first", "uid-a", 1)
    b = job_name("p" * 40 + "-second", "uid-b", 1)
    assert a != b


def test_output_name_is_derived_from_the_job() -> None:
    job = job_name("x" * 253, UID, 1000)
    assert output_name(job) == f"{job}-out"
    assert len(output_name(job)) <= 63


def test_action_hash_is_sha256_hex_and_canonical_over_argument_order() -> None:
    h = action_hash(UID, 1, "rollout-restart", {"name": "web", "namespace": "prod"})
    assert re.fullmatch(r"[0-9a-f]{64}", h)
    assert h == action_hash(UID, 1, "rollout-restart", {"namespace": "prod", "name": "web"})


@pytest.mark.parametrize(
    "other",
    [
        ("other-uid", 1, "rollout-restart", {"name": "web"}),  # another run
        (UID, 2, "rollout-restart", {"name": "web"}),  # a later step
        (UID, 1, "scale", {"name": "web"}),  # another tool
        (UID, 1, "rollout-restart", {"name": "api"}),  # other arguments
        (UID, 1, "rollout-restart", {"name": "web", "extra": None}),
    ],
)
def test_action_hash_binds_run_step_tool_and_arguments(other: tuple) -> None:  # type: ignore[type-arg]
    assert action_hash(UID, 1, "rollout-restart", {"name": "web"}) != action_hash(*other)


def test_canonical_json_is_compact_sorted_and_unicode() -> None:
    assert canonical_json({"b": 1, "a": ["é", {"d": 2, "c": 3}]}) == (
        '{"a":["é",{"c":3,"d":2}],"b":1}'
    )
