"""Dev tool (needs a CUDA GPU): the 4-bit path on CUDA and GPU timings at Qwen2.5-1.5B's shape.

    python scripts/device_check.py --work /tmp/qwen-shape --out runs/device_check.json
    python scripts/device_check.py --tiny --cases 4 --train-steps 3   # CPU dry run of this script

The figures in README "On a GPU" (benchmarks/gpu_check.json) came from ``--parts engine --cases 16
--batch-size 16 --one-by-one 3 --per-token 2 --max-new-tokens 96`` and ``--parts train
--train-steps 20`` on an H200.

No weights can be downloaded on our machines, so the model has Qwen2.5-1.5B-Instruct's config
(28 layers, hidden 1536, GQA 12/2 heads, vocab 151,936) with random weights, and the embedded
tokenizer (its prompts: ~1,070 tokens in the full policy format, a little above Qwen's own
tokenizer). A LoRA r=16 adapter on all linear layers, with random non-zero B, sits on top. The
answers are nonsense; the timings, memory and the code path are those of the real model:

1. ``Engine.load`` in bf16 and in NF4 4-bit on CUDA: load time, GPU memory, cases/s one at a time
   and batched (constrained, greedy), seconds per generated token constrained vs unconstrained,
   JSON validity (the grammar must hold even for a random model).
2. ``scripts/train_qlora_sft.py`` (the bundled QLoRA script, NF4 double-quant, bf16) for a few steps
   on the same shape: seconds per step, that the loss is finite and falls, and the artefacts.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine import Engine, GenerationSettings  # noqa: E402
from engine.metrics import load_rows  # noqa: E402

QWEN25_15B = dict(
    vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
    num_attention_heads=12, num_key_value_heads=2, max_position_embeddings=32768,
    rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=True,
)


TINY = dict(QWEN25_15B, vocab_size=1265, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2)  # --tiny: a CPU dry run of this script
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def build_shape(work: Path, shape: dict) -> tuple[Path, Path]:
    """A random Qwen2.5-1.5B-shaped model (bf16) + a random r=16 adapter; out: (model dir, adapter dir)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    model_dir, adapter_dir = work / "model", work / "adapter"
    if (adapter_dir / "adapter_config.json").is_file():
        return model_dir, adapter_dir
    tok_src = REPO / "data" / "models" / "default-base"
    config = AutoConfig.for_model("qwen2", **shape)
    config.pad_token_id, config.eos_token_id = 0, 2
    torch.manual_seed(0)
    with torch.device(DEVICE):
        dtype = torch.bfloat16 if DEVICE == "cuda" else torch.float32
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.save_pretrained(model_dir)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(tok_src / name, model_dir / name)
    lora = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", init_lora_weights=False,
                      task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, lora)
    peft_model.save_pretrained(adapter_dir)
    cfg_path = adapter_dir / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["base_model_name_or_path"] = str(model_dir)
    cfg_path.write_text(json.dumps(cfg))
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(tok_src / name, adapter_dir / name)
    del model, peft_model
    _empty_cache()
    return model_dir, adapter_dir


def _empty_cache() -> None:
    if DEVICE == "cuda":
        torch.cuda.empty_cache()


def _sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def _gib(n: int) -> float:
    return round(n / 2**30, 3)


def time_engine(adapter_dir: Path, quantize: str, cases: list, batch_size: int, one_by_one: int,
                per_token: int, max_new_tokens: int) -> dict:
    if DEVICE == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    engine = Engine.load(str(adapter_dir), device=DEVICE, quantize=quantize,
                         settings=GenerationSettings(max_new_tokens=max_new_tokens))
    load_s = time.perf_counter() - t0
    mem_loaded = torch.cuda.memory_allocated() if DEVICE == "cuda" else 0
    engine.decide_many(cases[:2], variant="finetuned", batch_size=2)  # warm-up (kernels, grammar)

    def run(n: int, bs: int, constrained: bool, variant: str = "finetuned") -> dict:
        _sync()
        t = time.perf_counter()
        answers = engine.decide_many(cases[:n], variant=variant, batch_size=bs, constrained=constrained)
        _sync()
        wall = time.perf_counter() - t
        tokens = sum(a.output_tokens for a in answers)
        return {"cases": n, "batch_size": bs, "wall_s": round(wall, 3), "cases_per_s": round(n / wall, 3),
                "output_tokens": tokens, "s_per_token": round(wall / max(tokens, 1), 5),
                "json_ok": sum(a.status == "ok" for a in answers),
                "truncated": sum(a.status == "truncated" for a in answers)}

    single = run(one_by_one, 1, True)
    batched = run(len(cases), batch_size, True)
    free = run(per_token, 1, False)
    constrained = run(per_token, 1, True)
    base_single = run(per_token, 1, True, variant="base")
    out = {
        "quantize": quantize,
        "linear4bit_modules": engine.figures()["linear4bit_modules"],
        "load_s": round(load_s, 2), "gpu_mem_loaded_gib": _gib(mem_loaded),
        "gpu_mem_peak_gib": _gib(torch.cuda.max_memory_allocated()) if DEVICE == "cuda" else 0,
        "one_by_one": single, "batched": batched,
        "batched_speedup": round(batched["cases_per_s"] / single["cases_per_s"], 2),
        "unconstrained_per_token": free, "constrained_per_token": constrained,
        "constrained_cost_per_token": round(constrained["s_per_token"] / free["s_per_token"], 3),
        "base_variant_one_by_one": base_single,
    }
    return out  # the engine goes with this frame; main() then empties the CUDA cache


