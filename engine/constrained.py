"""Constrained JSON decoding with llguidance, as a transformers ``LogitsProcessor``.

Why llguidance (measured in FINDINGS.md): 20/20 schema-valid answers with valid UTF-8 from a
tiny byte-level model, 1.2-1.4x per-step overhead, and a plain matcher API we can drive from our
own processor; xgrammar, outlines and lm-format-enforcer each produced invalid output there.

The grammar is :func:`policies.answer_json_schema` compiled without flexible whitespace and with
compact separators, so the only text a model can write is the same compact, schema-ordered JSON
that :func:`policies.prompt.answer_json` writes for training. After the closing brace the grammar
admits only a stop token (``<|im_end|>`` or the tokenizer's EOS).

Usage::

    grammar = AnswerGrammar.for_tokenizer(tokenizer, model_vocab_size=model.config.vocab_size)
    processor = grammar.processor(batch_size=len(prompts))
    model.generate(..., logits_processor=LogitsProcessorList([processor]))

    # overlapped (on a GPU): the next mask is filled on a thread while the model runs
    processor = grammar.processor(batch_size=len(prompts), overlap=True)
    model.generate(..., logits_processor=LogitsProcessorList([processor]),
                   stopping_criteria=StoppingCriteriaList([processor.next_mask_hook()]))
    processor.finish()
"""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import llguidance
import llguidance.hf
import llguidance.torch
import torch
from transformers import LogitsProcessor, StoppingCriteria

from policies import answer_json_schema

log = logging.getLogger(__name__)

# Compact JSON, exactly like policies.prompt.answer_json (separators "," and ":", no spaces or newlines).
JSON_OPTIONS: dict[str, Any] = {"whitespace_flexible": False, "item_separator": ",", "key_separator": ":"}
STOP_TOKENS = ("<|im_end|>", "<|endoftext|>")  # chat-turn end first; the tokenizer's eos is added too
# Tokens left at which a row starts closing its answer: from then on, among the tokens the grammar
# allows, only those holding a '"', ']' or '}' are kept (when there are any), which ends the open
# string or list at once. The rest of the answer is then mostly forced key text (at most ~80 bytes),
# so a budget of at least this many tokens always ends in a complete object instead of "truncated".
CLOSING_RESERVE_TOKENS = 96


class ConstrainedDecodingError(RuntimeError):
    """The grammar could not be built for this tokenizer (bad schema or a non-fast tokenizer)."""


def stop_token_ids(tokenizer: Any) -> list[int]:
    """Ids that end an answer: the tokenizer's EOS plus the chat-turn end tokens it knows, deduplicated."""
    ids: list[int] = []
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    vocab = tokenizer.get_vocab()
    for tok in STOP_TOKENS:
        if tok in vocab and vocab[tok] not in ids:
            ids.append(int(vocab[tok]))
    if not ids:
        raise ConstrainedDecodingError("the tokenizer has no EOS or <|im_end|> token to stop on")
    return ids


@dataclass
class AnswerGrammar:
    """The answer schema compiled for one tokenizer; build once per tokenizer, reuse for every batch."""

    ll_tokenizer: Any  # llguidance.LLTokenizer
    grammar: str
    stop_ids: list[int]
    executor: Any  # llguidance.LLExecutor: computes the masks of a batch's rows in parallel
    stop_mask: torch.Tensor  # the bitmask row that admits only the stop tokens
    closer_words: torch.Tensor  # bitmask row: tokens whose bytes hold '"', ']' or '}', and the padding bits
    _worker: ThreadPoolExecutor | None = field(default=None, repr=False)
    _worker_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def for_tokenizer(cls, tokenizer: Any, model_vocab_size: int | None = None,
                      schema: dict[str, Any] | None = None) -> AnswerGrammar:
        """Compile ``schema`` (default: the answer schema) for ``tokenizer``.

        ``model_vocab_size`` is the width of the model's logits; it is often larger than the tokenizer
        (embeddings padded to a multiple of 64), and the ids past the tokenizer must never be sampled.
        Raises :class:`ConstrainedDecodingError` when the grammar does not compile.
        """
        stop_ids = stop_token_ids(tokenizer)
        n_vocab = max(len(tokenizer), model_vocab_size or 0)
        try:
            ll_tok = llguidance.hf.from_tokenizer(tokenizer, n_vocab=n_vocab, eos_token=stop_ids)
        except ValueError as exc:  # a slow (Python) tokenizer
            raise ConstrainedDecodingError(str(exc)) from exc
        grammar = llguidance.LLMatcher.grammar_from_json_schema(
            json.dumps(schema or answer_json_schema()), overrides=JSON_OPTIONS)
        is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, ll_tok)
        if is_error:
            raise ConstrainedDecodingError(f"answer grammar does not compile: {messages}")
        n_words = llguidance.torch.get_bitmask_shape(1, ll_tok.vocab_size)[1]
        stop_mask = torch.zeros(n_words, dtype=torch.int32)
        for stop in stop_ids:
            stop_mask[stop // 32] |= _bit(stop % 32)
        closers = [any(c in ll_tok.decode_bytes([i]) for c in b'"]}') for i in range(ll_tok.vocab_size)]
        closers += [True] * (32 * n_words - len(closers))  # bits past the vocab: left as the grammar set them
        bits = torch.tensor(closers, dtype=torch.int64).view(n_words, 32) << torch.arange(32)
        closer_words = bits.sum(dim=1).to(torch.uint32).view(torch.int32)
        return cls(ll_tok, grammar, stop_ids, llguidance.LLExecutor(num_threads=1), stop_mask, closer_words)

    def matcher(self) -> Any:
        return llguidance.LLMatcher(self.ll_tokenizer, self.grammar, log_level=0)

    def processor(self, batch_size: int, max_new_tokens: int | None = None,
                  overlap: bool = False) -> JsonSchemaLogitsProcessor:
        """A fresh processor (one matcher per row) for one ``generate`` call of ``batch_size`` rows.

        With ``max_new_tokens``, rows start closing their answer :data:`CLOSING_RESERVE_TOKENS` before it.
        ``overlap``: fill each next mask on :meth:`worker` while the model runs (see the processor).
        """
        return JsonSchemaLogitsProcessor(self, batch_size, max_new_tokens, overlap)

    def worker(self) -> ThreadPoolExecutor:
        """The thread that fills this grammar's masks in the overlapped schedule (started on first use)."""
        with self._worker_lock:
            if self._worker is None:
                self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="grammar-mask")
            return self._worker


