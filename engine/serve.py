"""The local engine behind an OpenAI-compatible HTTP API (the subset vLLM serves).

    uv run python -m engine.serve --model default-ft --port 8011
    POLICYOPS_SERVE_API_KEY=secret uv run python -m engine.serve --model default-ft --host 0.0.0.0

Endpoints: ``GET /v1/models`` (the base under ``--served-model-name``, default its dir name, and each
adapter under its variant name), ``POST /v1/chat/completions`` (no streaming, one choice;
``response_format`` text, json_object or json_schema, decoded under the schema's grammar; ``usage``
and ``finish_reason``: ``length`` when ``max_tokens`` cut the answer), ``GET /health`` and, with
``--allow-adapter-loading``, vLLM's ``POST /v1/load_lora_adapter`` and ``/v1/unload_lora_adapter``.
When the environment variable named by ``--api-key-env`` holds a token, every ``/v1`` request must
carry it as ``Authorization: Bearer ...``. Requests are bounded (body size, messages, ``max_tokens``)
and refused with 4xx errors in OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``.
Concurrent requests that decode alike run as one batch (:mod:`engine.batcher`).
"""

from __future__ import annotations

import argparse
import hmac
import os
import time
import uuid
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from engine.backends.base import BASE_VARIANT, GenerationSettings
from engine.batcher import Batcher, Job
from engine.cli import MAX_BATCH, MAX_NEW_TOKENS, bounded_int, refusals

API_KEY_ENV = "POLICYOPS_SERVE_API_KEY"  # the environment variable that holds the bearer token
MAX_MESSAGES = 64  # chat messages per request
MAX_CONTENT_CHARS = 100_000  # characters per message


@dataclass(frozen=True)
class ServeConfig:
    """The server's bounds and names; every field is a command-line option."""

    served_model_name: str  # the base's model id
    api_key: str | None = None  # None: no token asked
    max_tokens_limit: int = 2048  # the largest max_tokens a request may ask for
    default_max_tokens: int = 512  # when a request names none
    max_body_bytes: int = 1_000_000  # request body size
    request_timeout_s: float = 600.0  # a request waiting longer (queue + generation) gets 503
    allow_adapter_loading: bool = False  # vLLM's VLLM_ALLOW_RUNTIME_LORA_UPDATING
    max_batch: int = 8


