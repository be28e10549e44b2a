#!/usr/bin/env bash
# The test run CI uses (via `npm test`). Unit tests first (fast, no cluster), then integration and
# end-to-end tests, one file at a time: they run CRIU and build namespace hosts, and on 2 cores
# parallel files only slow each other down and blur timing-based deadlines. The lint (`npm run lint`:
# eslint.config.mjs, then a type check of every test against tsconfig.test.json) runs before both; its problems are printed and count as one failed test.
# Ends with one summary line, "tests: N passed, N failed", over both runs and the lint.
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p test-artifacts
status=0
lint_failed=0
if ! npm run --silent lint; then
  echo "lint: eslint or the test type check found problems (listed above); counted as 1 failed" >&2
  lint_failed=1
  status=1
fi
npx --no-install jest --selectProjects unit --json --outputFile=test-artifacts/unit.json "$@" || status=1
npx --no-install jest --selectProjects integration --runInBand --json --outputFile=test-artifacts/integration.json "$@" || status=1
LINT_FAILED=$lint_failed node -e '
  let passed = 0, failed = Number(process.env.LINT_FAILED);
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
