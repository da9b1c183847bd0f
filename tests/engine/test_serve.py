"""engine.serve in a subprocess, driven by the OpenAI backend: same answers as in-process, truncation,
a dead server, a wrong key, unknown models, adapters loaded at run time, and the HTTP bounds."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from engine import Engine, GenerationSettings
from engine.backends.base import AdapterLoadError, BackendError
from engine.backends.openai import OpenAIBackend, served_adapter_name
from engine.registry import ModelSpec, ServerSpec, saved_prompt_format
from policies import Case, parse_case
from tests.conftest import tiny_cases
from tests.engine.serving import KEY_ENV, engine_server, free_port, thread_server

TOKEN = "test-token-0123456789"
SETTINGS = GenerationSettings(max_new_tokens=128)  # the grammar closes answers within 96 tokens of the end


@pytest.fixture(scope="module")
def server(tiny_ft_dir: Path) -> Iterator[str]:
    with engine_server(str(tiny_ft_dir), "--served-model-name", "tiny-base", "--allow-adapter-loading",
                       "--max-tokens-limit", "256", "--max-body-bytes", "200000", api_key=TOKEN) as url:
        yield url


@pytest.fixture(scope="module")
def local(tiny_ft_dir: Path) -> Engine:
    return Engine.load(str(tiny_ft_dir), settings=SETTINGS)


@pytest.fixture(scope="module")
def cases() -> list[Case]:
    return [parse_case(c) for c in tiny_cases()]


def served_spec(url: str, tiny_ft_dir: Path, **served: str) -> ModelSpec:
    """A registry entry with backend "openai" for the subprocess server (key from KEY_ENV)."""
    models = served or {"base": "tiny-base", "finetuned": "finetuned"}
    server = ServerSpec(base_url=url, served_models=models, api_key_env=KEY_ENV, timeout_s=60, max_retries=1)
    adapters = {"finetuned": str(tiny_ft_dir)} if "finetuned" in models else {}
    # Named like the local engine of the adapter dir names its versions: base "base", adapter "ft".
    return ModelSpec(name="served-tiny", base="base", adapters=adapters, version=tiny_ft_dir.name,
                     prompt_format=saved_prompt_format(tiny_ft_dir), server=server)


@pytest.fixture
def served(server: str, tiny_ft_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Engine:
    monkeypatch.setenv(KEY_ENV, TOKEN)
    return Engine.load(served_spec(server, tiny_ft_dir), settings=SETTINGS)


def test_served_answers_are_the_local_ones(served: Engine, local: Engine, cases: list[Case]) -> None:
    assert served.variants == ["base", "finetuned"] and served.backend_name == "openai"
    for variant in ("base", "finetuned"):
        remote = served.decide_many(cases[:6], variant, batch_size=6)
        here = local.decide_many(cases[:6], variant, batch_size=6)
        for r, h in zip(remote, here, strict=True):
            assert r.status != "invalid", r.error  # constrained: a schema-valid answer unless cut short
            assert (r.raw_text, r.status, r.decision) == (h.raw_text, h.status, h.decision)
            assert (r.input_tokens, r.output_tokens) == (h.input_tokens, h.output_tokens)
            assert r.model_version == h.model_version
    assert any(a.status == "ok" for a in served.decide_many(cases[:6], "finetuned", batch_size=6))


def test_max_tokens_cut_is_truncated(served: Engine, cases: list[Case]) -> None:
    answers = served.decide_many(cases[:2], "finetuned", settings=GenerationSettings(max_new_tokens=4))
    assert [(a.status, a.truncated, a.output_tokens) for a in answers] == [("truncated", True, 4)] * 2


def test_server_down_is_a_clear_error_in_bounded_time(cases: list[Case]) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    backend = OpenAIBackend(url, {"base": "tiny-base"}, timeout_s=2, max_retries=1)
    t0 = time.monotonic()
    with pytest.raises(BackendError, match="cannot connect") as err:
        backend.generate([backend.prompt(cases[0])], "base", True, SETTINGS)
    assert time.monotonic() - t0 < 15
    assert url in str(err.value) and "'tiny-base'" in str(err.value)
    spec = ModelSpec(name="down", base="x", server=ServerSpec(url, {"base": "tiny-base"}, max_retries=0))
    with pytest.raises(BackendError, match=url):
        Engine.load(spec)


def test_wrong_key_is_refused(server: str, tiny_ft_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "not-the-token")
    with pytest.raises(BackendError, match="refused the API key") as err:
        Engine.load(served_spec(server, tiny_ft_dir))
    assert err.value.status == 401 and server in str(err.value)


def test_unknown_model_names_what_is_served(server: str, tiny_ft_dir: Path, cases: list[Case],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, TOKEN)
    spec = served_spec(server, tiny_ft_dir, base="tiny-base", ghost="ft-v9")
    served = "does not serve 'ft-v9' .variant ghost.; it serves: finetuned, tiny-base"
    with pytest.raises(BackendError, match=served):
        Engine.load(spec)
    engine = Engine.load(spec, check=False)
    with pytest.raises(BackendError, match="404") as err:
        engine.decide(cases[0], variant="ghost")
    assert err.value.model == "ft-v9"


def test_adapters_load_and_swap_at_run_time(served: Engine, tiny_ft_dir: Path, tmp_path: Path,
                                            cases: list[Case]) -> None:
    served.add_adapter("ft-v2", str(tiny_ft_dir), version="ft-v2")
    assert "ft-v2" in served.variants and served.model_version("ft-v2").endswith("+ft-v2")
    first = served.decide(cases[0], variant="ft-v2")
    copy = shutil.copytree(tiny_ft_dir, tmp_path / "ft-v3")
    served.swap_adapter("ft-v2", str(copy), version="ft-v3")
    again = served.decide(cases[0], variant="ft-v2")
    assert again.raw_text == first.raw_text and again.model_version.endswith("+ft-v3")
    with pytest.raises(AdapterLoadError, match="adapter_config.json"):
        served.add_adapter("ft-v4", str(tmp_path / "nothing"))


def test_a_refused_swap_leaves_the_variant_serving_as_before(served: Engine, tmp_path: Path,
                                                              cases: list[Case]) -> None:
    before = served.decide(cases[0])
    version = served.model_version("finetuned")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AdapterLoadError, match="adapter_config.json"):
        served.swap_adapter("finetuned", str(tmp_path / "empty"), version="ft-v9")
    assert served.model_version("finetuned") == version  # nothing was unloaded first
    assert served.decide(cases[0]).raw_text == before.raw_text


def test_a_swapped_adapter_has_a_model_name_of_its_own_that_other_consoles_reuse(
        served: Engine, server: str, tiny_ft_dir: Path, tmp_path: Path, cases: list[Case]) -> None:
    copy = str(shutil.copytree(tiny_ft_dir, tmp_path / "ft-v5"))
    first = served.decide(cases[0]).raw_text
    served.swap_adapter("finetuned", copy, version="ft-v5")
    name = served_adapter_name("ft-v5", copy)
    assert name.startswith("ft-v5-") and served.backend.served_models["finetuned"] == name
    assert served.decide(cases[0]).raw_text == first and served.model_version("finetuned").endswith("+ft-v5")
    listed = httpx.get(f"{server}/models", headers={"Authorization": f"Bearer {TOKEN}"}).json()["data"]
    assert {"finetuned", name} <= {m["id"] for m in listed}  # the server's own adapter stays for others
    # A second console on the same server finds it loaded (a second load would be refused: 400).
    other = Engine.load(served_spec(server, tiny_ft_dir), settings=SETTINGS)
    other.swap_adapter("finetuned", copy, version="ft-v5")
    assert other.model_version("finetuned").endswith("+ft-v5")
    # The same version from another dir (another store's ft-v5) is another model.
    assert served_adapter_name("ft-v5", str(tiny_ft_dir)) != name


def test_http_bounds_answer_in_openai_shape(server: str) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    chat = {"model": "finetuned", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}

    def post(body: object, headers: dict[str, str] = auth) -> httpx.Response:
        return httpx.post(f"{server}/chat/completions", json=body, headers=headers, timeout=60)

    assert httpx.get(f"{server}/models", timeout=10).status_code == 401
    cases = {
        "no key": (post(chat, {}), 401, None),
        "max_tokens": (post({**chat, "max_tokens": 100_000}), 400, "max_tokens"),
        "unknown model": (post({**chat, "model": "nope"}), 404, "model"),
        "stream": (post({**chat, "stream": True}), 400, "stream"),
        "no messages": (post({**chat, "messages": []}), 400, "messages"),
        "bad schema": (post({**chat, "response_format": {"type": "json_schema", "json_schema": {
            "name": "x", "schema": {"type": "object", "properties": {"a": {"type": "nonsense"}}}}}}),
            400, "response_format.json_schema"),
        "body size": (post({**chat, "messages": [{"role": "user", "content": "x" * 90_000}] * 3}), 413, None),
    }
    for name, (resp, status, param) in cases.items():
        assert resp.status_code == status, (name, resp.text)
        error = resp.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"], name
        assert error["param"] == param, (name, error)
    ok = post(chat).json()
    assert ok["choices"][0]["finish_reason"] in ("stop", "length") and ok["usage"]["completion_tokens"] <= 8
    assert ok["usage"]["total_tokens"] == ok["usage"]["prompt_tokens"] + ok["usage"]["completion_tokens"]


@pytest.fixture
def in_thread_server(local: Engine) -> Iterator[tuple[str, object]]:
    """create_app on the in-process engine, served by uvicorn in a thread (no adapter loading)."""
    with thread_server(local, served_model_name="tiny-base") as served:
        yield served


def test_server_without_run_time_loading_says_what_to_restart(in_thread_server: tuple[str, object],
                                                                tiny_ft_dir: Path) -> None:
    url, _app = in_thread_server
    backend = OpenAIBackend(url, {"base": "tiny-base", "finetuned": "finetuned"})
    with pytest.raises(AdapterLoadError, match="restart it with the adapter on its command line"):
        backend.add_adapter("ft-v2", str(tiny_ft_dir))


def test_concurrent_requests_share_batches(in_thread_server: tuple[str, object], cases: list[Case]) -> None:
    url, app = in_thread_server
    backend = OpenAIBackend(url, {"base": "tiny-base", "finetuned": "finetuned"}, max_concurrency=6)
    batcher = app.state.batcher  # type: ignore[attr-defined]
    before = batcher.batches
    gens = backend.generate([backend.prompt(c) for c in cases[:6]], "finetuned", True,
                            GenerationSettings(max_new_tokens=8))
    assert len(gens) == 6 and all(g.output_tokens <= 8 for g in gens)
    assert batcher.batches - before < 6  # at least two requests ran as one batch