class ApiError(Exception):
    """An error answered in OpenAI's shape."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=MAX_CONTENT_CHARS)


class JsonSchema(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    name: str = "response"
    json_schema: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchema | None = None


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str
    messages: list[Message] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(0.0, ge=0.0, le=2.0)  # greedy unless asked: reviews must be reproducible
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = None
    n: int = Field(1, ge=1, le=1)
    stream: bool = False
    response_format: ResponseFormat | None = None


class LoraRequest(BaseModel):
    lora_name: str = Field(min_length=1, max_length=100, pattern=r"^[\w.-]+$")
    lora_path: str | None = None


def create_app(engine: Any, config: ServeConfig) -> FastAPI:
    """The FastAPI app serving ``engine`` (a local Engine). Raises ValueError for a served engine."""
    if engine.backend_name != "local":
        raise ValueError("engine.serve serves local models; this one is already served elsewhere")
    backend = engine.backend
    batcher = Batcher(backend, max_batch=config.max_batch)
    app = FastAPI(title="PolicyOps engine", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.batcher = batcher
    hidden: set[str] = set()  # adapters unloaded through the API (their weights stay loaded)

    def model_ids() -> dict[str, str]:
        """Served model id -> variant."""
        ids = {config.served_model_name: BASE_VARIANT}
        ids.update({v: v for v in engine.variants if v != BASE_VARIANT and v not in hidden})
        return ids

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        param = ".".join(str(p) for p in first["loc"] if p != "body") or None
        return JSONResponse(ApiError(400, f"{param or 'body'}: {first['msg']}", param=param,
                                     code="invalid_value").body(), status_code=400)

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(ApiError(500, f"{type(exc).__name__}: {exc}", "server_error").body(), 500)

    @app.middleware("http")
    async def guard_requests(request: Request, call_next: Any) -> Any:
        if request.url.path.startswith("/v1"):
            if config.api_key:
                given = request.headers.get("authorization", "")
                if not hmac.compare_digest(given.encode(), f"Bearer {config.api_key}".encode()):
                    err = ApiError(401, "missing or wrong API key (Authorization: Bearer ...)",
                                   "authentication_error", code="invalid_api_key")
                    return JSONResponse(err.body(), status_code=401)
            if request.method == "POST":
                length = request.headers.get("content-length")
                if length is None or not length.isdigit():
                    return JSONResponse(ApiError(411, "a Content-Length header is required").body(), 411)
                if int(length) > config.max_body_bytes:
                    err = ApiError(413, f"request body over {config.max_body_bytes} bytes",
                                   code="request_too_large")
                    return JSONResponse(err.body(), status_code=413)
        return await call_next(request)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        created = int(time.time())
        data = [{"id": mid, "object": "model", "created": created, "owned_by": "policyops",
                 "root": engine.model_version(variant),
                 "parent": None if variant == BASE_VARIANT else config.served_model_name}
                for mid, variant in model_ids().items()]
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions")
    def chat_completions(req: ChatRequest) -> dict[str, Any]:
        variant = model_ids().get(req.model)
        if variant is None:
            raise ApiError(404, f"The model `{req.model}` does not exist (served: {', '.join(model_ids())})",
                           param="model", code="model_not_found")
        if req.stream:
            raise ApiError(400, "streaming is not supported", param="stream", code="unsupported_value")
        max_tokens = req.max_completion_tokens or req.max_tokens or config.default_max_tokens
        if max_tokens > config.max_tokens_limit:
            raise ApiError(400, f"max_tokens {max_tokens} is over this server's limit "
                           f"{config.max_tokens_limit}",
                           param="max_tokens", code="invalid_value")
        constrained, grammar = _grammar(backend, req.response_format)
        settings = GenerationSettings(max_new_tokens=max_tokens, temperature=req.temperature, top_p=req.top_p,
                                      seed=req.seed)
        try:
            prompt = backend.render_messages([m.model_dump() for m in req.messages])
        except Exception as exc:  # noqa: BLE001 - the chat template refused these messages
            raise ApiError(400, f"messages: the chat template cannot render them ({exc})",
                           param="messages") from None
        job = Job(prompt, variant, constrained, settings, grammar)
        future = batcher.submit(job)
        try:
            gen = future.result(timeout=config.request_timeout_s)
        except FutureTimeout:
            future.cancel()
            raise ApiError(503, f"no answer within {config.request_timeout_s:g} s", "server_error") from None
        except Exception as exc:  # noqa: BLE001 - the model failed: a 500 that says why
            raise ApiError(500, f"generation failed: {type(exc).__name__}: {exc}", "server_error") from None
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": req.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": gen.text},
                         "finish_reason": "length" if gen.hit_token_limit else "stop", "logprobs": None}],
            "usage": {"prompt_tokens": gen.input_tokens, "completion_tokens": gen.output_tokens,
                      "total_tokens": gen.input_tokens + gen.output_tokens},
        }

    @app.post("/v1/load_lora_adapter")
    def load_lora_adapter(req: LoraRequest) -> JSONResponse:
        _adapter_loading_allowed(config)
        path = Path(req.lora_path or "")
        if not (path / "adapter_config.json").is_file():
            raise ApiError(400, f"no adapter at {req.lora_path!r} (adapter_config.json missing)",
                           param="lora_path")
        if req.lora_name in model_ids():
            raise ApiError(400, f"adapter {req.lora_name!r} is already loaded", param="lora_name")
        try:
            if req.lora_name in engine.variants:  # unloaded earlier: its slot takes the new weights
                engine.swap_adapter(req.lora_name, str(path), version=path.name)
            else:
                engine.add_adapter(req.lora_name, str(path), version=path.name)
        except (OSError, ValueError, RuntimeError) as exc:
            raise ApiError(400, f"cannot load {path}: {exc}", param="lora_path") from None
        hidden.discard(req.lora_name)
        return JSONResponse(f"Success: LoRA adapter '{req.lora_name}' added successfully.")

    @app.post("/v1/unload_lora_adapter")
    def unload_lora_adapter(req: LoraRequest) -> JSONResponse:
        _adapter_loading_allowed(config)
        if model_ids().get(req.lora_name, BASE_VARIANT) == BASE_VARIANT:
            raise ApiError(404, f"no adapter {req.lora_name!r} is loaded", param="lora_name",
                           code="not_found")
        hidden.add(req.lora_name)  # weights stay until a load reuses the slot
        return JSONResponse(f"Success: LoRA adapter '{req.lora_name}' removed successfully.")

    return app


def _adapter_loading_allowed(config: ServeConfig) -> None:
    if not config.allow_adapter_loading:
        raise ApiError(404, "adapter loading at run time is off; restart with --allow-adapter-loading",
                       code="not_found")


def _grammar(backend: Any, response_format: ResponseFormat | None) -> tuple[bool, Any]:
    """(constrained, grammar) for a request's ``response_format``; ApiError 400 for a schema that does
    not compile."""
    from engine.constrained import ConstrainedDecodingError

    if response_format is None or response_format.type == "text":
        return False, None
    if response_format.type == "json_object":
        schema: dict[str, Any] = {"type": "object"}
    elif response_format.json_schema is None:
        raise ApiError(400, "response_format.json_schema is required for type json_schema",
                       param="response_format.json_schema")
    else:
        schema = response_format.json_schema.json_schema
    try:
        return True, backend.grammar_for(schema)
    except (ConstrainedDecodingError, ValueError, TypeError) as exc:
        raise ApiError(400, f"response_format: schema does not compile: {exc}",
                       param="response_format.json_schema") from None


def adapter_option(text: str) -> tuple[str, str]:
    """An argparse type: ``NAME=DIR``, an adapter's variant name and its folder."""
    name, sep, path = text.partition("=")
    if not sep or not name.strip() or not path.strip():
        raise argparse.ArgumentTypeError(f"{text!r}: give NAME=DIR")
    if not (Path(path) / "adapter_config.json").is_file():
        raise argparse.ArgumentTypeError(f"{text!r}: {path} is not an adapter folder "
                                         "(no adapter_config.json)")
    return name.strip(), path


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m engine.serve", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default-ft", help="registry name, model dir or adapter dir (local)")
    p.add_argument("--adapter", action="append", default=[], type=adapter_option, metavar="NAME=DIR",
                   help="one more adapter")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=bounded_int(1, 65535), default=8011)
    p.add_argument("--served-model-name", default=None, help="the base's model id (default: its dir name)")
    p.add_argument("--api-key-env", default=API_KEY_ENV, help="environment variable holding the bearer token")
    p.add_argument("--allow-adapter-loading", action="store_true", help="enable /v1/load_lora_adapter")
    p.add_argument("--max-tokens-limit", type=bounded_int(1, MAX_NEW_TOKENS),
                   default=ServeConfig.max_tokens_limit)
    p.add_argument("--max-body-bytes", type=bounded_int(1024, 100_000_000),
                   default=ServeConfig.max_body_bytes)
    p.add_argument("--max-batch", type=bounded_int(1, MAX_BATCH), default=ServeConfig.max_batch,
                   help="prompts per generate call")
    p.add_argument("--max-connections", type=bounded_int(1, 10_000), default=64,
                   help="concurrent connections; more get 503")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:n]")
    p.add_argument("--quantize", choices=("none", "nf4", "auto"), default="none")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Serve; a mistake in the options ends it with status 2 and one line naming the option."""
    import uvicorn

    from engine.core import Engine
    from engine.registry import RegistryError, UnknownModel, resolve_model

    p = parser()
    args = p.parse_args(argv)
    with refusals(p, {UnknownModel: "--model", RegistryError: "--model"}):
        spec = resolve_model(args.model)
    if spec.server is not None:
        p.error(f"--model: {args.model} is served by {spec.server.base_url} already; pick a local model")
    extra = dict(args.adapter)
    if BASE_VARIANT in extra or len(extra) < len(args.adapter):
        p.error(f"--adapter: names must differ and not be {BASE_VARIANT!r}")
    engine = Engine.load(spec, adapters=extra, device=args.device, quantize=args.quantize)
    config = ServeConfig(
        served_model_name=args.served_model_name or Path(spec.base).name,
        api_key=os.environ.get(args.api_key_env) or None, max_tokens_limit=args.max_tokens_limit,
        max_body_bytes=args.max_body_bytes, allow_adapter_loading=args.allow_adapter_loading,
        max_batch=args.max_batch)
    app = create_app(engine, config)
    names = ", ".join([config.served_model_name, *[v for v in engine.variants if v != BASE_VARIANT]])
    print(f"serving {names} at http://{args.host}:{args.port}/v1"
          f"{' (bearer token required)' if config.api_key else ''}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning",
                limit_concurrency=args.max_connections, timeout_keep_alive=30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
