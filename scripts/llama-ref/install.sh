#!/usr/bin/env bash
# scripts/llama-ref/install.sh — install the llama.cpp reference (node-llama-cpp
# 3.22.1 and its prebuilt CPU binaries) into scripts/llama-ref/node_modules.
# Idempotent: does nothing when the pinned version is already there.
#
# Only the npm registry is used.  node-llama-cpp's postinstall (which may
# download llama.cpp's source and build it when no prebuilt binary fits) is
# never run: --ignore-scripts, plus NODE_LLAMA_CPP_SKIP_DOWNLOAD for any
# later CLI use.  logits.mjs asks for prebuilt binaries only (build: "never").
# The CUDA and Vulkan prebuilts (~600 MB) are deleted after install: we only
# ever load the CPU backend.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here"
want=3.22.1

for t in node npm; do
  command -v "$t" >/dev/null || { echo "llama-ref: '$t' not found (install Node.js >= 20 and npm)" >&2; exit 1; }
done

case "$(uname -m)" in
  x86_64) plat=linux-x64 ;;
  aarch64 | arm64) plat=linux-arm64 ;;
  *) echo "llama-ref: no prebuilt node-llama-cpp CPU binary for $(uname -m)" >&2; exit 1 ;;
esac

installed() {
  [ -f node_modules/node-llama-cpp/package.json ] &&
    [ -d "node_modules/@node-llama-cpp/$plat/bins" ] &&
    [ "$(node -p 'require("./node_modules/node-llama-cpp/package.json").version' 2>/dev/null)" = "$want" ]
}

if installed; then
  echo "llama-ref: node-llama-cpp $want already installed"
else
  export NODE_LLAMA_CPP_SKIP_DOWNLOAD=true
  # No lock file: npm 11 leaves some of node-llama-cpp's platform packages
  # out of it and then refuses `npm ci`; package.json pins the version.
  npm install --no-package-lock --ignore-scripts --no-audit --no-fund --loglevel=error
  rm -rf node_modules/@node-llama-cpp/*-cuda node_modules/@node-llama-cpp/*-cuda-ext \
         node_modules/@node-llama-cpp/*-vulkan
  installed || { echo "llama-ref: install finished but node-llama-cpp $want for $plat is missing" >&2; exit 1; }
fi

# Smoke test: the prebuilt CPU backend loads without building or downloading.
# (A file, not `node -e`: node-llama-cpp test-runs its binary in a child
# process that inherits node's arguments, which fails under -e.)
node logits.mjs --check ||
  { echo "llama-ref: node-llama-cpp is installed but its CPU binary does not load" >&2; exit 1; }
echo "llama-ref: ready (node scripts/llama-ref/logits.mjs MODEL.gguf --token-ids ... --logits-out FILE)"
