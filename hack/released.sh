#!/usr/bin/env bash
# Builds the operator binary of Tusk's newest released release from the commit the release plan
# records for it (`cutFrom` in config/releases.yaml), so that the OLM upgrade tests run the genuine
# previous release while it is installed, and this build's binary after OLM upgrades. Cached by
# version and commit: a warm run takes a moment; a cold one builds the old tree once (minutes).
#
#   hack/released.sh          build what is missing and print the directory
#   hack/released.sh --dir    only print the directory (nothing is built); exit 1 if incomplete
#
# The directory holds bin/tusk-operator and a file `version`. The cache root is
# $TUSK_TESTBIN_CACHE, or ~/.cache/tusk/testbin.
set -euo pipefail

HACK=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HACK/.." && pwd)
ROOT="${TUSK_TESTBIN_CACHE:-$HOME/.cache/tusk/testbin}"

# The last release in the plan that records the commit it was cut from: `- version: X` opens a
# release, `cutFrom: <sha>` inside it marks it cut.
read -r VERSION COMMIT < <(awk '
  /^  - version:/ { version = $3 }
  /^    cutFrom:/ { last = version " " $2 }
  END { print last }
' "$REPO/config/releases.yaml")
[[ -n "${VERSION:-}" && "${COMMIT:-}" =~ ^[0-9a-f]{40}$ ]] || {
  echo "released: no release in config/releases.yaml records its cutFrom commit" >&2
  exit 1
}
OUT="$ROOT/tusk-operator-$VERSION-${COMMIT:0:12}"

complete() { [[ -x "$OUT/bin/tusk-operator" && "$(cat "$OUT/version" 2>/dev/null)" == "$VERSION" ]]; }

if [[ "${1:-}" == "--dir" ]]; then
  echo "$OUT"
  complete
  exit
fi
[[ $# -eq 0 ]] || { echo "usage: hack/released.sh [--dir]" >&2; exit 2; }

mkdir -p "$ROOT"
exec 9>"$ROOT/.lock-released"
flock 9   # test binaries may all ask at once
if complete; then
  echo "$OUT"
  exit
fi

if ! git -C "$REPO" cat-file -e "$COMMIT^{commit}" 2>/dev/null; then
  # A shallow clone lacks the release's commit: fetch the history it needs.
  git -C "$REPO" fetch --quiet --unshallow 2>/dev/null || git -C "$REPO" fetch --quiet origin "$COMMIT" || true
  git -C "$REPO" cat-file -e "$COMMIT^{commit}" 2>/dev/null || {
    echo "released: commit $COMMIT (cutFrom of $VERSION) is not in this repository's history" >&2
    exit 1
  }
fi

WORK=$(mktemp -d "$ROOT/.released-XXXXXX")
trap 'rm -rf "$WORK"' EXIT
echo "released: building tusk-operator $VERSION from $COMMIT" >&2
start=$SECONDS
git -C "$REPO" archive "$COMMIT" | tar -x -C "$WORK"
# Without debug info: the binary is for running, and the build is a third faster.
(cd "$WORK" && CARGO_TARGET_DIR="$WORK/target" CARGO_INCREMENTAL=0 CARGO_PROFILE_DEV_DEBUG=0 \
  cargo build --locked --quiet --bin tusk-operator)
built=$("$WORK/target/debug/tusk-operator" --version)
[[ "$built" == "tusk-operator $VERSION" ]] || {
  echo "released: $COMMIT builds \"$built\", not tusk-operator $VERSION: cutFrom is wrong" >&2
  exit 1
}
rm -rf "$OUT"
mkdir -p "$OUT/bin"
cp "$WORK/target/debug/tusk-operator" "$OUT/bin/tusk-operator"
echo "$VERSION" > "$OUT/version"
echo "released: tusk-operator $VERSION built in $((SECONDS - start)) s" >&2
echo "$OUT"
