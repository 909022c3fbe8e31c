#!/usr/bin/env bash
# Every paper benchmark in turn, then the comparison table (eval/collect_results.py).
# Judge-based benchmarks (LLaVA-in-the-Wild, MM-Vet) run only when OPENAI_API_KEY is set.
# usage: eval/all.sh CHECKPOINT
set -euo pipefail
here=$(dirname "$0")
model=${1:?usage: $0 CHECKPOINT}
for bench in vqav2 vizwiz sqa pope mmbench; do
    "$here/$bench.sh" "$model"
done
if [[ -n "${OPENAI_API_KEY:-}" ]]; then
    "$here/llava_wild.sh" "$model"
    "$here/mmvet.sh" "$model"
else
    echo "OPENAI_API_KEY not set: skipping the judge-based LLaVA-in-the-Wild and MM-Vet" >&2
fi
out=${OUTPUT:-eval_results/$(basename "$model")}
"${PYTHON:-python}" "$here/collect_results.py" "$out" --output "$out/table4.md"
