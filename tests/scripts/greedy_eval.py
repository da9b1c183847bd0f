"""Dev tool: greedy decision accuracy and hard-violation rate of a model on a generator JSONL file.

    uv run python tests/scripts/greedy_eval.py --model default-ft --data data/generated/eval.jsonl
    uv run python tests/scripts/greedy_eval.py --model default-base --max_new_tokens 16   # decision only

Unconstrained greedy decoding through engine.loading + policies.prompt (the same prompt and ids as
training). The decision is read from the parsed JSON, else from a ``"decision":"..."`` prefix.
A case counts as a violation when policies.check(case, decision) is non-empty.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections import Counter

import torch
from tqdm import tqdm

from engine.loading import load_base_model, load_tokenizer
from engine.registry import resolve_model
from engine.training import rule_chain
from policies import check, parse_answer, parse_case
from policies.prompt import render_prompt

_DECISION = re.compile(r'"decision"\s*:\s*"([A-Z_]+)"')


def load_model(name: str) -> tuple:
    spec = resolve_model(name)
    model = load_base_model(spec, quantize="none")
    tok_dir = next(iter(spec.adapters.values()), spec.base)
    if spec.adapters:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, next(iter(spec.adapters.values()))).eval()
    return spec, model, load_tokenizer(tok_dir)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="default-ft")
    ap.add_argument("--data", default="data/generated/eval.jsonl")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--batch_size", type=int, default=50)
    ap.add_argument("--max_new_tokens", type=int, default=320)
    args = ap.parse_args()
    spec, model, tok = load_model(args.model)
    rows = [json.loads(line) for line in open(args.data, encoding="utf-8") if line.strip()][: args.limit]
    correct = violations = valid = 0
    wrong: Counter[str] = Counter()
    violated: Counter[str] = Counter()  # rule chain (NRC-3+LIM-1) -> cases with a hard violation
    codes: Counter[str] = Counter()
    started = time.time()
    for i in tqdm(range(0, len(rows), args.batch_size), desc="eval"):
        batch = rows[i : i + args.batch_size]
        cases = [parse_case(r["input"]) for r in batch]
        enc = tok(
            [render_prompt(tok, c, spec.prompt_format) for c in cases],
            return_tensors="pt",
            padding=True,
            add_special_tokens=False,
        )
        with torch.no_grad():
            out = model.generate(
                **enc,
                max_new_tokens=args.max_new_tokens,
                do_sample=False,
                eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id,
            )
        texts = tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        for row, case, text in zip(batch, cases, texts, strict=True):
            decision = None
            try:
                decision = parse_answer(json.loads(text)).decision
                valid += 1
            except Exception:  # noqa: BLE001 - any unparseable answer
                m = _DECISION.search(text)
                decision = m.group(1) if m else None
            expected = row["output"]["decision"]
            if decision == expected:
                correct += 1
            else:
                wrong[row["output"]["policy_refs"][0]] += 1
            found = check(case, decision) if decision is not None else []
            if found:
                violations += 1
                violated[rule_chain(row)] += 1
                codes.update(found)
    n = len(rows)
    print(
        json.dumps(
            {
                "model": args.model,
                "n": n,
                "decision_accuracy": correct / n,
                "violation_rate": violations / n,
                "valid_json": valid / n,
                "seconds": round(time.time() - started, 1),
                "errors_by_rule": dict(wrong.most_common()),
                "violations_by_chain": dict(violated.most_common()),
                "violation_codes": dict(codes.most_common()),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
