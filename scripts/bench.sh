#!/usr/bin/env bash
# End-to-end throughput of `fhirload run` (not part of `go test` or CI).
#
# Builds fhirload, noopfhir and fhirload-gen, generates a deterministic
# synthetic data set (Synthea-like Patients and Observations, ~1 KB each),
# then runs `fhirload run` (profile seed, validated, SigV4-signed) against
#   noop-batch   a no-op FHIR endpoint (cmd/noopfhir), batch Bundles
#   noop-single  the same, one PUT per resource
#   serve        `fhirload serve` (SQLite store, SigV4 verified), batch Bundles
# several times each, and prints the median resources/s, CPU seconds per 100k
# resources (user+sys of the fhirload process, /usr/bin/time) and peak RSS.
# Then it proves streaming: peak RSS of one run over a 200 MB file (and a 2 GB
# one with BENCH_LARGE=1).
#
# Usage: scripts/bench.sh            (defaults finish in a few minutes)
# Environment (defaults in brackets):
#   BENCH_SIZE [50MB]         data set size for the main table
#   BENCH_RUNS [3]            runs per case; the median is reported
#   BENCH_CASES ["noop-batch noop-single serve"]  ("none": only sweeps/streaming)
#   BENCH_BATCH_SIZE [100]    target.batch_size
#   BENCH_CONCURRENCY [16]    target.concurrency
#   BENCH_SWEEP [0]           1: also sweep batch size (10 50 100 500) and
#                             concurrency (1 4 16 64) into noop-batch
#   BENCH_LATENCY [0]         noopfhir --latency for the sweeps (e.g. 5ms)
#   BENCH_STREAM [1]          1: streaming proof with a 200 MB input file
#   BENCH_LARGE [0]           1: also a 2 GB input file (needs ~2.2 GB in BENCH_DIR)
#   BENCH_TIMEOUT [600]       seconds one `fhirload run` may take before the bench fails
#   BENCH_DIR [mktemp -d]     work folder; removed at exit unless BENCH_KEEP=1
#   BENCH_OUT [BENCH_DIR/results.tsv]  one line per run, tab-separated
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE=${BENCH_SIZE:-50MB}
RUNS=${BENCH_RUNS:-3}
CASES=${BENCH_CASES:-"noop-batch noop-single serve"}
[ "$CASES" = none ] && CASES=
BATCH=${BENCH_BATCH_SIZE:-100}
CONC=${BENCH_CONCURRENCY:-16}
SWEEP=${BENCH_SWEEP:-0}
LATENCY=${BENCH_LATENCY:-0}
STREAM=${BENCH_STREAM:-1}
LARGE=${BENCH_LARGE:-0}
WORK=${BENCH_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/fhirload-bench.XXXXXX")}
OUT=${BENCH_OUT:-$WORK/results.tsv}
KEEP=${BENCH_KEEP:-0}
TIMEOUT=${BENCH_TIMEOUT:-600}

[ -x /usr/bin/time ] || { echo "bench: /usr/bin/time (GNU time) is required" >&2; exit 1; }
mkdir -p "$WORK"
NOOP_PID= SERVE_PID=
cleanup() {
  [ -n "$NOOP_PID" ] && stop_pid "$NOOP_PID"
  [ -n "$SERVE_PID" ] && stop_pid "$SERVE_PID"
  if [ "$KEEP" != 1 ]; then
    if [ -n "${BENCH_DIR:-}" ]; then
      rm -rf "$WORK/bin" "$WORK/data" "$WORK/run" "$WORK/serve" "$WORK"/stream-*
    else
      rm -rf "$WORK" # results.tsv too, unless BENCH_OUT points elsewhere
    fi
  fi
  return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Static test credentials: the no-op endpoint accepts any signature, `serve`
# accepts exactly this pair (its default keys come from these variables).
export AWS_ACCESS_KEY_ID=AKIDFHIRLOADBENCH AWS_SECRET_ACCESS_KEY=fhirload-bench-secret AWS_REGION=us-east-1
unset AWS_SESSION_TOKEN AWS_PROFILE

BIN=$WORK/bin
mkdir -p "$BIN"
echo "bench: building into $BIN" >&2
go build -o "$BIN/fhirload" ./cmd/fhirload
go build -o "$BIN/noopfhir" ./cmd/noopfhir
go build -o "$BIN/fhirload-gen" ./cmd/fhirload-gen

gen() { # gen DIR SIZE
  [ -s "$1/Observation.ndjson" ] || "$BIN/fhirload-gen" --out "$1" --size "$2" >&2
}

# start_noop LATENCY: starts noopfhir, sets NOOP_PID and NOOP_URL.
start_noop() {
  rm -f "$WORK/noop.addr"
  "$BIN/noopfhir" --addr 127.0.0.1:0 --addr-file "$WORK/noop.addr" --latency "$1" 2>>"$WORK/noop.log" &
  NOOP_PID=$!
  for _ in $(seq 100); do [ -s "$WORK/noop.addr" ] && break; sleep 0.05; done
  [ -s "$WORK/noop.addr" ] || { echo "bench: noopfhir did not start" >&2; exit 1; }
  NOOP_URL="http://$(cat "$WORK/noop.addr")/datastore/noop/r4/"
}

stop_pid() {
  kill "$1" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill "$1" 2>/dev/null || true # older fhirload serve builds needed a second signal
  wait "$1" 2>/dev/null || true
  [ "$1" = "$NOOP_PID" ] && NOOP_PID=
  [ "$1" = "$SERVE_PID" ] && SERVE_PID=
  return 0
}

# start_serve: a fresh `fhirload serve` store; sets SERVE_PID and SERVE_URL.
start_serve() {
  rm -rf "$WORK/serve" && mkdir -p "$WORK/serve"
  : >"$WORK/serve.log"
  "$BIN/fhirload" serve --addr 127.0.0.1:0 --data "$WORK/serve" 2>>"$WORK/serve.log" &
  SERVE_PID=$!
  for _ in $(seq 200); do grep -q 'listening on' "$WORK/serve.log" && break; sleep 0.05; done
  SERVE_URL=$(sed -n 's/.*listening on \(http[^ ]*\).*/\1/p' "$WORK/serve.log" | head -1)
  [ -n "$SERVE_URL" ] || { echo "bench: fhirload serve did not start" >&2; cat "$WORK/serve.log" >&2; exit 1; }
}

# one_run LABEL URL MODE BATCH CONC DATA: one `fhirload run`; appends a result line.
one_run() {
  local label=$1 url=$2 mode=$3 bs=$4 cc=$5 data=$6 dir=$WORK/run
  rm -rf "$dir" && mkdir -p "$dir"
  cat >"$dir/pipeline.yaml" <<EOF
source: {format: fhir}
transform: {profile: seed, ids: keep}
target: {url: "$url", auth: sigv4, region: us-east-1, mode: $mode, batch_size: $bs, concurrency: $cc}
deadletter: {url: "file://$dir/deadletter"}
log: {level: warn}
EOF
  local load
  load=$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo ?)
  local rc=0
  timeout "$TIMEOUT" /usr/bin/time -f '%e %U %S %M' -o "$dir/time" \
    "$BIN/fhirload" run --config "$dir/pipeline.yaml" --report "$dir/report.json" "$data" \
    >/dev/null 2>"$dir/stderr" || rc=$?
  if [ "$rc" != 0 ]; then
    echo "bench: $label: fhirload run exited $rc" >&2
    tail -5 "$dir/stderr" >&2
    exit 1
  fi
  local loaded rps wall user sys rss
  loaded=$(sed -n 's/^ *"loaded": \([0-9]*\).*/\1/p' "$dir/report.json")
  rps=$(sed -n 's/^ *"resources_per_second": \([0-9.e+]*\).*/\1/p' "$dir/report.json")
  read -r wall user sys rss <"$dir/time"
  awk -v l="$label" -v m="$mode" -v bs="$bs" -v cc="$cc" -v n="$loaded" -v rps="$rps" \
      -v w="$wall" -v u="$user" -v s="$sys" -v rss="$rss" -v load="$load" -v bytes="$(du -sb "$data" | cut -f1)" \
      'BEGIN { printf "%s\t%s\t%d\t%d\t%d\t%d\t%.0f\t%.2f\t%.2f\t%.1f\t%s\n", l, m, bs, cc, n, bytes, rps, w, (u+s)*100000/n, rss/1024, load }' \
    | tee -a "$OUT"
}

median() { sort -n | awk '{a[NR]=$1} END { if (NR==0) print "-"; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2 }'; }

# summarize LABEL: medians of the runs of LABEL in $OUT.
summarize() {
  local f=$1 rows
  rows=$(awk -F'\t' -v l="$f" '$1==l' "$OUT")
  [ -n "$rows" ] || return 0
  printf '%-28s %10s %12s %14s %12s %8s\n' "$f" \
    "$(cut -f5 <<<"$rows" | median)" \
    "$(cut -f7 <<<"$rows" | median)" \
    "$(cut -f9 <<<"$rows" | median)" \
    "$(cut -f10 <<<"$rows" | median)" \
    "$(wc -l <<<"$rows")"
}

header() {
  printf '\n%-28s %10s %12s %14s %12s %8s\n' case resources 'res/s' 'cpu-s/100k' 'rss-MiB' runs
}

printf 'label\tmode\tbatch_size\tconcurrency\tresources\tinput_bytes\tresources_per_s\twall_s\tcpu_s_per_100k\tpeak_rss_mib\tloadavg\n' >"$OUT"
echo "bench: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(go version | cut -d' ' -f3)" >&2
echo "bench: data set $SIZE in $WORK/data" >&2
if [ -n "$CASES" ] || [ "$SWEEP" = 1 ]; then gen "$WORK/data" "$SIZE"; fi

labels=()
for c in $CASES; do
  case $c in
    noop-batch|noop-single)
      mode=${c#noop-}
      start_noop 0
      for _ in $(seq "$RUNS"); do one_run "$c" "$NOOP_URL" "$mode" "$BATCH" "$CONC" "$WORK/data"; done
      stop_pid "$NOOP_PID"
      ;;
    serve)
      for _ in $(seq "$RUNS"); do
        start_serve
        one_run serve "$SERVE_URL" batch "$BATCH" "$CONC" "$WORK/data"
        # The server's own CPU, for the record (it is a separate process).
        ticks=$(awk '{print $14+$15}' "/proc/$SERVE_PID/stat" 2>/dev/null || echo 0)
        echo "bench: serve process CPU $(awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.2f", t/hz}') s for this run" >&2
        stop_pid "$SERVE_PID"
      done
      ;;
    *) echo "bench: unknown case $c" >&2; exit 1 ;;
  esac
  labels+=("$c")
