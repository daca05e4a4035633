#!/bin/sh
# Soak run of the real daemon with mixed traffic (bench/soak.ts): RSS, open fds
# and event-loop delay sampled every second, written as JSON with a summary.
#   sh scripts/soak.sh [seconds] [--warmup S] [--out FILE] [--rate FRAMES_PER_20MS]
# Run as root to include the TAP port. Default 300 s of traffic after 15 s of warm-up.
set -e
cd "$(dirname "$0")/.."
npm run build --silent
exec node dist/bench/soak.js "$@"
