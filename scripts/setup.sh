#!/usr/bin/env bash
# Install everything moecpu needs to build, test and cross-test (Debian 12).
# Idempotent: safe to run again.  Needs root (or sudo) for apt-get.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive

need_arm64=0
dpkg --print-foreign-architectures | grep -qx arm64 || need_arm64=1
if [ "$need_arm64" = 1 ]; then
  echo "setup: enabling the arm64 architecture for the cross-test libraries"
  $SUDO dpkg --add-architecture arm64
fi

pkgs=(
  build-essential clang pkg-config       # compilers (gcc and clang are both kept warning-free)
  libsleef-dev libcpuinfo-dev            # vector math, CPU feature detection
  libjansson-dev                         # JSON: config.json, safetensors headers, tokenizer.json
  libpcre2-dev                           # regexes with Unicode properties: the tokenizer's pre-tokenizer
  libcmocka-dev                          # unit test framework
  libedit-dev                            # line editing and history for `moecpu chat` (BSD licence)
  gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static   # aarch64 cross build + emulation
  libsleef-dev:arm64 libcpuinfo0:arm64 libcmocka-dev:arm64 libjansson-dev:arm64   # the same for aarch64
  libedit2:arm64                         # linked by soname in the aarch64 build (libedit-dev:arm64 conflicts)
  libpcre2-8-0:arm64                     # (linked by soname: libpcre2-dev:arm64 conflicts with the amd64 one)
)
# libcpuinfo-dev:arm64 conflicts with libcpuinfo-dev (amd64); the header is
# the same, so the cross build links libcpuinfo.so.0 by soname instead.

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ] || [ "$need_arm64" = 1 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: all packages present"
fi

# The independent reference for end-to-end tests: mainline llama.cpp's
# prebuilt CPU binaries from the npm package node-llama-cpp (needs Node >= 20).
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "setup: installing Node.js and npm"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends nodejs npm
fi
"$(dirname "$0")/llama-ref/install.sh"
# The tokenizer reference: DeepSeek-V3's real tokenizer.json and a JS port
# of Hugging Face's tokenizers (npm, test only).
"$(dirname "$0")/tokenizer-ref/install.sh"
