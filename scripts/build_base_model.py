"""Build the embedded base model (data/models/default-base): tokenizer + a small Qwen2 LM.

    uv run python scripts/build_base_model.py --out data/models/default-base --seed 0

It learns language only: the policy documents (which name the rule ids and decisions) and
rendered case prompts (system + user turns, exactly as policies.prompt builds them for the
tiny format), never an answer or a decision tied to a case, so it plays the untuned baseline.
Cases of the validation/eval files are left out. Same seed and sizes -> same weights.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import fields
from pathlib import Path

import torch
from transformers import HfArgumentParser

from engine.build import BaseModelConfig, build_base_model
from engine.lm_corpus import CorpusConfig, lm_texts
from engine.loading import pick_device


def main(argv: list[str] | None = None) -> None:
    parser = HfArgumentParser([BaseModelConfig, CorpusConfig])
    parser.add_argument("--out", default="data/models/default-base", help="output model directory")
    parser.add_argument("--seed", type=int, default=0, help="random seed (data, init, batches)")
    parser.add_argument("--device", default="cpu",
                        help="cpu | cuda | cuda:N | auto (a GPU when there is one); the same seed draws the "
                             "same batches on any device, the weights differ by rounding")
    model_cfg, corpus_cfg, extra = parser.parse_args_into_dataclasses(args=argv)
    # every mistake at once, before the corpus, the tokenizer or a step: one line naming the options
    problems = model_cfg.problems() + corpus_cfg.problems()
    if not 0 <= extra.seed < 2**32:
        problems.append(f"seed: {extra.seed}; must be from 0 to 4294967295")
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", extra.device):
        problems.append(f"device: {extra.device!r}; must be auto, cpu, cuda or cuda:N")
    elif extra.device.startswith("cuda") and not torch.cuda.is_available():
        problems.append(f"device: {extra.device!r}; no CUDA device is available here (auto picks one when "
                        "there is)")
    if problems:
        parser.error("; ".join(f"--{problem}" for problem in problems))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    texts = lm_texts(corpus_cfg, extra.seed)
    info = build_base_model(
        extra.out,
        texts,
        model_cfg,
        seed=extra.seed,
        device=pick_device(extra.device),
        extra_files={
            "prompt_format.json": corpus_cfg.prompt_format().to_dict(),
            "corpus_config.json": {f.name: getattr(corpus_cfg, f.name) for f in fields(corpus_cfg)},
        },
    )
    size_mb = sum(p.stat().st_size for p in Path(extra.out).iterdir()) / 2**20
    print(json.dumps({**{k: v for k, v in info.items() if k != "config"}, "size_mb": round(size_mb, 2)}))


if __name__ == "__main__":
    main()
