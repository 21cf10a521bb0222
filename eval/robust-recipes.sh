#!/usr/bin/env bash
# Chooses the adversarial fine-tuning recipe of `safe-robust` on held-out rows 96-191 of eval/toy-visu/test.jsonl
# (the README's table reports rows 0-95). Each candidate is `safe` trained further with `finetune --adversarial`;
# each is attacked on the held-out rows as the table's columns are, and the verdict is printed at the end.
# Resumable: every step leaves its output under runs/recipes and is skipped when that output exists.
#   bash eval/robust-recipes.sh            (about an hour of CPU time on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
R=runs/recipes
mkdir -p "$R"
cli() { node --import tsx src/cli/main.ts "$@"; }
ROWS=(--targets eval/toy-visu/test.jsonl --skip 96 --limit 96)
E=(--classifier eval/classifiers/toy-shapes.json --steps 25 --guidance 5 --scheduler pndm --seed 0)

# name|finetune options beyond the common ones
CANDIDATES=(
  "every25-50|--steps 50 --adv-every 25 --adv-captions 8"
  "every25-100|--steps 100 --adv-every 25 --adv-captions 16"
  "every10-50|--steps 50 --adv-every 10 --adv-captions 8"
)
names=()
for c in "${CANDIDATES[@]}"; do
  name=${c%%|*}
  names+=("$name")
  if [ ! -f "$R/$name/model.safetensors" ]; then
    # shellcheck disable=SC2086
    cli finetune --clip weights/toy-clip --init weights/toy-safe-clip --data eval/toy-visu/train.jsonl \
      --out "$R/$name" --mode text --batch 64 --lr 1e-4 --seed 0 --hidden-weight 3 \
      --adversarial --adv-budget 8 --adv-batch 64 ${c#*|}
  fi
done

# A manifest holding the toy pipeline's encoders and the candidates.
node -e '
const fs = require("fs"), path = require("path");
const m = JSON.parse(fs.readFileSync("pipelines/default.json", "utf8"));
const toy = m.pipelines.toy;
const abs = (p) => path.resolve("pipelines", p);
toy.path = abs(toy.path);
toy.safety.classifier = abs(toy.safety.classifier);
for (const e of Object.values(toy.encoders)) e.path = abs(e.path);
for (const n of process.argv.slice(1)) toy.encoders[n] = { path: path.resolve("runs/recipes", n), safe_clip: true };
m.pipelines = { toy };
fs.writeFileSync("runs/recipes/manifest.json", JSON.stringify(m, null, 2));
' "${names[@]}"
M=(--manifest "$R/manifest.json")

attack() { # method encoder
  [ -f "$R/attack/$1-$2.done" ] && return
  cli attack --method "$1" --encoder "$2" "${M[@]}" "${ROWS[@]}" --out "$R/attack/$1-$2.csv"
  touch "$R/attack/$1-$2.done"
}
mkdir -p "$R/attack" "$R/asr"
attack ring-a-bell original
ALL=(safe "${names[@]}")
for e in "${ALL[@]}"; do
  attack gcg "$e"
  attack ring-a-bell "$e"
done

list=$(IFS=,; echo "${ALL[*]}")
cli eval --prompts eval/toy-visu/test.jsonl --skip 96 --limit 96 --encoders "original,$list" "${M[@]}" "${E[@]}" \
  --out "$R/plain"
cli eval --prompts "$R/attack/ring-a-bell-original.csv" --encoders "$list" "${M[@]}" "${E[@]}" --out "$R/asr/transfer"
for e in "${ALL[@]}"; do
  for m in gcg ring-a-bell; do
    cli eval --prompts "$R/attack/$m-$e.csv" --encoders "$e" "${M[@]}" "${E[@]}" --out "$R/asr/$m-$e"
  done
done
node --import tsx eval/robust-recipes-table.ts "$R" original "${ALL[@]}"
