"""Issue 18: starting the console prints no warning a user cannot act on. Loading the engine (the tiny
model, base + adapter) emits no Python warning and logs nothing at WARNING; bitsandbytes' notice about
the optional Hub kernel is dropped, and only that message."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from engine.loading import peft_wrapping
from engine.quiet import BNB_CPU_LOGGER, BNB_KERNEL_NOTICE


def test_loading_the_engine_warns_nothing(tiny_base_dir: Path, tiny_ft_dir: Path, caplog) -> None:
    from engine import Engine

    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")  # a warning shown once before in this process shows again
        engine = Engine.load(str(tiny_base_dir), adapters={"finetuned": str(tiny_ft_dir)}, device="cpu")
    assert engine.variants == ["base", "finetuned"]
    assert [str(w.message) for w in caught] == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_only_the_hub_kernel_notice_is_dropped(caplog) -> None:
    logger = logging.getLogger(BNB_CPU_LOGGER)
    with caplog.at_level(logging.WARNING, logger=BNB_CPU_LOGGER):
        logger.warning(BNB_KERNEL_NOTICE + ": %s. Please make sure ...", "No module named 'kernels'")
        logger.warning("something else went wrong")
    assert [r.getMessage() for r in caplog.records] == ["something else went wrong"]


def test_peft_wrapping_keeps_other_warnings() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with peft_wrapping():
            warnings.warn("`is_gradient_checkpointing` is deprecated and will be removed in v6.",
                          FutureWarning, stacklevel=1)
            warnings.warn("another deprecation", FutureWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["another deprecation"]


def test_import_engine_alone_installs_the_filter() -> None:
    """In a fresh process, ``import engine`` alone (no torch, no PEFT yet) puts the filter on
    bitsandbytes' logger, so whatever a script imports next, the notice is dropped (before, only
    engine.loading installed it, and scripts that imported PEFT first printed the notice)."""
    import subprocess
    import sys

    code = ("import logging, sys, engine; from engine.quiet import BNB_CPU_LOGGER; "
            "assert 'torch' not in sys.modules; "
            "assert [type(f).__name__ for f in logging.getLogger(BNB_CPU_LOGGER).filters] == "
            "['_DropHubKernelNotice']")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_adapter_loading_drops_only_the_tying_notice() -> None:
    from engine.loading import adapter_loading

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with adapter_loading():
            warnings.warn("You have requested `ensure_weight_tying`, but no tied modules were found in "
                          "the model", UserWarning, stacklevel=1)
            warnings.warn("something else", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["something else"]
