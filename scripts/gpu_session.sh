#!/usr/bin/env bash
# Dev tool: a lent GPU's checks for issues 20 and 21 in one command, each part under its own time limit.
#
#     OUT=runs/gpu_session bash scripts/gpu_session.sh        # ~9 min on an H200
#
# Wheels in .whl/ (the packages the GPU image lacks: transformers 5.24, peft, llguidance, bitsandbytes,
# trl, datasets, fastapi, uvicorn, openai, ...) are installed to /tmp/site first when the folder exists
# (WHEELS=DIR for another folder, WHEELS=none for none).
# Parts, in the order of what they are worth:
#   1. issue 21: scripts/device_check.py --parts engine (baseline, bf16 and NF4 fast path, 32-answer match)
#   2. issue 20: engine.serve on CUDA, then scripts/evaluate.py through it (served-ft) and locally
#      (default-ft) on the same 64 eval cases: the same figures and raw answers?
#   3. issue 20: accelerate launch, one process, QLoRA (NF4) at Qwen2.5-1.5B's shape on CUDA with
#      gradient checkpointing: the per-rank device map on a GPU
#   4. issue 21: scripts/device_check.py --parts compiled (static KV cache, transformers' compiled decoding),
#      in bf16 and NF4 (bf16 is written first; since NF4's fine-tuned variant runs from a plain merged copy,
#      NF4 compiles too, ~80-100 s more: COMPILED_S=360 to be sure of both)
#   5. issue 20 (only when PARTS names it): FSDP + QLoRA, configs/accelerate/fsdp-qlora.yaml, one process
#      per GPU at Qwen2.5-1.5B's shape; fsdp_metrics.json's "sharding" says whether FSDP held the weights
#   6. issue 21 (only when PARTS names it): scripts/device_check.py --parts profile, where a batch of 64
#      spends its time in the compiled bf16 mode (prefill, free and constrained steps, the grammar's
#      hold-up, the profiler's top operations); ~2-3 min, most of it compiling
# STATIC_PREFIX=1 adds --static-prefix to the compiled and profile parts (FastPath.static_prefix: the
# system turns copied from the prefix cache into the static cache; CPU-tested, never yet timed on a GPU).
# PARTS="serve train compiled" runs a subset, in this order. Everything lands in $OUT; a part stopped at
# its limit keeps what it wrote.
#
#     bash scripts/gpu_session.sh wheels        # HERE, before the GPU run: fills .whl/ (~32 MB)
#
# downloads those wheels for the GPU image's Python 3.12 (pinned to what was run on 2026-11-30) and
# repacks bitsandbytes with its CUDA 13 libraries only, so that the tree fits the 64 MiB that travels.
set -u
if [ "${1:-}" = wheels ]; then
    mkdir -p .whl
    for p in transformers==5.24.0 peft==0.21.2 llguidance==1.9.1 pydantic==2.14.4 pydantic-core==2.50.5 \
            annotated-types typing-inspection bitsandbytes==0.50.2 trl==1.16.0 datasets==5.2.0 dill==0.4.1 \
            multiprocess==0.70.19 fastapi==0.165.0 starlette==1.10.0 uvicorn==0.54.0 openai==3.57.0 \
            jiter==0.19.0 sniffio==1.3.1 httpx2==2.16.2 httpcore2==2.16.2 truststore==0.10.5 \
            opentelemetry-api==1.45.2 anyio==4.16.0 h11==0.16.0 idna==3.20 typing-extensions; do
        python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_24_x86_64 \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_31_x86_64 -d .whl "$p" || exit 1
    done
    python3 - <<'PY'
import glob, os, re, zipfile
src = glob.glob(".whl/bitsandbytes-*.whl")[0]
drop = re.compile(r"bitsandbytes/libbitsandbytes_(cuda1(18|21|24|26|28)|rocm\d+|xpu\d+)\.so")
with zipfile.ZipFile(src) as zin, zipfile.ZipFile(src + ".tmp", "w", zipfile.ZIP_DEFLATED) as zout:
    for item in zin.infolist():
        if drop.fullmatch(item.filename):
            continue
        data = zin.read(item.filename)
        if item.filename.endswith("RECORD"):  # pip reads every row: no empty ones, none for dropped files
            rows = [r for r in data.split(b"\n") if r.strip() and not drop.match(r.split(b",")[0].decode())]
            data = b"\n".join(rows) + b"\n"
        zout.writestr(item, data)
os.replace(src + ".tmp", src)
PY
    du -sh .whl
    exit 0
fi
OUT=${OUT:-runs/gpu_session}
mkdir -p "$OUT"
source scripts/gpu_wheels.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
start=$SECONDS
stamp() { echo "== $1 at $((SECONDS - start)) s" | tee -a "$OUT/parts.txt"; }

PARTS=" ${PARTS:-engine serve train compiled} "
if [[ $PARTS == *" engine "* ]]; then
stamp "engine"
timeout "${ENGINE_S:-320}" python3 scripts/device_check.py --parts engine --one-by-one 6 --per-token 3 \
    --out "$OUT/gpu_check.json" > "$OUT/engine.log" 2>&1
echo "rc $?" >> "$OUT/parts.txt"
fi

if [[ $PARTS == *" serve "* ]]; then
stamp "serve"
python3 -m engine.serve --model default-ft --device "${SERVE_DEVICE:-cuda}" --port 8011 > "$OUT/serve.log" 2>&1 &
server=$!
for _ in $(seq 60); do
    python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8011/v1/models', timeout=2)" \
        2>/dev/null && break
    sleep 1
