#!/usr/bin/env bash
# End-to-end throughput of `fhirload verify` against `fhirload serve` (not part
# of `go test` or CI; docs/PERFORMANCE.md, section "verify").
#
# Builds fhirload, starts `fhirload serve` (SQLite store, SigV4 verified) on a
# fresh data folder, loads the input with `fhirload run`, then runs
# `fhirload verify` over the same input several times per read method and
# prints, per method, the median resources verified per second and the CPU
# seconds per 100k resources of the client (user+sys of `fhirload verify`,
# /usr/bin/time) and of the server (utime+stime of `fhirload serve` from
# /proc, before and after each run). The first verify after the load is a
# warm-up and is not counted.
#
# Usage: scripts/bench-verify.sh
# Environment (defaults in brackets):
#   BENCH_INPUT [testdata/sample]  files or folders to load and verify
#                                  (the shared sample: 16,415 resources)
#   BENCH_RUNS [5]                 runs per method; the median is reported
#   BENCH_METHODS ["batch search"] target.read_method values to measure
#   BENCH_BATCH_SIZE [100]         target.batch_size
#   BENCH_CONCURRENCY [16]         target.concurrency
#   BENCH_DIR [mktemp -d]          work folder; removed at exit unless BENCH_KEEP=1
set -euo pipefail
cd "$(dirname "$0")/.."

INPUT=${BENCH_INPUT:-testdata/sample}
RUNS=${BENCH_RUNS:-5}
METHODS=${BENCH_METHODS:-"batch search"}
BATCH=${BENCH_BATCH_SIZE:-100}
CONC=${BENCH_CONCURRENCY:-16}
WORK=${BENCH_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/fhirload-bench-verify.XXXXXX")}
KEEP=${BENCH_KEEP:-0}

[ -x /usr/bin/time ] || { echo "bench-verify: /usr/bin/time (GNU time) is required" >&2; exit 1; }
mkdir -p "$WORK"
SERVE_PID=
cleanup() {
  if [ -n "$SERVE_PID" ]; then kill "$SERVE_PID" 2>/dev/null || true; wait "$SERVE_PID" 2>/dev/null || true; fi
  [ "$KEEP" = 1 ] || rm -rf "$WORK"
  return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

export AWS_ACCESS_KEY_ID=AKIDFHIRLOADBENCH AWS_SECRET_ACCESS_KEY=fhirload-bench-secret AWS_REGION=us-east-1
unset AWS_SESSION_TOKEN AWS_PROFILE

go build -o "$WORK/fhirload" ./cmd/fhirload
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$WORK/fhirload" serve --addr "127.0.0.1:$PORT" --data "$WORK/serve" >"$WORK/serve.log" 2>&1 &
SERVE_PID=$!
for _ in $(seq 100); do
  curl -fs -o /dev/null "http://127.0.0.1:$PORT/datastore/local/r4/metadata" 2>/dev/null && break
  sleep 0.1
done

config() { # config METHOD
  cat >"$WORK/pipeline.yaml" <<YAML
target: {url: "http://127.0.0.1:$PORT/datastore/local/r4/", auth: sigv4, batch_size: $BATCH, concurrency: $CONC, read_method: $1}
deadletter: {url: "file://$WORK/deadletter"}
log: {level: warn}
YAML
}

cpu_of() { # cpu_of PID -> utime+stime in seconds
  awk -v hz="$(getconf CLK_TCK)" '{print ($14+$15)/hz}' "/proc/$1/stat"
}

config batch
# shellcheck disable=SC2086
"$WORK/fhirload" run --config "$WORK/pipeline.yaml" $INPUT >/dev/null 2>"$WORK/run.log" || { cat "$WORK/run.log" >&2; exit 1; }
echo "bench-verify: loaded $INPUT into fhirload serve; load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

printf "method\tresources/s (median)\tclient CPU s/100k\tserver CPU s/100k\truns\n"
for m in $METHODS; do
  config "$m"
  : >"$WORK/$m.tsv"
  for i in $(seq 0 "$RUNS"); do
    s0=$(cpu_of "$SERVE_PID")
    # shellcheck disable=SC2086
    /usr/bin/time -f "%U %S" -o "$WORK/time" "$WORK/fhirload" verify --config "$WORK/pipeline.yaml" --report "$WORK/report.json" $INPUT 2>"$WORK/verify.log" \
      || { cat "$WORK/verify.log" >&2; exit 1; }
    s1=$(cpu_of "$SERVE_PID")
    [ "$i" = 0 ] && continue # warm-up
    python3 - "$WORK/report.json" "$WORK/time" "$s0" "$s1" >>"$WORK/$m.tsv" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
u, s = map(float, open(sys.argv[2]).read().split())
n = r["verified"]
assert r["matched"] == n and n > 0, r
print(f'{r["resources_per_second"]:.0f}\t{(u+s)/n*1e5:.2f}\t{(float(sys.argv[4])-float(sys.argv[3]))/n*1e5:.2f}')
PY
  done
  rate=$(cut -f1 "$WORK/$m.tsv" | median)
  ccpu=$(cut -f2 "$WORK/$m.tsv" | median)
  scpu=$(cut -f3 "$WORK/$m.tsv" | median)
  printf "%s\t%s\t%s\t%s\t%s\n" "$m" "$rate" "$ccpu" "$scpu" "$(cut -f1 "$WORK/$m.tsv" | tr '\n' ' ')"
done
echo "bench-verify: load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
