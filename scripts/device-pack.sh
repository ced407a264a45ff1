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
# the binaries travel xz-compressed (gpu-check.sh unpacks them): the checks shrink 7-15x (their
# sm_90/sm_90a code and line tables), and uncompressed the pack was over the 64 MiB a run carries
rm -f .device/emae.node .device/*_check
xz -T2 -6 -c build/Release/emae.node > .device/emae.node.xz
# the MPI plugin the addon loads from its own folder (built only where CMake found MPI)
[ -f build/Release/emae_mpi.so ] && cp build/Release/emae_mpi.so .device/
# the commit the results are recorded against (gpu-check.sh exports it as EMAE_COMMIT)
echo "$(git rev-parse HEAD)$(git diff --quiet HEAD -- . ':!.device' || echo -dirty)" > .device/commit
# the standalone kernel checks (Hopper build, sm_90 and sm_90a for the wgmma GEMM; rebuild on the
# device for another architecture)
for check in gemm_check attention_check classifier_check elementwise_bf16_check; do
  if [ -f "cuda/dev/$check.cu" ]; then
    nvcc -std=c++17 -O3 --expt-relaxed-constexpr -gencode=arch=compute_90,code=sm_90 \
      -gencode=arch=compute_90a,code=sm_90a -lineinfo -I. -Inative "cuda/dev/$check.cu" -o ".device/$check"
    xz -T2 -6 -f ".device/$check"  # → .device/$check.xz
  fi
done
# the addon must carry the Hopper GEMM for EMAE_CUDA_GEMM=sm90
grep -q 'EMAE_CUDA_ARCHITECTURES:STRING=.*90a' build/CMakeCache.txt ||
  echo "device-pack: build/ was configured without 90a: EMAE_CUDA_ARCHITECTURES='80;90;90a' npm run build:native" >&2
du -sh .device/*
# what a run carries: the tracked and untracked-not-ignored files, and .device and dist (the device
# tool refuses more than 64 MiB together); a margin is kept for the results of a session's edits
travel=$(( $( (git ls-files -z --cached --others --exclude-standard; find .device dist -type f -print0) |
  du -cb --files0-from=- | tail -1 | cut -f1) ))
echo "device-pack: a run with carry [.device, dist] takes $((travel / 1048576)) MiB of the 64 MiB"
if [ "$travel" -gt $((60 * 1048576)) ]; then
  echo "device-pack: over 60 MiB: leave a check out, or carry less" >&2
  exit 1
fi
