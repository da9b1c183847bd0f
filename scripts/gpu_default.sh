#!/usr/bin/env bash
# Dev tool (issue 15): rebuild the embedded default on a lent GPU in one command: two bases, four
# adapters, the choice on validation by the rule in benchmarks/issue15_targets.md ("Stage 14"), then
# the chosen one on eval and stress (reporting only).
#
#     bash scripts/gpu_default.sh pack          # HERE: the training pools, xz-compressed, into .gpu_data/
#     OUT=runs/gpu_default bash scripts/gpu_default.sh     # on the GPU (~8 min on an H200)
#
# Every step is one of the project's own command lines, which run the same on a CPU (only slower: see
# the README's "Measured quality" for what it would cost there):
#   1. scripts/build_base_model.py, twice in parallel: the base (BASE_ARGS) reading the case prompts in
#      the tiny format, without and with the policy's numbers beside the case's (policy_facts);
#   2. scripts/train_qlora_sft.py, four runs in parallel: each base x learning rate 1e-3 and 2e-3, the
#      whole answer (max_length 512), 1.5 epochs over ~136k pool rows (SFT_ARGS);
#   3. scripts/evaluate.py on both validation sets for each adapter (fp32, as on the CPU), 512 new tokens;
#   4. the rule picks one; it alone is evaluated on eval.jsonl and stress.jsonl.
# $OUT gets: results.json (every figure), logs.tgz (logs, summaries, the chosen one's predictions),
# model.tar.NN (the chosen base and adapter, in pieces under 16 MiB: cat model.tar.* | tar x).
set -u
POOLS=${POOLS:-"ind-s72/pool-common ind-s72/pool-rare ind-s74/pool-common ind-s74/pool-rare ind-s76/pool-common \
ind-s76/pool-rare ind-s76/pool-twins rec-s73/train rec-s75/train rec-s77/train"}
WEIGHTS=${WEIGHTS:-"[1.0, 2.0, 1.0, 2.0, 1.0, 2.0, 1.0, 1.0, 1.0, 1.0]"}  # the rare chains' rows twice, as stages 5-10
if [ "${1:-}" = pack ]; then
    mkdir -p .gpu_data
    for p in $POOLS; do xz -T2 -6 -c "runs/data/$p.jsonl" > ".gpu_data/${p//\//__}.jsonl.xz" || exit 1; done
    du -sh .gpu_data
    exit 0
