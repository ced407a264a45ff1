#!/usr/bin/env bash
# Packs what a GPU run needs into the git-ignored .device/: this machine's node, the whole
# node_modules (the GPU checks run ava + tsx) less the TypeScript compiler (dist/ is prebuilt),
# and the OpenMP runtime the addon links. See scripts/gpu-check.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .device
grep -qxF '/.device/' .git/info/exclude 2>/dev/null || echo '/.device/' >> .git/info/exclude
[ -s .device/node.xz ] || xz -T2 -6 -c "$(command -v node)" > .device/node.xz
tar --exclude=node_modules/typescript --exclude=node_modules/@types -cJf .device/node_modules.tar.xz node_modules
cp "$(g++ -print-file-name=libgomp.so.1)" .device/
cp build/Release/emae.node .device/emae.node
# the standalone kernel checks (Hopper build; rebuild on the device for another architecture)
for check in gemm_check attention_check classifier_check; do
  if [ -f "cuda/dev/$check.cu" ]; then
    nvcc -std=c++17 -O3 -arch=sm_90 -I. -Inative "cuda/dev/$check.cu" -o ".device/$check"
  fi
done
du -sh .device/*