def train_steps(model_dir: Path, work: Path, steps: int, max_length: int) -> dict:
    """The bundled QLoRA script, NF4 on CUDA, ``steps`` steps at Qwen's shape."""
    out_dir = work / "qlora-run"
    cmd = [sys.executable, str(REPO / "scripts" / "train_qlora_sft.py"), "--model", str(model_dir),
           "--dataset", str(REPO / "data" / "generated" / "train.jsonl"),
           "--eval_dataset", str(REPO / "data" / "generated" / "validation.jsonl"),
           "--max_eval_examples", "16", "--output_dir", str(out_dir), "--quantization", "nf4",
           "--max_steps", str(steps), "--per_device_train_batch_size", "4", "--max_length", str(max_length),
           "--logging_steps", "5", "--learning_rate", "2e-4"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - t0
    result = {"cmd": " ".join(cmd[1:]), "rc": proc.returncode, "wall_s": round(wall, 1),
              "stderr_tail": proc.stderr[-3000:]}
    metrics = out_dir / "metrics.json"
    if metrics.is_file():
        result["metrics"] = json.loads(metrics.read_text())
        result["artefacts"] = sorted(p.name for p in out_dir.iterdir())
    return result


def _write(path: Path, report: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, default=Path("/tmp/qwen-shape"))
    ap.add_argument("--out", type=Path, default=Path("runs/device_check.json"))
    ap.add_argument("--cases", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--one-by-one", type=int, default=8)
    ap.add_argument("--per-token", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--train-steps", type=int, default=20)
    ap.add_argument("--train-max-length", type=int, default=1600)
    ap.add_argument("--parts", nargs="+", choices=("engine", "train"), default=["engine", "train"])
    ap.add_argument("--tiny", action="store_true", help="a tiny random shape: a CPU dry run of this script")
    args = ap.parse_args()
    shape = TINY if args.tiny else QWEN25_15B
    report: dict = {"device": torch.cuda.get_device_name(0) if DEVICE == "cuda" else "cpu",
                    "torch": torch.__version__, "shape": shape}
    t0 = time.perf_counter()
    model_dir, adapter_dir = build_shape(args.work, shape)
    report["build_s"] = round(time.perf_counter() - t0, 1)
    _write(args.out, report)
    cases = [case for case, _ in load_rows(REPO / "data" / "generated" / "validation.jsonl", args.cases)]
    for quantize in ("none", "nf4") if "engine" in args.parts else ():
        try:
            report[f"engine_{quantize}"] = time_engine(adapter_dir, quantize, cases, args.batch_size,
                                                       args.one_by_one, args.per_token, args.max_new_tokens)
        except Exception as exc:  # noqa: BLE001 - report and go on to the next check
            report[f"engine_{quantize}"] = {"error": f"{type(exc).__name__}: {exc}"}
        _empty_cache()
        print(json.dumps({quantize: report[f"engine_{quantize}"]}, indent=1), flush=True)
        _write(args.out, report)  # each part as it ends: a run stopped at its time limit keeps it
    if "train" in args.parts:
        report["qlora_train"] = train_steps(model_dir, args.work, args.train_steps, args.train_max_length)
    _write(args.out, report)
    print(json.dumps({k: v for k, v in report.items() if k != "qlora_train"}, indent=1))
    if "qlora_train" in report:
        print(json.dumps({k: v for k, v in report["qlora_train"].items() if k != "stderr_tail"}, indent=1))


if __name__ == "__main__":
    main()
