"""One error shape for every handler of the page (issue 17, finding 8).

Every refused input reaches the caller as a gr.Error whose message starts with the field at fault
(``note: at most 2000 characters``), and the log gets one line with a request id instead of a
traceback. :func:`install` applies this to a built page: it wraps each event handler (API and
private UI events alike) and names a missing parameter before Gradio's own check would fail with a
generic message. A failure nobody foresaw still answers with the handler's name and the request id,
never a bare "Error", and its traceback goes to the log once, at debug level only.
"""

from __future__ import annotations

import functools
import inspect
import logging
import uuid
from collections.abc import Callable
from typing import Any

import gradio as gr

log = logging.getLogger("policyops.requests")
_SKIPPED = ("request", "progress", "evt")  # parameters Gradio fills itself, never sent by a caller


def request_id() -> str:
    return uuid.uuid4().hex[:12]


def _refusal(exc: gr.Error, handler: str) -> gr.Error:
    rid = request_id()
    log.info("request %s refused by %s: %s", rid, handler, str(exc.message)[:300])
    exc.print_exception = False  # one line above, not a traceback per refused input
    return exc


def _failure(exc: BaseException, handler: str) -> gr.Error:
    rid = request_id()
    log.error("request %s failed in %s: %s: %s", rid, handler, type(exc).__name__, str(exc)[:300])
    log.debug("request %s traceback", rid, exc_info=exc)
    return gr.Error(
        f"{handler}: the request could not be handled (request id {rid}); nothing was saved by it",
        title="Request failed",
        print_exception=False,
    )


def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with the error shape: gr.Error passes through (logged as one line), anything else
    becomes a gr.Error naming the handler and a request id. Keeps ``fn``'s signature and kind."""
    name = getattr(fn, "__name__", "handler")
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def gen_wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                yield from fn(*args, **kwargs)
            except gr.Error as exc:
                raise _refusal(exc, name) from None
            except Exception as exc:  # noqa: BLE001 - the one place unexpected errors are turned into messages
                raise _failure(exc, name) from None

        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error as exc:
            raise _refusal(exc, name) from None
        except Exception as exc:  # noqa: BLE001 - the one place unexpected errors are turned into messages
            raise _failure(exc, name) from None

    return wrapper


def caller_parameters(fn: Callable[..., Any]) -> list[inspect.Parameter]:
    """The parameters a caller sends, in order (not the request, progress or event data)."""
    return [
        p for p in inspect.signature(fn).parameters.values()
        if p.name not in _SKIPPED and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]


def install(demo: gr.Blocks) -> gr.Blocks:
    """Give every handler of ``demo`` the error shape; returns ``demo``."""
    for block_fn in demo.fns.values():
        if block_fn.fn is not None and not getattr(block_fn.fn, "__wrapped__", None):
            block_fn.fn = guarded(block_fn.fn)
    original = demo.validate_inputs

    def validate_inputs(block_fn: Any, inputs: list[Any]) -> None:
        wanted = len(block_fn.inputs)
        if len(inputs) < wanted and block_fn.fn is not None:
            params = caller_parameters(block_fn.fn)
            for param in params[len(inputs):wanted]:
                if param.default is inspect.Parameter.empty:
                    raise _refusal(
                        gr.Error(f"{param.name}: missing (the call sent {len(inputs)} of {wanted} values)"),
                        block_fn.name or "handler",
                    )
                inputs.append(param.default)  # an optional parameter left out takes its default
        original(block_fn, inputs)

    demo.validate_inputs = validate_inputs  # type: ignore[method-assign]
    return demo


def text_param(value: Any, field: str, max_chars: int, *, optional: bool = False) -> str:
    """An API parameter that must be text: ``value`` (``""`` for None when ``optional``), else a
    gr.Error naming ``field`` (wrong type, or longer than ``max_chars``: echoed nowhere)."""
    if value is None and optional:
        return ""
    if not isinstance(value, str):
        raise gr.Error(f"{field}: must be text (got {type(value).__name__})", print_exception=False)
    if len(value) > max_chars:
        raise gr.Error(f"{field}: at most {max_chars} characters (got {len(value)})", print_exception=False)
    return value


def flag_param(value: Any, field: str) -> bool:
    """An API parameter that must be true or false (None counts as false)."""
    if value is None:
        return False
    if not isinstance(value, bool):
        raise gr.Error(f"{field}: must be true or false (got {type(value).__name__})", print_exception=False)
    return value
