"""db.shadow: a share of new cases also gets the challenger's answer, stored as variant challenger."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.services.answers import compare_new_case
from app.services.shadow import routed
from db.audit import audit_entries
from db.shadow import set_shadow_share, shadow_run
from db.store import open_store
from db.versions import register_version
from policies import parse_case
from tests.conftest import tiny_cases


def test_routing_is_stable_and_proportional() -> None:
    ids = [f"C-{i:06d}" for i in range(2000)]
    share = sum(routed(i, 0.25) for i in ids) / len(ids)
    assert 0.2 < share < 0.3
    assert [routed(i, 0.25) for i in ids] == [routed(i, 0.25) for i in ids]
    assert not any(routed(i, 0.0) for i in ids) and all(routed(i, 1.0) for i in ids)


def test_new_cases_get_a_challenger_answer(tmp_path: Path, tiny_base_dir: Path, tiny_ft_dir: Path) -> None:
    from engine import Engine

    store = open_store(tmp_path / "s.db")
    engine = Engine.load(str(tiny_ft_dir))
    with store.session() as s:
        register_version(s, "system", "ft-v2", tiny_ft_dir, str(tiny_base_dir))
        set_shadow_share(s, "olga", 1.0)
    pk, runs = compare_new_case(store, engine, parse_case(tiny_cases()[0]), "try", "olga")
    with store.session() as s:
        shadow = shadow_run(s, pk)
        assert shadow is not None and shadow.variant == "challenger"
        assert shadow.model_version.endswith("ft-v2") and set(runs) == {"base", "finetuned"}
        assert [e.action for e in audit_entries(s, action="set_shadow_share")] == ["set_shadow_share"]
    with store.session() as s, pytest.raises(ValueError):
        set_shadow_share(s, "olga", 1.5)


def test_a_challenger_that_cannot_load_does_not_fail_the_case(tmp_path: Path, tiny_base_dir: Path,
                                                              tiny_ft_dir: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    from engine import Engine

    store = open_store(tmp_path / "s.db")
    engine = Engine.load(str(tiny_ft_dir))
    (tmp_path / "ft-v2").mkdir()  # its weights were deleted
    with store.session() as s:
        register_version(s, "system", "ft-v2", tmp_path / "ft-v2", str(tiny_base_dir))
        set_shadow_share(s, "olga", 1.0)
    with caplog.at_level("WARNING", logger="app.services.shadow"):
        pk, runs = compare_new_case(store, engine, parse_case(tiny_cases()[0]), "try", "olga")
    assert set(runs) == {"base", "finetuned"} and runs["finetuned"].model_version
    with store.session() as s:
        assert shadow_run(s, pk) is None
    assert [r.getMessage().split(":")[0:2] for r in caplog.records] == [
        ["shadow answers", " challenger ft-v2 cannot be loaded"]]