fi
OUT=${OUT:-runs/gpu_default}
W=${WORK:-runs/gd}
mkdir -p "$OUT" "$W"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1  # fp32 weights, TF32 matrix maths on the GPU
if [ -d "${WHEELS:-.whl}" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        "${WHEELS:-.whl}"/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$OUT/gpu.txt" 2>&1
start=$SECONDS
stamp() { echo "== $1 at $((SECONDS - start)) s" | tee -a "$OUT/parts.txt"; }
for f in .gpu_data/*.jsonl.xz; do
    [ -e "$f" ] || break
    name=$(basename "$f" .jsonl.xz); mkdir -p "runs/data/${name%%__*}"
    python3 -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'))" \
        "$f" "runs/data/${name//__//}.jsonl" &
done
wait
HELD="data/generated/validation.jsonl data/generated/validation_independent.jsonl data/generated/eval.jsonl \
data/generated/stress.jsonl"
BASE_ARGS=${BASE_ARGS:-"--vocab_size 3000 --hidden_size 320 --num_layers 6 --num_heads 10 --num_kv_heads 2 \
--intermediate_size 864 --block_size 256 --batch_size 64 --steps 3000 --lr 0.002 --n_cases 40000 --messages true"}
SFT_ARGS=${SFT_ARGS:-""}

stamp "bases"
for facts in false true; do
    # shellcheck disable=SC2086
    timeout "${BASE_S:-240}" python3 scripts/build_base_model.py --out "$W/base-facts-$facts" --seed 0 \
        --device auto $BASE_ARGS --prompt_policy_facts $facts --exclude $HELD > "$W/base-facts-$facts.log" 2>&1 &
done
wait
tail -c 300 "$W"/base-facts-*/build_info.json >> "$OUT/parts.txt" 2>&1

stamp "adapters"
datasets=$(for p in $POOLS; do printf 'runs/data/%s.jsonl, ' "$p"; done)
for facts in false true; do
    for lr in 0.001 0.002; do
        name="ft-facts-$facts-lr$lr"
        cat > "$W/$name.yaml" <<EOF
model: $W/base-facts-$facts
dataset: [${datasets%, }]
mix_weights: $WEIGHTS
eval_dataset: data/generated/validation_independent.jsonl
frozen_sets: [data/generated/eval.jsonl, data/generated/stress.jsonl, data/generated/validation_independent.jsonl, data/generated/validation.jsonl]
output_dir: $W/$name
lora_r: 16
lora_alpha: 32
lora_dropout: 0.05
lora_target_modules: all-linear
quantization: none
precision: fp32
learning_rate: $lr
lr_scheduler_type: cosine
warmup_ratio: 0.03
num_train_epochs: 1.5
per_device_train_batch_size: 128
per_device_eval_batch_size: 128
max_length: 512
decision_loss_weight: 2.0
seed: 21
logging_steps: 100
dataset_num_proc: 4
EOF
        # shellcheck disable=SC2086
        timeout "${SFT_S:-300}" python3 scripts/train_qlora_sft.py --config "$W/$name.yaml" $SFT_ARGS \
            > "$W/$name.log" 2>&1 &
    done
done
wait

stamp "validation"
evaluate() {  # adapter dir, dataset name
    timeout "${EVAL_S:-100}" python3 scripts/evaluate.py --model "$1" --variant finetuned --dtype fp32 \
        --dataset "data/generated/$2.jsonl" --batch-size 64 --max-new-tokens 512 --out "$1-$2" ${EVAL_ARGS:-} \
        > "$1-$2.log" 2>&1
}
for a in "$W"/ft-*/; do
    a=${a%/}
    [ -f "$a/adapter_model.safetensors" ] || continue
    for set in validation validation_independent; do evaluate "$a" "$set" & done
done
wait

stamp "choice"
python3 - "$W" "$OUT/choice.json" "${MIN_REFS:-0.8}" "${MIN_JSON:-1.0}" <<'EOF' | tee -a "$OUT/parts.txt"
# The rule of benchmarks/issue15_targets.md, "Stage 14": on both validation sets together (600 cases),
# eligible with JSON validity 100% and policy_refs exact >= 80%; then accuracy, fewer hard violations,
# text check.
import glob, json, sys
work, out = sys.argv[1], sys.argv[2]
min_refs, min_json = float(sys.argv[3]), float(sys.argv[4])  # lower only in a dry run
rows = []
for adapter in sorted(glob.glob(f"{work}/ft-*/adapter_model.safetensors")):
    a = adapter.rsplit("/", 1)[0]
    try:
        parts = [json.load(open(f"{a}-{s}/summary.json"))["variants"]["finetuned"]
                 for s in ("validation", "validation_independent")]
    except OSError:
        continue
    n = sum(p["n"] for p in parts)
    avg = lambda k: sum(p[k] * p["n"] for p in parts) / n
    rows.append({"adapter": a, "n": n, "accuracy": avg("decision_accuracy"),
                 "hard_violations": round(avg("violation_rate") * n), "json_validity": avg("json_validity"),
                 "refs_exact": avg("policy_refs_exact"), "next_action": avg("next_action_match"),
                 "text_check": avg("text_check"), "mean_output_tokens": avg("mean_output_tokens")})
eligible = [r for r in rows if r["json_validity"] >= min_json and r["refs_exact"] >= min_refs]
eligible.sort(key=lambda r: (-r["accuracy"], r["hard_violations"], -r["text_check"]))
choice = {"candidates": rows, "chosen": eligible[0]["adapter"] if eligible else None}
json.dump(choice, open(out, "w"), indent=2)
for r in rows:
    print({k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()})
print("chosen:", choice["chosen"])
print(choice["chosen"] or "", file=open(f"{work}/chosen", "w"))
EOF
chosen=$(cat "$W/chosen" 2>/dev/null)
if [ -n "$chosen" ]; then
    stamp "eval and stress"
    for set in eval stress; do evaluate "$chosen" "$set" & done
    wait
    base=$(python3 -c "import json; print(json.load(open('$chosen/run_config.json'))['model'])" 2>/dev/null \
           || echo "$W/base-facts-false")
    tar cf "$W/model.tar" --exclude="checkpoint-*" "$base" "$chosen" && split -b 15M -d "$W/model.tar" "$OUT/model.tar."
fi
stamp "pack"
python3 - "$W" "$OUT/results.json" <<'EOF'
import glob, json, sys
work, out = sys.argv[1], sys.argv[2]
res = {"builds": {p: json.load(open(p)) for p in glob.glob(f"{work}/base-*/build_info.json")},
       "training": {p: json.load(open(p)) for p in glob.glob(f"{work}/ft-*/metrics.json")},
       "evaluations": {p: json.load(open(p)) for p in glob.glob(f"{work}/ft-*-*/summary.json")}}
json.dump(res, open(out, "w"), indent=1)
EOF
cp "$OUT/parts.txt" "$W/" 2>/dev/null
tar czf "$OUT/logs.tgz" --exclude='*.safetensors' --exclude='checkpoint-*' --exclude='*.png' "$W"/*.log \
    "$W"/*.yaml "$W"/base-*/*.json "$W"/ft-*/*.json "$W"/ft-*/*.log "$W"/ft-*-*/ 2>/dev/null
stamp "done"
