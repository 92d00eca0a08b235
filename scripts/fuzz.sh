#!/usr/bin/env bash
# Runs every fuzz target in the module for a short time each (default 10s).
# Usage: scripts/fuzz.sh [DURATION]
set -euo pipefail
cd "$(dirname "$0")/.."
dur="${1:-10s}"
status=0
for pkg in $(go list ./...); do
  dir=$(go list -f '{{.Dir}}' "$pkg")
  for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u); do
    echo "fuzz $pkg $target ($dur)"
    if ! go test -run '^$' -fuzz "^${target}\$" -fuzztime "$dur" "$pkg"; then
      status=1
    fi
  done
done
exit $status
