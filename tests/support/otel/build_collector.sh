#!/usr/bin/env bash
# Build the minimal OpenTelemetry Collector of tests/support/otel/collector (OTLP receiver, batch processor, kafka, file and
# debug exporters) once, and print the binary's path as the last line of stdout:
#
#   otelcol=$(tests/support/otel/build_collector.sh | tail -n 1)
#
# The binary is cached by version and source: ~/.cache/warden/otelcol-<core version>-<sha256 of go.mod, go.sum and
# main.go, 12 digits>/warden-otelcol (WARDEN_OTELCOL_CACHE overrides the folder). A cached build is reused at once; a
# changed go.mod, go.sum or main.go builds a new one. The modules come from the Go module proxy through `go`'s own
# module cache (GOMODCACHE), its compile cache (GOCACHE) is Go's too, so a rebuild after a source change is quick.
#
#   --print-cache  print the cache folder this source would use, build nothing
#
# Needs Go (on PATH, else /usr/local/go/bin/go, or WARDEN_GO). Exit 3 when there is no Go, so callers can tell "no
# toolchain" from "the build failed" (exit 1). Everything but the path goes to stderr.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SRC="$HERE/collector"
log() { echo "build_collector.sh: $*" >&2; }

VERSION=$(sed -n 's:^\s*go\.opentelemetry\.io/collector/otelcol v\([0-9.]*\).*:\1:p' "$SRC/go.mod" | head -n 1)
[ -n "$VERSION" ] || { log "no go.opentelemetry.io/collector/otelcol requirement in $SRC/go.mod"; exit 1; }
grep -q "const version = \"$VERSION\"" "$SRC/main.go" \
  || { log "main.go's version is not go.mod's otelcol $VERSION: update both together"; exit 1; }
STAMP=$(cat "$SRC/go.mod" "$SRC/go.sum" "$SRC/main.go" | sha256sum | cut -c1-12)
CACHE="${WARDEN_OTELCOL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/warden/otelcol-$VERSION-$STAMP}"
BIN="$CACHE/warden-otelcol"

if [ "${1:-}" = "--print-cache" ]; then
  echo "$CACHE"
  exit 0
fi
if [ -x "$BIN" ]; then
  echo "$BIN"
  exit 0
fi

GO=${WARDEN_GO:-}
if [ -z "$GO" ]; then
  GO=$(command -v go || true)
  [ -n "$GO" ] || { [ -x /usr/local/go/bin/go ] && GO=/usr/local/go/bin/go; }
fi
[ -n "$GO" ] && [ -x "$GO" ] || { log "Go is not installed (https://go.dev/dl, or WARDEN_GO=/path/to/go)"; exit 3; }

mkdir -p "$(dirname "$CACHE")"
tmp=$(mktemp -d "$CACHE.partial.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
started=$SECONDS
log "building the Collector $VERSION ($("$GO" version | cut -d' ' -f3)) into $CACHE"
# -trimpath and no symbol table: a smaller binary, the same on every machine. -mod=readonly: go.sum is the lock.
(cd "$SRC" && CGO_ENABLED=0 GOFLAGS=-mod=readonly "$GO" build -trimpath -ldflags='-s -w' -o "$tmp/warden-otelcol" .) >&2
"$tmp/warden-otelcol" --version >&2
# Swap in whole, so an interrupted or concurrent build never leaves a half-written binary in place.
rm -rf "$CACHE"
mv -T "$tmp" "$CACHE" 2>/dev/null || true  # lost a race to another build: theirs is as good
trap - EXIT
rm -rf "$tmp"
[ -x "$BIN" ] || { log "$BIN is missing after the build"; exit 1; }
log "built in $((SECONDS - started))s: $(du -h "$BIN" | cut -f1) at $BIN"
echo "$BIN"
