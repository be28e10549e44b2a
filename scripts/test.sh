#!/usr/bin/env bash
# The test run CI uses (via `npm test`). Unit tests first (fast, no cluster), then integration and
# end-to-end tests, one file at a time: they run CRIU and build namespace hosts, and on 2 cores
# parallel files only slow each other down and blur timing-based deadlines.
# Ends with one summary line, "tests: N passed, N failed", over both runs.
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p test-artifacts
status=0
npx --no-install jest --selectProjects unit --json --outputFile=test-artifacts/unit.json "$@" || status=1
npx --no-install jest --selectProjects integration --runInBand --json --outputFile=test-artifacts/integration.json "$@" || status=1
node -e '
  let passed = 0, failed = 0;
  for (const f of ["test-artifacts/unit.json", "test-artifacts/integration.json"]) {
    try {
      const r = require("./" + f);
      passed += r.numPassedTests;
      failed += r.numFailedTests + (r.numRuntimeErrorTestSuites || 0);
    } catch {
      failed += 1;
    }
  }
  console.log(`tests: ${passed} passed, ${failed} failed`);
'
exit $status
