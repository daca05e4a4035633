#!/usr/bin/env bash
# The test command: prepares the machine (scripts/setup.sh), then builds, lints
# and runs the whole suite (npm test). Extra arguments select test files by
# substring, e.g. ./scripts/test.sh e2e/vm-harness
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
if [ "$#" -gt 0 ]; then
  npm run build --silent
  exec node scripts/run-tests.js "$@"
fi
exec npm test
