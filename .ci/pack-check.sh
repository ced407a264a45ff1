#!/usr/bin/env bash
# CI: the package as users get it. `npm pack` (its prepack builds the prebuilt binary), then the
# tarball installed into a fresh project with --ignore-scripts (as when npm 11 has not approved
# the install script), and the README's example and `emae info` run with only node, npm, npx and
# sh on PATH: no CMake, compiler or nvcc may be needed.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
work=$(mktemp -d /tmp/emae-pack.XXXXXX)
trap 'rm -rf "$work"' EXIT
fail() { echo "pack-check: $*" >&2; exit 1; }
start=$SECONDS

npm pack --pack-destination "$work"  # shows the prebuild and the file list
tarball=$(echo "$work"/emae-*.tgz)
echo "== $(basename "$tarball"): $(stat -c %s "$tarball") bytes packed, $(tar -xOzf "$tarball" | wc -c) unpacked"
tar -tzf "$tarball" > "$work/files"
for f in dist/index.js dist/cli.js prebuilds/linux-x64/emae.napi.glibc.node prebuilds/linux-x64/libgomp.so.1 \
  CMakeLists.txt native/addon.cc cuda/cuda_backend.cu scripts/build-native.mjs scripts/install.mjs; do
  grep -qx "package/$f" "$work/files" || fail "the tarball lacks $f"
done
! grep -E '^package/(build[^/]*|test|bench|examples|lib|node_modules|cuda/dev)/|\.map$' "$work/files" || fail "the tarball ships the files above"

mkdir "$work/project" && cd "$work/project"
npm init -y >/dev/null && npm pkg set type=module
npm install --ignore-scripts --no-audit --no-fund "$tarball"
pkg=$PWD/node_modules/emae/prebuilds/linux-x64
ldd "$pkg/emae.napi.glibc.node" > "$work/ldd"
! grep libcudart "$work/ldd" || fail "the prebuilt addon needs libcudart.so"
grep -q "libgomp.so.1 => $pkg/libgomp.so.1" "$work/ldd" || fail "the prebuilt addon does not use its own libgomp: $(cat "$work/ldd")"

mkdir "$work/bin"
for t in node npm npx sh; do ln -s "$(command -v $t)" "$work/bin/$t"; done  # npx runs bins through sh
for t in cmake cc gcc g++ c++ clang nvcc make; do
  ! PATH="$work/bin" command -v "$t" >/dev/null || fail "$t is on the restricted PATH"
done
# The README's example, verbatim (its TypeScript is plain JavaScript).
sed -n '/^## Example/,/^## /p' "$repo/README.md" | sed -n '/^```ts$/,/^```$/p' | sed '1d;$d' > example.mjs
PATH="$work/bin" node example.mjs
test -s emae-tiny.safetensors || fail "the example wrote no weights"
PATH="$work/bin" npx emae info | tee info.txt
grep -q "^native addon: $pkg/emae.napi.glibc.node (prebuilt)" info.txt || fail "emae info does not name the prebuilt binary"
echo "== pack and install without a compiler: $((SECONDS - start)) s"