done
for model in served-ft default-ft; do
    timeout 60 python3 scripts/evaluate.py --model "$model" --variant both --dataset data/generated/eval.jsonl \
        --max-examples "${EVAL_N:-64}" --batch-size 16 --max-new-tokens 256 --out "runs/eval-$model" > "$OUT/eval-$model.log" 2>&1
    echo "rc $? ($model)" >> "$OUT/parts.txt"
done
kill $server
python3 - "$OUT/serve_vs_local.json" <<'EOF' >> "$OUT/parts.txt" 2>&1
import json, sys
def load(name):
    summary = json.load(open(f"runs/eval-{name}/summary.json"))
    answers = [json.loads(line) for line in open(f"runs/eval-{name}/predictions.jsonl")]
    return summary, answers
(s, a), (l, b) = load("served-ft"), load("default-ft")
keys = ("decision_accuracy", "violation_rate", "json_validity", "throughput_cases_per_s", "latency_p50_s")
out = {v: {"served": {k: s["variants"][v][k] for k in keys}, "local": {k: l["variants"][v][k] for k in keys}}
       for v in s["variants"]}
raw = lambda r: (r["case_id"], r["variant"], r["raw_text"])
out["same_raw_rows"] = f"{sum(raw(x) == raw(y) for x, y in zip(a, b))}/{len(a)}"
json.dump(out, open(sys.argv[1], "w"), indent=1)
print(json.dumps(out))
EOF
fi

if [[ $PARTS == *" train "* ]]; then
stamp "train"
python3 -c "import sys; sys.path.insert(0, 'scripts'); import device_check as d; \
d.build_shape(d.Path('/tmp/qwen-shape'), d.QWEN25_15B)" >> "$OUT/parts.txt" 2>&1
timeout "${TRAIN_S:-100}" python3 -m accelerate.commands.launch --num_processes 1 --num_machines 1 \
    --mixed_precision no --dynamo_backend no scripts/train_qlora_sft.py --model /tmp/qwen-shape/model \
    --dataset data/generated/train.jsonl --eval_dataset data/generated/validation.jsonl --max_eval_examples 16 \
    --output_dir /tmp/qlora-accelerate --quantization nf4 --max_steps 12 --per_device_train_batch_size 4 \
    --max_length 1600 --logging_steps 3 --learning_rate 2e-4 --gradient_checkpointing true \
    > "$OUT/train.log" 2>&1
echo "rc $?" >> "$OUT/parts.txt"
cp /tmp/qlora-accelerate/metrics.json "$OUT/train_metrics.json" 2>/dev/null
ls /tmp/qlora-accelerate >> "$OUT/parts.txt" 2>&1
fi

if [[ $PARTS == *" fsdp "* ]]; then  # not in the default set: PARTS="fsdp" (or "compiled fsdp")
stamp "fsdp"
python3 -c "import sys; sys.path.insert(0, 'scripts'); import device_check as d; \
d.build_shape(d.Path('/tmp/qwen-shape'), d.QWEN25_15B)" >> "$OUT/parts.txt" 2>&1
# FSDP + QLoRA through configs/accelerate/fsdp-qlora.yaml on the GPUs there are (one is enough to run
# the path: FSDP2 wrapping, 4-bit weights stored in bf16, the adapter gathered to save); metrics.json's
# "sharding" says whether FSDP held the weights (mode fsdp, sharded_tensors > 0)
timeout "${FSDP_S:-150}" python3 -m accelerate.commands.launch --config_file configs/accelerate/fsdp-qlora.yaml \
    --num_processes "$(nvidia-smi -L | wc -l)" scripts/train_qlora_sft.py --model /tmp/qwen-shape/model \
    --dataset data/generated/train.jsonl --eval_dataset none --output_dir /tmp/qlora-fsdp --quantization nf4 \
    --precision bf16 --max_steps 12 --per_device_train_batch_size 4 --max_length 1600 --logging_steps 3 \
    --learning_rate 2e-4 --gradient_checkpointing true > "$OUT/fsdp.log" 2>&1
echo "rc $? (fsdp)" >> "$OUT/parts.txt"
cp /tmp/qlora-fsdp/metrics.json "$OUT/fsdp_metrics.json" 2>/dev/null
ls /tmp/qlora-fsdp >> "$OUT/parts.txt" 2>&1
fi

if [[ $PARTS == *" compiled "* ]]; then
stamp "compiled"
timeout "${COMPILED_S:-260}" python3 scripts/device_check.py --parts compiled --one-by-one 6 --per-token 3 \
    ${STATIC_PREFIX:+--static-prefix} --out "$OUT/gpu_check_compiled.json" > "$OUT/compiled.log" 2>&1
echo "rc $?" >> "$OUT/parts.txt"
fi
if [[ $PARTS == *" profile "* ]]; then  # not in the default set: PARTS="profile" (or "compiled profile")
stamp "profile"
timeout "${PROFILE_S:-240}" python3 scripts/device_check.py --parts profile ${STATIC_PREFIX:+--static-prefix} --out "$OUT/gpu_profile.json" \
    > "$OUT/profile.log" 2>&1
echo "rc $?" >> "$OUT/parts.txt"
fi
stamp "done"
