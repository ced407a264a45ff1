#!/usr/bin/env bash
# Data-parallel CPU throughput on one machine: 1 rank × 2 threads against 2 ranks × 1 thread
# (mpirun), the same global batch, cpu-tiny, EMAE K=4 and MAE K=1, through the CLI. Prints the
# median of per-step images/s over the steps after the warm-up (from log.jsonl).
#   bash bench/dist_cpu.sh [steps=25] [global batch=32]
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-25} batch=${2:-32}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
out=$(mktemp -d /tmp/emae-dist-bench.XXXXXX)
trap 'rm -rf "$out"' EXIT
median() {  # median images/s of steps 6.. in a log.jsonl
  node -e "const l=require('fs').readFileSync('$1','utf8').trim().split('\n').slice(5).map(s=>JSON.parse(s).imagesPerSecond).sort((a,b)=>a-b);console.log(l[l.length>>1].toFixed(1))"
}
common="pretrain --preset cpu-tiny --data synthetic:2048 --device cpu --steps $steps --checkpoint-every 0 --no-progress"
echo "| mode | 1 rank × 2 threads (batch $batch) img/s | 2 ranks × 1 thread (batch $((batch / 2)) each) img/s | ratio (2 ranks / 1 rank) |"
echo "|---|---|---|---|"
for parts in 4 1; do
  node --import=tsx lib/cli.ts $common --parts $parts --threads 2 --batch "$batch" --out "$out/one-$parts" > /dev/null
  mpirun -np 2 --bind-to none node --import=tsx lib/cli.ts $common --parts $parts --threads 1 --batch $((batch / 2)) \
    --out "$out/two-$parts" > /dev/null
  a=$(median "$out/one-$parts/log.jsonl") b=$(median "$out/two-$parts/log.jsonl")
  echo "| $([ "$parts" = 4 ] && echo 'EMAE (K=4)' || echo 'MAE (K=1)') | $a | $b | $(node -e "console.log(($b/$a).toFixed(2))") |"
done
