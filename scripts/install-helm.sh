#!/usr/bin/env bash
# Provides the helm binary the chart tests use, at one path: .tools/bin/helm (git-ignored).
# Helm has no Debian package and nothing may be downloaded but registry packages, so it is built
# from Helm's Go module with the machine's Go. Idempotent: a binary of the pinned version is kept;
# Go's module and build caches make a rebuild after a version bump cheap.
set -euo pipefail
cd "$(dirname "$0")/.."

# Pinned: bump here only (tests read the binary path, never the version).
HELM_VERSION=v3.19.0
bin=.tools/bin/helm

# `go install` of the module does not stamp helm's own version string, so a stamp file says which it is.
stamp=.tools/bin/helm.version
if [ -x "$bin" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$HELM_VERSION" ]; then
  exit 0
fi

# Two set-ups at once (parallel test runs) must not both build: the second waits, then finds it built.
mkdir -p .tools/bin
exec 9>.tools/helm.lock
flock 9
if [ -x "$bin" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$HELM_VERSION" ]; then
  exit 0
fi

go=$(command -v go || true)
[ -n "$go" ] || { [ -x /usr/local/go/bin/go ] && go=/usr/local/go/bin/go; }
if [ -z "$go" ]; then
  echo "ferry: Go is needed to build helm ($HELM_VERSION) for the chart tests, and none was found" >&2
  exit 1
fi

echo "ferry: building helm $HELM_VERSION with $("$go" version | cut -d' ' -f3) into $bin (once; takes a few minutes)"
mkdir -p .tools/bin
start=$(date +%s)
# -trimpath/-ldflags=-s -w: a smaller binary, nothing of this machine's paths in it. CGO is not needed.
CGO_ENABLED=0 GOBIN="$PWD/.tools/bin" GOFLAGS=-buildvcs=false \
  "$go" install -trimpath -ldflags='-s -w' "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
echo "$HELM_VERSION" >"$stamp"
echo "ferry: helm built in $(( $(date +%s) - start )) s: $("$bin" version --short)"
