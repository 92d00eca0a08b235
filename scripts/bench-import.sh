#!/usr/bin/env bash
# Import mode versus REST batch mode into `fhirload serve`, end to end
# (not part of `go test` or CI).
#
# Builds fhirload and fhirload-gen, generates a deterministic data set
# (Synthea-like Patients and Observations, ~1 KB each), starts moto_server
# (S3) and, for each round, two fresh `fhirload serve` stores: one loaded by
# `fhirload run` in target.mode batch (REST batch Bundles, SigV4), the other
# by `fhirload run` in target.mode import (staging to S3, one import job,
# settlement from its output). The two runs of a round come one after the
# other on the same machine, with the same data; the order alternates. It
# prints, per mode, the median resources/s of the whole run (the run
# report: lines loaded / wall seconds, staging, job and settlement
# included), the client's CPU seconds per 100k resources, the server's CPU
# seconds per 100k, and the ratio import / batch.
#
# Each round is run once per value of BENCH_WUPS, `serve
# --write-units-per-second`: 0 is an unthrottled store; 3000 is HealthLake's
# REST write quota (one unit per started KB of a write request's body),
# which REST writes are paced by (429 + Retry-After) and import jobs are
# not, as on HealthLake.
#
# Usage: scripts/bench-import.sh
# Environment (defaults in brackets):
#   BENCH_SIZE [50MB]        data set size
#   BENCH_RUNS [3]           rounds; medians are reported
#   BENCH_POLL [200ms]       target.import.poll_interval (and poll_max: 2x)
#   BENCH_OBJECT [8388608]   target.import.object_bytes
#   BENCH_WUPS ["0 3000"]    serve --write-units-per-second values
#   BENCH_DIR [mktemp -d]    work folder; removed at exit unless BENCH_KEEP=1
#   BENCH_OUT [BENCH_DIR/results.tsv]  one line per run
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE=${BENCH_SIZE:-50MB}
RUNS=${BENCH_RUNS:-3}
POLL=${BENCH_POLL:-200ms}
OBJECT=${BENCH_OBJECT:-8388608}
WUPS_LIST=${BENCH_WUPS:-"0 3000"}
WORK=${BENCH_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/fhirload-bench-import.XXXXXX")}
OUT=${BENCH_OUT:-$WORK/results.tsv}
KEEP=${BENCH_KEEP:-0}

command -v moto_server >/dev/null || { echo "bench-import: moto_server is required" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "bench-import: /usr/bin/time (GNU time) is required" >&2; exit 1; }
mkdir -p "$WORK"
MOTO_PID= SERVE_PID=
cleanup() {
  [ -n "$SERVE_PID" ] && kill "$SERVE_PID" 2>/dev/null && wait "$SERVE_PID" 2>/dev/null
  [ -n "$MOTO_PID" ] && kill "$MOTO_PID" 2>/dev/null && wait "$MOTO_PID" 2>/dev/null
  if [ "$KEEP" != 1 ]; then
    if [ -n "${BENCH_DIR:-}" ]; then rm -rf "$WORK/bin" "$WORK/data" "$WORK/run" "$WORK/serve"; else rm -rf "$WORK"; fi
  fi
  return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

export AWS_ACCESS_KEY_ID=AKIDFHIRLOADBENCH AWS_SECRET_ACCESS_KEY=fhirload-bench-secret AWS_REGION=us-east-1
export AWS_REQUEST_CHECKSUM_CALCULATION=when_required AWS_RESPONSE_CHECKSUM_VALIDATION=when_required AWS_EC2_METADATA_DISABLED=true
unset AWS_SESSION_TOKEN AWS_PROFILE

BIN=$WORK/bin
mkdir -p "$BIN"
echo "bench-import: building into $BIN" >&2
go build -o "$BIN/fhirload" ./cmd/fhirload
go build -o "$BIN/fhirload-gen" ./cmd/fhirload-gen
[ -s "$WORK/data/Observation.ndjson" ] || "$BIN/fhirload-gen" --out "$WORK/data" --size "$SIZE" >&2

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
MOTO_PORT=$(free_port)
moto_server -H 127.0.0.1 -p "$MOTO_PORT" >"$WORK/moto.log" 2>&1 &
MOTO_PID=$!
MOTO=http://127.0.0.1:$MOTO_PORT
for _ in $(seq 100); do curl -fs "$MOTO/moto-api/" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fs -X PUT "$MOTO/bench" >/dev/null || { echo "bench-import: moto did not start" >&2; exit 1; }

# start_serve: a fresh store, its import jobs on moto; sets SERVE_PID and SERVE_URL.
start_serve() {
  rm -rf "$WORK/serve" && mkdir -p "$WORK/serve"
  : >"$WORK/serve.log"
  AWS_ENDPOINT_URL_S3=$MOTO "$BIN/fhirload" serve --addr 127.0.0.1:0 --data "$WORK/serve" --write-units-per-second "$WUPS" 2>>"$WORK/serve.log" &
  SERVE_PID=$!
  for _ in $(seq 200); do grep -q 'listening on' "$WORK/serve.log" && break; sleep 0.05; done
  SERVE_URL=$(sed -n 's/.*listening on \(http[^ ]*\).*/\1/p' "$WORK/serve.log" | head -1)
  [ -n "$SERVE_URL" ] || { echo "bench-import: fhirload serve did not start" >&2; cat "$WORK/serve.log" >&2; exit 1; }
}

stop_serve() {
  local ticks
  ticks=$(awk '{print $14+$15}' "/proc/$SERVE_PID/stat" 2>/dev/null || echo 0)
  SERVE_CPU=$(awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.2f", t/hz}')
  kill "$SERVE_PID" 2>/dev/null || true
  wait "$SERVE_PID" 2>/dev/null || true
  SERVE_PID=
}

# one_run MODE ROUND: one `fhirload run` into a fresh store; appends a result line.
one_run() {
  local mode=$1 round=$2 dir=$WORK/run
  rm -rf "$dir" && mkdir -p "$dir"
  start_serve
  cat >"$dir/pipeline.yaml" <<YAML
source: {format: fhir}
transform: {profile: seed, ids: keep}
target:
  url: "$SERVE_URL"
  mode: $mode
  import: {staging_url: "s3://bench/stage/", output_url: "s3://bench/out/", role_arn: "arn:aws:iam::123456789012:role/HealthLakeImport",
           kms_key_id: "alias/aws/s3", poll_interval: $POLL, poll_max: $POLL, object_bytes: $OBJECT, state_dir: "$dir/import"}
aws: {endpoint_url: "$MOTO", s3_path_style: true}
deadletter: {url: "file://$dir/deadletter"}
log: {level: warn}
YAML
  local rc=0
  /usr/bin/time -f '%e %U %S %M' -o "$dir/time" \
    "$BIN/fhirload" run --config "$dir/pipeline.yaml" --report "$dir/report.json" "$WORK/data" >/dev/null 2>"$dir/stderr" || rc=$?
  stop_serve
  [ "$rc" = 0 ] || { echo "bench-import: $mode: fhirload run exited $rc" >&2; tail -5 "$dir/stderr" >&2; exit 1; }
  local loaded rps wall user sys rss
  loaded=$(sed -n 's/^ *"loaded": \([0-9]*\).*/\1/p' "$dir/report.json")
  rps=$(sed -n 's/^ *"resources_per_second": \([0-9.e+]*\).*/\1/p' "$dir/report.json")
  read -r wall user sys rss <"$dir/time"
  awk -v m="$mode" -v wu="$WUPS" -v r="$round" -v n="$loaded" -v rps="$rps" -v w="$wall" -v u="$user" -v s="$sys" -v rss="$rss" \
      -v scpu="$SERVE_CPU" -v load="$(cut -d' ' -f1 /proc/loadavg)" \
      'BEGIN { printf "%s\t%s\t%d\t%d\t%.0f\t%.2f\t%.2f\t%.2f\t%.1f\t%s\n", m, wu, r, n, rps, w, (u+s)*100000/n, scpu*100000/n, rss/1024, load }' | tee -a "$OUT"
}

median() { sort -n | awk '{a[NR]=$1} END { if (NR==0) print "-"; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2 }'; }

printf 'mode\twrite_units_per_s\tround\tresources\tresources_per_s\twall_s\tclient_cpu_s_per_100k\tserver_cpu_s_per_100k\tclient_peak_rss_mib\tloadavg\n' >"$OUT"
echo "bench-import: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(go version | cut -d' ' -f3); data $SIZE" >&2
for WUPS in $WUPS_LIST; do
  for round in $(seq "$RUNS"); do
    if [ $((round % 2)) = 1 ]; then order="batch import"; else order="import batch"; fi
    for mode in $order; do one_run "$mode" "$round"; done
  done
done

echo
echo "fhirload bench-import: $(nproc) cores; data $SIZE; poll $POLL; object_bytes $OBJECT; medians of $RUNS rounds"
printf '%-8s %8s %10s %10s %8s %18s %18s\n' mode 'serve-wu' resources 'res/s' wall-s 'client cpu-s/100k' 'server cpu-s/100k'
for WUPS in $WUPS_LIST; do
  for mode in batch import; do
    rows=$(awk -F'\t' -v m="$mode" -v wu="$WUPS" '$1==m && $2==wu' "$OUT")
    printf '%-8s %8s %10s %10s %8s %18s %18s\n' "$mode" "$WUPS" "$(cut -f4 <<<"$rows" | median)" "$(cut -f5 <<<"$rows" | median)" \
      "$(cut -f6 <<<"$rows" | median)" "$(cut -f7 <<<"$rows" | median)" "$(cut -f8 <<<"$rows" | median)"
  done
  b=$(awk -F'\t' -v wu="$WUPS" '$1=="batch" && $2==wu' "$OUT" | cut -f5 | median)
  i=$(awk -F'\t' -v wu="$WUPS" '$1=="import" && $2==wu' "$OUT" | cut -f5 | median)
  awk -v b="$b" -v i="$i" -v wu="$WUPS" 'BEGIN { printf "import / batch (serve write units %s/s): %.2fx\n", wu, i/b }'
done
if [ "$KEEP" = 1 ] || [ -n "${BENCH_DIR:-}" ]; then echo "per-run results: $OUT"; fi
exit 0
