"""Issue 20: the console's champion on a served model (``backend = "openai"``), against real servers.

A console serving a model through an OpenAI-compatible server (here ``python -m engine.serve`` in a
subprocess) serves the store's champion: promoting or rolling back asks the server to load the adapter
at run time under a name of its own, a second console on the same server finds it loaded, and a
champion the server cannot load is refused by name with nothing committed and the old adapter still
answering. On start, a champion that cannot be served leaves the console running on the adapter it
loaded, and the printed line says so.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.services.versions import ChampionNotServed, change_champion, serve_champion, start_serving
from db.store import Store, open_store
from db.users import create_user
from db.versions import champion, ensure_bundled_version, register_version
from engine import Engine, GenerationSettings
from engine.registry import ModelSpec, ServerSpec, saved_prompt_format
from policies import Case, parse_case
from tests.conftest import tiny_cases
from tests.engine.serving import KEY_ENV, engine_server, thread_server

TOKEN = "served-champion-token-0123"
SETTINGS = GenerationSettings(max_new_tokens=128)


def served_spec(url: str, tiny_ft_dir: Path) -> ModelSpec:
    server = ServerSpec(base_url=url, served_models={"base": "tiny-base", "finetuned": "finetuned"},
                        api_key_env=KEY_ENV, timeout_s=60, max_retries=1)
    return ModelSpec(name="served-tiny", base="base", adapters={"finetuned": str(tiny_ft_dir)},
                     version=tiny_ft_dir.name, prompt_format=saved_prompt_format(tiny_ft_dir), server=server)


@pytest.fixture(scope="module")
def server(tiny_ft_dir: Path) -> Iterator[str]:
    with engine_server(str(tiny_ft_dir), "--served-model-name", "tiny-base", "--allow-adapter-loading",
                       "--max-tokens-limit", "256", api_key=TOKEN) as url:
        yield url


@pytest.fixture
def case() -> Case:
    return parse_case(tiny_cases()[0])


@pytest.fixture
def store(tmp_path: Path, tiny_ft_dir: Path) -> Store:
    """A console's store: the bundled adapter is ft-v1 (recorded on start); ft-v2 is a copy of its
    weights in a dir of its own; ft-v3's dir holds no adapter."""
    store = open_store(tmp_path / "served.db")
    v2 = shutil.copytree(tiny_ft_dir, tmp_path / "runs" / "ft-v2")
    (tmp_path / "runs" / "ft-v3").mkdir()
    with store.session() as s:
        create_user(s, "olga", "ops", "ops-password-1")
        ensure_bundled_version(s, tiny_ft_dir, "base")  # as the console's first start does
        register_version(s, "olga", "ft-v2", v2, "base")
        register_version(s, "olga", "ft-v3", tmp_path / "runs" / "ft-v3", "base")
    return store


def test_promoting_on_a_served_model_loads_the_champion_at_run_time(
        server: str, store: Store, tiny_ft_dir: Path, case: Case, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, TOKEN)
    engine = Engine.load(served_spec(server, tiny_ft_dir), settings=SETTINGS)
    assert start_serving(engine, store) == "Serving champion ft-v1 as finetuned"
    bundled = engine.decide(case)

    # ft-v2 (rollback: any earlier version, no gate) is loaded by the server and answers.
    assert change_champion(store, engine, "olga", "ft-v2", "rollback") == "ft-v2"
    assert engine.model_version("finetuned").endswith("+ft-v2")
    assert engine.decide(case).raw_text == bundled.raw_text  # the same weights, another dir

    # ft-v3 has no adapter: refused by name, nothing committed, ft-v2 still answers.
    with pytest.raises(ChampionNotServed, match="champion ft-v3: .*adapter_config.json"):
        change_champion(store, engine, "olga", "ft-v3", "rollback")
    with store.session() as s:
        assert champion(s).name == "ft-v2"  # type: ignore[union-attr]
    assert engine.model_version("finetuned").endswith("+ft-v2")
    assert engine.decide(case).raw_text == bundled.raw_text

    # A second console on the same store and server serves the champion the first one loaded.
    other = Engine.load(served_spec(server, tiny_ft_dir), settings=SETTINGS)
    assert other.model_version("finetuned") == bundled.model_version  # what the server's command line serves
    assert start_serving(other, store) == "Serving champion ft-v2 as finetuned"
    assert other.model_version("finetuned") == engine.model_version("finetuned")


def test_a_server_without_run_time_loading_leaves_the_console_on_what_it_serves(
        store: Store, tiny_ft_dir: Path, case: Case, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    local = Engine.load(str(tiny_ft_dir), settings=SETTINGS)
    with thread_server(local, served_model_name="tiny-base") as (url, _app):
        engine = Engine.load(served_spec(url, tiny_ft_dir), settings=SETTINGS)
        assert start_serving(engine, store) == "Serving champion ft-v1 as finetuned"
        version = engine.model_version("finetuned")
        with pytest.raises(ChampionNotServed, match="restart it with the adapter on its command line"):
            change_champion(store, engine, "olga", "ft-v2", "rollback")
        with store.session() as s:
            assert champion(s).name == "ft-v1"  # type: ignore[union-attr]

        # A champion made elsewhere (another console, on a server that loads adapters): this console
        # starts anyway, on the adapter its server serves, and says so.
        with store.session() as s:
            from app.services.versions import rollback

            rollback(s, "olga", "ft-v2")
        line = start_serving(engine, store)
        assert line is not None and line.startswith("Warning: champion ft-v2: ")
        assert f"serves {version} as finetuned instead" in line and "Traceback" not in line
        assert engine.model_version("finetuned") == version and engine.decide(case).status != "error"


def test_a_local_champion_without_its_dir_is_refused_not_silently_skipped(
        store: Store, tiny_ft_dir: Path) -> None:
    engine = Engine.load(str(tiny_ft_dir), settings=SETTINGS)
    assert start_serving(engine, store) == "Serving champion ft-v1 as finetuned"
    with pytest.raises(ChampionNotServed, match="champion ft-v3: no adapter at .*ft-v3"):
        change_champion(store, engine, "olga", "ft-v3", "rollback")
    with store.session() as s:
        assert champion(s).name == "ft-v1"  # type: ignore[union-attr]
        assert serve_champion(engine, s) == "ft-v1"