done

if [ "$SWEEP" = 1 ]; then
  start_noop "$LATENCY"
  for bs in 10 50 100 500; do
    for _ in $(seq "$RUNS"); do one_run "batch_size=$bs" "$NOOP_URL" batch "$bs" "$CONC" "$WORK/data"; done
    labels+=("batch_size=$bs")
  done
  for cc in 1 4 16 64; do
    for _ in $(seq "$RUNS"); do one_run "concurrency=$cc" "$NOOP_URL" batch "$BATCH" "$cc" "$WORK/data"; done
    labels+=("concurrency=$cc")
  done
  stop_pid "$NOOP_PID"
fi

if [ "$STREAM" = 1 ] || [ "$LARGE" = 1 ]; then
  sizes=()
  [ "$STREAM" = 1 ] && sizes+=(200MB)
  [ "$LARGE" = 1 ] && sizes+=(2GB)
  start_noop 0
  for s in "${sizes[@]}"; do
    need=$(( $( [ "$s" = 2GB ] && echo 2300 || echo 250 ) * 1024 ))
    avail=$(df -Pk "$WORK" | awk 'NR==2 {print $4}')
    if [ "$avail" -lt "$need" ]; then
      echo "bench: skipping the $s input: $((avail / 1024)) MB free in $WORK" >&2
      continue
    fi
    gen "$WORK/stream-$s" "$s"
    # One file: the Observations (the Patients file is small).
    one_run "stream $s (one file)" "$NOOP_URL" batch "$BATCH" "$CONC" "$WORK/stream-$s/Observation.ndjson"
    labels+=("stream $s (one file)")
    rm -rf "$WORK/stream-$s"
  done
  stop_pid "$NOOP_PID"
fi

echo
echo "fhirload bench: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(go version | cut -d' ' -f3); data $SIZE; batch_size $BATCH, concurrency $CONC; medians of $RUNS"
header
for l in "${labels[@]}"; do summarize "$l"; done
echo
if [ "$KEEP" = 1 ] || [ -n "${BENCH_DIR:-}" ] || [ "$OUT" != "$WORK/results.tsv" ]; then
  echo "per-run results: $OUT"
fi
