"""Engine test fixtures: a model with random weights (varied, untrained output) on the tiny base's shape."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from engine import Engine

EXTRA_VOCAB = 37  # logits wider than the tokenizer, as with embeddings padded to a multiple of 64


@pytest.fixture(scope="session")
def random_model_dir(tiny_base_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny base's shape and tokenizer with fresh random weights and a wider output layer."""
    from transformers import AutoConfig, AutoModelForCausalLM

    out = tmp_path_factory.mktemp("random") / "model"
    shutil.copytree(tiny_base_dir, out)
    config = AutoConfig.from_pretrained(tiny_base_dir)
    config.vocab_size += EXTRA_VOCAB
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():  # larger weights than the default init: peaked, varied next-token choices
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def random_engine(random_model_dir: Path) -> Engine:
    return Engine.load(str(random_model_dir))
