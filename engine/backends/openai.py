"""The remote backend: an OpenAI-compatible server (vLLM, or our own ``python -m engine.serve``).

Each variant is a model name on the server (vLLM serves the base under ``--served-model-name`` and
each LoRA adapter under its ``--lora-modules`` name). A case becomes chat messages built by the
same :func:`policies.prompt.build_messages` the local models' prompts are rendered from; the server
applies the model's chat template. Constrained answers ask for ``response_format`` = the answer's
JSON schema (strict). A batch is sent as concurrent requests through a bounded thread pool; the
client's own timeout and retries (exponential backoff on connection errors, 408/409/429 and 5xx)
bound every request, so a dead server ends in :class:`BackendError`, never a hang.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from engine.backends.base import (
    BASE_VARIANT,
    AdapterLoadError,
    BackendError,
    Generation,
    GenerationSettings,
    UnknownVariant,
)
from policies import Case, answer_json_schema
from policies.prompt import PromptFormat, build_messages

Messages = list[dict[str, str]]
TIMEOUT_S = 120.0  # per request, seconds: a long constrained answer on a busy GPU server
CONNECT_TIMEOUT_S = 5.0  # seconds to open a connection: a dead host fails fast
MAX_RETRIES = 2  # the openai client's retries, with exponential backoff (0.5 s, 1 s, ... capped at 8 s)
MAX_CONCURRENCY = 8  # requests in flight per backend; a batch larger than this queues in the pool


def answer_response_format() -> dict[str, Any]:
    """The ``response_format`` that asks for a strict answer object (vLLM: structured outputs)."""
    return {"type": "json_schema",
            "json_schema": {"name": "answer", "schema": answer_json_schema(), "strict": True}}


class OpenAIBackend:
    """Variants served by an OpenAI-compatible server at ``base_url`` (ending in ``/v1``).

    In: ``served_models``, variant -> the server's model name (``base`` first); ``api_key``, the bearer
    token (None: the server needs none); the prompt format the served weights were trained with;
    versions as :class:`~engine.backends.local.LocalPeftBackend` names them. ``client`` replaces the
    ``openai.OpenAI`` client (tests).
    """

    def __init__(self, base_url: str, served_models: dict[str, str],
                 prompt_format: PromptFormat | None = None, api_key: str | None = None,
                 base_version: str = "base", adapter_versions: dict[str, str] | None = None,
                 timeout_s: float = TIMEOUT_S,
                 max_retries: int = MAX_RETRIES, max_concurrency: int = MAX_CONCURRENCY, client: Any = None):
        from openai import OpenAI, Timeout

        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        self.base_url = base_url.rstrip("/")
        self.served_models = dict(served_models)
        self.prompt_format = prompt_format or PromptFormat()
        self.api_key = api_key
        self.base_version = base_version
        self.adapter_versions = dict(adapter_versions or {})
        self.timeout_s = timeout_s
        # vLLM and engine.serve without a token accept any key; the client insists on one.
        self.client = client or OpenAI(
            base_url=self.base_url, api_key=api_key or "EMPTY", max_retries=max_retries,
            timeout=Timeout(timeout_s, connect=min(CONNECT_TIMEOUT_S, timeout_s)))
        self.pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="openai-backend")
        self.lock = threading.Lock()  # guards served_models / adapter_versions while adapters change

    @classmethod
    def from_spec(cls, spec: Any, base_version: str, adapter_versions: dict[str, str]) -> OpenAIBackend:
        """The backend a registry entry with ``backend = "openai"`` describes (``spec.server``)."""
        import os

        server = spec.server
        key = os.environ.get(server.api_key_env) if server.api_key_env else None
        return cls(server.base_url, server.served_models, spec.prompt_format, api_key=key,
                   base_version=base_version, adapter_versions=adapter_versions, timeout_s=server.timeout_s,
                   max_retries=server.max_retries, max_concurrency=server.max_concurrency)

    # --- variants and versions -------------------------------------------------------------------
    @property
    def variants(self) -> list[str]:
        names = list(self.served_models)
        return sorted(names, key=lambda n: n != BASE_VARIANT)  # base first, then adapters as listed

    def model_version(self, variant: str) -> str:
        if variant == BASE_VARIANT:
            return self.base_version
        adapter = self.adapter_versions.get(variant, self.served_models.get(variant, variant))
        return f"{self.base_version}+{adapter}"

    def served_model_ids(self) -> list[str]:
        """The model names the server lists at ``/v1/models``. Raises :class:`BackendError`."""
        try:
            return [m.id for m in self.client.models.list()]
        except Exception as exc:  # noqa: BLE001 - every client failure becomes one clear error
            raise self._error(exc, "") from exc

    def check(self) -> None:
        """Fail fast: the server answers and serves every variant's model. Raises :class:`BackendError`."""
        served = set(self.served_model_ids())
        missing = {v: m for v, m in self.served_models.items() if m not in served}
        if missing:
            wanted = ", ".join(f"{m!r} (variant {v})" for v, m in missing.items())
            raise BackendError(
                f"server {self.base_url} does not serve {wanted}; "
                f"it serves: {', '.join(sorted(served)) or 'nothing'}",
                server=self.base_url, model=", ".join(missing.values()), status=404)

    # --- prompts and generation ------------------------------------------------------------------
    def prompt(self, case: Case) -> Messages:
        """The chat messages of ``case`` (the server renders them with the model's chat template)."""
        return build_messages(case, self.prompt_format)

    def prompt_size(self, prompt: Messages) -> int:
        """The messages' length in characters: the server tokenizes; its own batching decides padding."""
        return sum(len(message["content"]) for message in prompt)

    def generate(self, prompts: list[Messages], variant: str, constrained: bool,
                 settings: GenerationSettings) -> list[Generation]:
        """One chat completion per prompt, at most ``max_concurrency`` at once; out: in input order.

        Errors: :class:`UnknownVariant`; :class:`BackendError` (naming the server and the model) when a
        request fails after the client's retries. A cut answer (``finish_reason == "length"``) is no
        error: its Generation says ``hit_token_limit`` and the engine reports it truncated.
        """
        if variant not in self.served_models:
            raise UnknownVariant(variant, self.variants)
        model = self.served_models[variant]
        request: dict[str, Any] = {"model": model, "max_tokens": settings.max_new_tokens,
                                   "temperature": settings.temperature}
        if settings.do_sample:
            request["top_p"] = settings.top_p
            if settings.seed is not None:
                request["seed"] = settings.seed
        if constrained:
            request["response_format"] = answer_response_format()
        futures = [self.pool.submit(self._complete, messages, request) for messages in prompts]
        try:
            return [f.result() for f in futures]
        finally:
            for f in futures:  # after a failure, drop the requests not yet sent
                f.cancel()

    def _complete(self, messages: Messages, request: dict[str, Any]) -> Generation:
        try:
            response = self.client.chat.completions.create(messages=messages, **request)
        except Exception as exc:  # noqa: BLE001 - every client failure becomes one clear error
            raise self._error(exc, request["model"]) from exc
        if not response.choices:
            raise BackendError(f"server {self.base_url} returned no choice for model {request['model']!r}",
                               server=self.base_url, model=request["model"])
        choice = response.choices[0]
        usage = response.usage
        return Generation(text=choice.message.content or "",
                          input_tokens=usage.prompt_tokens if usage else 0,
                          output_tokens=usage.completion_tokens if usage else 0,
                          hit_token_limit=choice.finish_reason == "length")

    def _error(self, exc: Exception, model: str) -> BackendError:
        """A client exception as a :class:`BackendError` that names the server, the model and the cause."""
        import openai

        where = f"server {self.base_url}" + (f", model {model!r}" if model else "")
        status = getattr(exc, "status_code", None)
        detail = _server_message(exc)
        if isinstance(exc, openai.APITimeoutError):
            text = f"{where}: no answer within {self.timeout_s:g} s (after retries)"
        elif isinstance(exc, openai.APIConnectionError):
            text = f"{where}: cannot connect ({exc.__cause__ or exc}); is the server running?"
        elif isinstance(exc, openai.AuthenticationError):
            text = f"{where}: the server refused the API key (401: {detail}); check the entry's api_key_env"
        elif isinstance(exc, openai.NotFoundError):
            text = f"{where}: the server does not serve this model (404: {detail})"
        elif isinstance(exc, openai.APIStatusError):
            text = f"{where}: the server answered {status}: {detail}"
        else:
            text = f"{where}: {type(exc).__name__}: {exc}"
        return BackendError(text, server=self.base_url, model=model, status=status)

    # --- adapters --------------------------------------------------------------------------------
    def add_adapter(self, name: str, path: str, version: str | None = None) -> None:
        """Serve the LoRA adapter at ``path`` (a path on the server's machine) as variant ``name``.

        The server loads it at run time (vLLM: ``POST /v1/load_lora_adapter``, allowed when it runs with
        ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``; engine.serve: with ``--allow-adapter-loading``) under
        the model name :func:`served_adapter_name` gives, unless it already serves that name (another
        console loaded it, or its command line names it).

        Errors: ValueError for ``base`` or a name already served; :class:`AdapterLoadError` saying what
        to restart when the server does not load adapters at run time or refuses this one.
        """
        if name == BASE_VARIANT or name in self.served_models:
            raise ValueError(f"adapter name {name!r} is reserved or already served")
        self._serve(name, path, version or name)

    def replace_adapter(self, name: str, path: str, version: str | None = None) -> None:
        """Serve the adapter at ``path`` as variant ``name`` instead of the one it serves now.

        The new adapter is loaded under a model name of its own before the variant points at it, so a
        refusal (:class:`AdapterLoadError`, as :meth:`add_adapter`) leaves the variant answering as
        before and the server serving what it served. Nothing is unloaded: an earlier version stays
        on the server for a rollback and for other consoles sharing it."""
        if name == BASE_VARIANT:
            raise ValueError("the base is not an adapter")
        self._serve(name, path, version or name)

    def _serve(self, name: str, path: str, version: str) -> None:
        model = served_adapter_name(version, path)
        if model not in self.served_model_ids():
            self._post_adapter("load_lora_adapter", {"lora_name": model, "lora_path": path})
        with self.lock:
            self.served_models[name] = model
            self.adapter_versions[name] = version

    def _post_adapter(self, endpoint: str, body: dict[str, str]) -> None:
        import httpx

        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        url = f"{self.base_url}/{endpoint}"
        try:
            response = httpx.post(url, json=body, headers=headers, timeout=self.timeout_s)
        except httpx.HTTPError as exc:
            raise BackendError(f"server {self.base_url}: {endpoint} failed ({exc}); is the server running?",
                               server=self.base_url, model=body["lora_name"]) from exc
        if response.status_code in (404, 405):
            raise AdapterLoadError(
                f"server {self.base_url} does not load adapters at run time ({endpoint}: "
                f"{response.status_code}); restart it with the adapter on its command line "
                f"(vLLM: --lora-modules {body['lora_name']}=DIR, or VLLM_ALLOW_RUNTIME_LORA_UPDATING=True; "
                f"engine.serve: --adapter {body['lora_name']}=DIR or --allow-adapter-loading)")
        if response.status_code >= 400:
            raise AdapterLoadError(f"server {self.base_url} refused {endpoint} {body}: "
                                   f"{response.status_code} {response.text[:500]}")

    def figures(self) -> dict[str, Any]:
        return {"backend": "openai", "base_url": self.base_url, "served_models": dict(self.served_models)}

    def close(self) -> None:
        """Stop the request pool and close the client's connections."""
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()


def served_adapter_name(version: str, path: str) -> str:
    """The model name an adapter loaded at run time is served under: its version and a digest of its
    path (``ft-v3-1a2b3c4d``), so two stores' ``ft-v3`` from different dirs never share a name, and a
    console starting again finds the adapter it loaded before."""
    import hashlib
    import re

    stem = re.sub(r"[^\w.-]", "_", version)[:80]  # what a model name may hold (engine.serve's pattern)
    return f"{stem}-{hashlib.sha256(path.encode()).hexdigest()[:8]}"


def _server_message(exc: Exception) -> str:
    """The ``error.message`` of an OpenAI-shaped error body, else the exception's text."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
    return str(exc)
