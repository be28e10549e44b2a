#!/usr/bin/env bash
# One set-up for every entry point (npm start, npm test, npm run bench): installs what is missing
# and builds. Idempotent and quiet when there is nothing to do.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "ferry: run npm start / npm test as root (from a root shell): ferry installs system packages, creates" >&2
  echo "       network namespaces and runs CRIU, which all need root." >&2
  exit 1
fi

bash scripts/install-system.sh
bash scripts/host-sysctl.sh
# helm for the chart tests (built from its Go module once, then cached in .tools/).
bash scripts/install-helm.sh
# A Kafka broker's jars for `ferry dev up --kafka` and the Kafka tests (fetched once, cached in .tools/kafka).
bash scripts/install-kafka.sh

# npm dependencies: install from the lockfile when node_modules is missing or older than it.
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "ferry: installing npm dependencies (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error
fi

# Build every package (turbo runs `build` in dependency order and skips what is up to date).
export TURBO_TELEMETRY_DISABLED=1 DO_NOT_TRACK=1
npx --no-install turbo run build --output-logs=errors-only --log-prefix=none >/dev/null