class JsonSchemaLogitsProcessor(LogitsProcessor):
    """Masks every token the grammar does not allow next, row by row.

    One matcher per batch row. Before each step's mask the matchers are fed each row's previous
    token (the prompt is never fed: the grammar starts at the assistant turn); then a packed token
    bitmask is filled on the host and applied to the logits on their own device, in place. A row
    whose matcher has stopped (it accepted a stop token) is finished; ``generate`` pads it from
    then on, so its mask is left open. A matcher in an error state (should not happen) is allowed
    only the stop tokens, so the row ends and the extractor reports it as invalid instead of the
    whole batch crashing.

    Two schedules, one computation. Plain: each call reads the last tokens on the host (a device
    sync on a GPU) and fills the next mask while the device waits. Overlapped (``overlap=True`` and
    :meth:`next_mask_hook` passed to ``generate`` as a stopping criterion): the hook, which
    ``generate`` calls right after appending a token, hands that token to a worker thread that
    consumes it and fills the next mask while the main thread launches the next forward pass; the
    next call only waits for the worker and applies the mask. Both give the same masks, so greedy
    answers are identical. Call :meth:`finish` after ``generate`` (the last hook leaves a job).
    """

    def __init__(self, grammar: AnswerGrammar, batch_size: int, max_new_tokens: int | None = None,
                 overlap: bool = False):
        self.grammar = grammar
        self.max_new_tokens = max_new_tokens
        self.overlap = overlap
        self.matchers = [grammar.matcher() for _ in range(batch_size)]
        self.prompt_len: int | None = None
        n_words = llguidance.torch.get_bitmask_shape(batch_size, grammar.ll_tokenizer.vocab_size)[1]
        # Pinned host memory lets the copies to and from a GPU run without blocking the host.
        pinned = overlap and torch.cuda.is_available()
        self.bitmask = torch.full((batch_size, n_words), -1, dtype=torch.int32, pin_memory=pinned)
        self._host_tokens = torch.zeros(batch_size, dtype=torch.long, pin_memory=pinned)
        self._device_mask: torch.Tensor | None = None  # the bitmask's copy on the logits' device
        self._mask_copied: Any = None  # CUDA event: the bitmask's copy has left host memory
        self._pending: Future[None] | None = None  # the worker's job: the next step's mask
        self.errors: list[str | None] = [None] * batch_size
        self.seconds = 0.0  # time this processor held up generate (grammar + masking), for the benchmark
        self.mask_seconds = 0.0  # time spent consuming tokens and filling masks, wherever it ran
        self.calls = 0
        self._lock = threading.Lock()  # one processor serves one generate call; the lock documents that

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        with self._lock:
            t0 = time.perf_counter()
            try:
                return self._step(input_ids, scores)
            finally:
                self.seconds += time.perf_counter() - t0
                self.calls += 1

    def _step(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        if self.prompt_len is None:
            self.prompt_len = input_ids.shape[1]
            self._next_mask(None, input_ids.shape[1])
        elif self._pending is not None:  # overlapped: the worker has been filling this mask
            self.finish()
        elif input_ids.shape[1] > self.prompt_len:
            self._next_mask(input_ids[:, -1].tolist(), input_ids.shape[1])
        return self._apply(scores)

    def next_mask_hook(self) -> StoppingCriteria:
        """A stopping criterion (it never stops a row) that starts the next mask on the worker thread."""
        return _StartNextMask(self)

    def start_next_mask(self, input_ids: torch.LongTensor) -> None:
        """Hand the tokens just appended to ``input_ids`` to the worker, without waiting for the device."""
        if self.prompt_len is None:
            return
        self.finish()
        last = input_ids[:, -1]
        ready = None
        if last.is_cuda:
            self._host_tokens.copy_(last, non_blocking=True)
            ready = torch.cuda.Event()
            ready.record(torch.cuda.current_stream(last.device))
        else:
            self._host_tokens.copy_(last)
        self._pending = self.grammar.worker().submit(self._worker_step, ready, input_ids.shape[1])

    def finish(self) -> None:
        """Wait for the worker's pending job, if any; re-raises what it raised."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    @torch.inference_mode()  # thread-local: the buffers may be inference tensors made by generate's thread
    def _worker_step(self, tokens_ready: Any, length: int) -> None:
        if tokens_ready is not None:
            tokens_ready.synchronize()
        self._next_mask(self._host_tokens.tolist(), length)

    def _next_mask(self, last_tokens: list[int] | None, length: int) -> None:
        """Feed ``last_tokens`` (None at the first step) and fill :attr:`bitmask` for the next token."""
        t0 = time.perf_counter()
        if self._mask_copied is not None:  # the previous mask must have left before it is overwritten
            self._mask_copied.synchronize()
        if last_tokens is not None:
            self._consume(last_tokens)
        self._fill_masks()
        if self._closing(length):
            self._narrow_to_closers()
        self.mask_seconds += time.perf_counter() - t0

    def _closing(self, length: int) -> bool:
        if self.max_new_tokens is None or self.prompt_len is None:
            return False
        return self.max_new_tokens - (length - self.prompt_len) <= CLOSING_RESERVE_TOKENS

    def _consume(self, last_tokens: list[int]) -> None:
        for row, (matcher, token) in enumerate(zip(self.matchers, last_tokens, strict=True)):
            if matcher.is_stopped() or matcher.is_error():
                continue
            if not matcher.consume_token(token) and self.errors[row] is None:
                self.errors[row] = matcher.get_error() or f"token {token} refused by the grammar"

    def _fill_masks(self) -> None:
        live = []
        for row, matcher in enumerate(self.matchers):
            if matcher.is_stopped() or matcher.is_error():
                # The answer is closed (or broken): only a stop token may follow. Once the row has
                # emitted it, generate pads the row and ignores our mask.
                self.bitmask[row] = self.grammar.stop_mask
            else:
                live.append((matcher, row))
        if live:
            llguidance.torch.fill_next_token_bitmask_par(self.grammar.executor, live, self.bitmask)

    def _narrow_to_closers(self) -> None:
        # Among the allowed tokens keep those holding '"', ']' or '}'; rows that allow none keep theirs.
        narrowed = self.bitmask & self.grammar.closer_words
        keep = (narrowed != 0).any(dim=1)
        self.bitmask[keep] = narrowed[keep]

    def _apply(self, scores: torch.Tensor) -> torch.Tensor:
        mask = self.bitmask
        if scores.device != mask.device:
            if self._device_mask is None:
                self._device_mask = torch.empty_like(mask, device=scores.device)
                self._mask_copied = torch.cuda.Event() if scores.is_cuda else None
            self._device_mask.copy_(mask, non_blocking=True)
            if self._mask_copied is not None:
                self._mask_copied.record(torch.cuda.current_stream(scores.device))
            mask = self._device_mask
        apply_token_bitmask(scores, mask)
        return scores


class _StartNextMask(StoppingCriteria):
    """``generate`` calls its stopping criteria right after appending each token: the moment to start
    the next mask. Never stops a row."""

    def __init__(self, processor: JsonSchemaLogitsProcessor):
        self.processor = processor

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        self.processor.start_next_mask(input_ids)
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


_BITS = torch.arange(32, dtype=torch.int32)
_gpu_kernel_failed = False  # set when llguidance's compiled kernel cannot run here: eager from then on


def apply_token_bitmask(scores: torch.Tensor, mask: torch.Tensor) -> None:
    """Set to -inf, in place, every logit whose bit in the packed int32 ``mask`` is 0 (and any column
    past the mask). ``mask`` is on ``scores``' device. On a GPU: llguidance's fused kernel (compiled on
    first use); elsewhere, or if that kernel fails to compile, the same operation eagerly."""
    global _gpu_kernel_failed
    if scores.is_cuda and not _gpu_kernel_failed:
        try:
            llguidance.torch.apply_token_bitmask_inplace(scores, mask)
            return
        except Exception as exc:  # noqa: BLE001 - e.g. no Triton: the eager path below is exact too
            log.warning("llguidance's GPU mask kernel failed (%s: %s); masking eagerly",
                        type(exc).__name__, exc)
            _gpu_kernel_failed = True
    vocab, cutoff = scores.shape[1], 32 * mask.shape[1]
    if vocab > cutoff:  # logits wider than the grammar's vocab: the tail is never allowed
        scores[:, cutoff:] = float("-inf")
    allowed = ((mask.unsqueeze(-1) >> _BITS.to(mask.device)) & 1).bool().flatten(1)[:, :vocab]
    scores[:, : allowed.shape[1]].masked_fill_(~allowed, float("-inf"))


def _bit(i: int) -> int:
    """The int32 value with bit ``i`` set (bit 31 is the sign bit)."""
    return -(2**31) if i == 31 else 1 << i
