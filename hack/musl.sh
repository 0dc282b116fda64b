#!/usr/bin/env bash
# Installs what `cargo xtask images` needs to build the operator's static binary: Rust's
# x86_64-unknown-linux-musl standard library (rustup) and musl-gcc (Debian's musl-tools, for the
# C that crates such as zstd-sys compile). The Containerfile's build stage installs the same two.
#
#   hack/musl.sh    install what is missing; a warm run does nothing
set -euo pipefail

TARGET=x86_64-unknown-linux-musl

if ! rustup target list --installed | grep -qx "$TARGET"; then
  rustup target add "$TARGET"
fi
if ! command -v musl-gcc >/dev/null; then
  if [[ $(id -u) -ne 0 ]]; then
    echo "hack/musl.sh: musl-gcc is missing; install Debian's musl-tools as root" >&2
    exit 1
  fi
  apt-get install -y --no-install-recommends musl-tools >/dev/null 2>&1 \
    || { apt-get update >/dev/null && apt-get install -y --no-install-recommends musl-tools >/dev/null; }
fi
echo "$TARGET: $(rustup target list --installed | grep -x "$TARGET"); musl-gcc: $(command -v musl-gcc)"
