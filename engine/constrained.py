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
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any

import llguidance
import llguidance.hf
import llguidance.torch
import torch
from transformers import LogitsProcessor

from policies import answer_json_schema

# Compact JSON, exactly like policies.prompt.answer_json (separators "," and ":", no spaces or newlines).
JSON_OPTIONS: dict[str, Any] = {"whitespace_flexible": False, "item_separator": ",", "key_separator": ":"}
STOP_TOKENS = ("<|im_end|>", "<|endoftext|>")  # chat-turn end first; the tokenizer's eos is added too
# Tokens left at which a row starts closing its answer: from then on, among the tokens the grammar
# allows, only those holding a '"', ']' or '}' are kept (when there are any), which ends the open
# string or list at once. The rest of the answer is then mostly forced key text (about 70 bytes),
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
    closers: torch.Tensor  # bool per token id: its bytes hold '"', ']' or '}'

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
        closers = torch.tensor([any(c in ll_tok.decode_bytes([i]) for c in b'"]}')
                                for i in range(ll_tok.vocab_size)], dtype=torch.bool)
        return cls(ll_tok, grammar, stop_ids, llguidance.LLExecutor(num_threads=1), stop_mask, closers)

    def matcher(self) -> Any:
        return llguidance.LLMatcher(self.ll_tokenizer, self.grammar, log_level=0)

    def processor(self, batch_size: int, max_new_tokens: int | None = None) -> JsonSchemaLogitsProcessor:
        """A fresh processor (one matcher per row) for one ``generate`` call of ``batch_size`` rows.

        With ``max_new_tokens``, rows start closing their answer :data:`CLOSING_RESERVE_TOKENS` before it.
        """
        return JsonSchemaLogitsProcessor(self, batch_size, max_new_tokens)


class JsonSchemaLogitsProcessor(LogitsProcessor):
    """Masks every token the grammar does not allow next, row by row.

    One matcher per batch row. At each step the processor first feeds each row's previous token to
    its matcher (the prompt is never fed: the grammar starts at the assistant turn), then fills a
    token bitmask and sets the disallowed logits to -inf. A row whose matcher has stopped (it
    accepted a stop token) is finished; ``generate`` pads it from then on, so its mask is left open.
    A matcher in an error state (should not happen) is allowed only the stop tokens, so the row ends
    and the extractor reports it as invalid instead of the whole batch crashing.
    """

    def __init__(self, grammar: AnswerGrammar, batch_size: int, max_new_tokens: int | None = None):
        self.grammar = grammar
        self.max_new_tokens = max_new_tokens
        self.matchers = [grammar.matcher() for _ in range(batch_size)]
        self.prompt_len: int | None = None
        n_words = llguidance.torch.get_bitmask_shape(batch_size, grammar.ll_tokenizer.vocab_size)[1]
        self.bitmask = torch.full((batch_size, n_words), -1, dtype=torch.int32)
        self._bits = torch.arange(32, dtype=torch.int32)
        self.errors: list[str | None] = [None] * batch_size
        self.seconds = 0.0  # time spent in this processor (grammar + masking), for the benchmark
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
        elif input_ids.shape[1] > self.prompt_len:
            self._consume(input_ids[:, -1].tolist())
        self._fill_masks()
        return self._apply(scores, closing=self._closing(input_ids.shape[1]))

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

    def _apply(self, scores: torch.Tensor, closing: bool = False) -> torch.Tensor:
        # Unpack the int32 words to one bool per token id (no torch.compile: plain ops on CPU).
        allowed = ((self.bitmask.unsqueeze(-1) >> self._bits) & 1).bool().flatten(1)
        if closing:
            closers = self.grammar.closers[: allowed.shape[1]]
            narrowed = allowed.clone()
            narrowed[:, : closers.shape[0]] &= closers
            keep = narrowed.any(dim=1)  # rows with no closing token allowed keep the grammar's mask
            allowed = torch.where(keep.unsqueeze(1), narrowed, allowed)
        vocab = scores.shape[1]
        if allowed.shape[1] < vocab:  # logits wider than the grammar's vocab: the tail is never allowed
            pad = torch.zeros(allowed.shape[0], vocab - allowed.shape[1], dtype=torch.bool)
            allowed = torch.cat([allowed, pad], dim=1)
        allowed = allowed[:, :vocab].to(scores.device)
        return scores.masked_fill(~allowed, float("-inf"))


def _bit(i: int) -> int:
    """The int32 value with bit ``i`` set (bit 31 is the sign bit)."""
    return -(2**31) if i == 31 else 1 << i
