"""`make demo` picks its node (tests/demo/__main__.py): the real one only when it is built,
never silently for a live model, and NODE=real/standin override; the reason is what the
demo's first lines print."""

from __future__ import annotations

import pytest

from tests.demo import __main__ as demo


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch) -> dict[str, str | None]:
    state: dict[str, str | None] = {"unsupported": None, "not_built": None, "helm": None}
    monkeypatch.setattr(demo, "unsupported", lambda: state["unsupported"])
    monkeypatch.setattr(demo, "not_built", lambda: state["not_built"])
    monkeypatch.setattr(demo, "_no_helm", lambda: state["helm"])
    return state


def test_auto_uses_the_real_node_when_everything_is_built(machine: dict[str, str | None]) -> None:
    assert demo.choose("auto", live=False) == ("real", "")


@pytest.mark.parametrize(
    ("what", "why"),
    [
        ("unsupported", "a real node needs root"),
        ("not_built", "not built yet: the image of this tree (make image)"),
        ("helm", "not fetched yet: helm (make tools-bin)"),
    ],
)
def test_auto_falls_back_to_the_standin_and_says_why(
    machine: dict[str, str | None], what: str, why: str
) -> None:
    machine[what] = why
    node, reason = demo.choose("auto", live=False)
    assert node == "standin"
    assert why in reason and "make demo NODE=real" in reason


def test_real_builds_what_is_missing_but_not_what_the_machine_lacks(
    machine: dict[str, str | None],
) -> None:
    machine["not_built"] = "not built yet: kubelet and kube-proxy (make node-bin)"
    assert demo.choose("real", live=False) == ("real", "")  # make demo NODE=real builds first
    machine["unsupported"] = "a real node needs root"
    with pytest.raises(SystemExit, match="a real node cannot run here: a real node needs root"):
        demo.choose("real", live=False)


def test_a_live_model_runs_on_the_standin(machine: dict[str, str | None]) -> None:
    node, reason = demo.choose("auto", live=True)
    assert node == "standin" and "reach nothing outside" in reason
    with pytest.raises(SystemExit, match="a live model runs with NODE=standin"):
        demo.choose("real", live=True)


def test_standin_is_never_the_real_node(machine: dict[str, str | None]) -> None:
    assert demo.choose("standin", live=False)[0] == "standin"
