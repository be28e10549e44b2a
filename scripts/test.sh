#!/usr/bin/env bash
# The test run CI uses (via `npm test`). Unit tests first (fast, no cluster), then integration and
# end-to-end tests, one file at a time: they run CRIU and build namespace hosts, and on 2 cores
# parallel files only slow each other down and blur timing-based deadlines.
set -euo pipefail
cd "$(dirname "$0")/.."
npx --no-install jest --selectProjects unit "$@"
npx --no-install jest --selectProjects integration --runInBand "$@"
