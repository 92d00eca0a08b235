#!/usr/bin/env bash
# The end-to-end tests only (S3/SQS against moto, watch, replay, crashes, faults):
# the cmd/fhirload package, with the race detector.
set -euo pipefail
cd "$(dirname "$0")/.."
exec go test -race -count=1 -timeout 20m "$@" ./cmd/fhirload/
