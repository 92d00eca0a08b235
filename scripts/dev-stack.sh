#!/usr/bin/env bash
# A local file-drop stack without Docker: moto_server (S3 + SQS), a bucket whose
# notifications go to a queue, `fhirload serve`, and a `fhirload watch` worker.
#   scripts/dev-stack.sh start   # prints how to drop a file
#   scripts/dev-stack.sh stop
# State lives in .fhirload/dev-stack/.
set -euo pipefail
cd "$(dirname "$0")/.."
state=.fhirload/dev-stack
moto_port=${MOTO_PORT:-5055}
fhir_port=${FHIR_PORT:-8080}
bucket=fhirload-drop
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
export AWS_REQUEST_CHECKSUM_CALCULATION=when_required AWS_RESPONSE_CHECKSUM_VALIDATION=when_required

stop() {
  for p in watch serve moto; do
    if [ -f "$state/$p.pid" ]; then kill "$(cat "$state/$p.pid")" 2>/dev/null || true; rm -f "$state/$p.pid"; fi
  done
  echo "stopped"
}

start() {
  mkdir -p "$state"
  go build -o "$state/fhirload" ./cmd/fhirload
  moto_server -H 127.0.0.1 -p "$moto_port" >"$state/moto.log" 2>&1 & echo $! >"$state/moto.pid"
  for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$moto_port/moto-api/" >/dev/null 2>&1 && break; sleep 0.2; done
  aws() { command aws --endpoint-url "http://127.0.0.1:$moto_port" "$@"; }
  aws s3 mb "s3://$bucket" >/dev/null
  dlq=$(aws sqs create-queue --queue-name fhirload-drop-dlq --query QueueUrl --output text)
  dlq_arn=$(aws sqs get-queue-attributes --queue-url "$dlq" --attribute-names QueueArn --query Attributes.QueueArn --output text)
  queue=$(aws sqs create-queue --queue-name fhirload-drop --attributes \
    "{\"VisibilityTimeout\":\"300\",\"RedrivePolicy\":\"{\\\"deadLetterTargetArn\\\":\\\"$dlq_arn\\\",\\\"maxReceiveCount\\\":\\\"5\\\"}\"}" \
    --query QueueUrl --output text)
  arn=$(aws sqs get-queue-attributes --queue-url "$queue" --attribute-names QueueArn --query Attributes.QueueArn --output text)
  aws s3api put-bucket-notification-configuration --bucket "$bucket" --notification-configuration \
    "{\"QueueConfigurations\":[{\"QueueArn\":\"$arn\",\"Events\":[\"s3:ObjectCreated:*\"]}]}"
  "$state/fhirload" serve --addr "127.0.0.1:$fhir_port" --data "$state/store" >"$state/serve.log" 2>&1 & echo $! >"$state/serve.pid"
  cat >"$state/pipeline.yaml" <<YAML
source: {queue_url: "$queue", wait_seconds: 5}
target: {url: "http://127.0.0.1:$fhir_port/datastore/local/r4/", auth: sigv4}
aws: {endpoint_url: "http://127.0.0.1:$moto_port", s3_path_style: true}
deadletter: {url: "file://$PWD/$state/deadletter"}
YAML
  "$state/fhirload" watch --config "$state/pipeline.yaml" >"$state/watch.log" 2>&1 & echo $! >"$state/watch.pid"
  cat <<MSG
stack up: S3/SQS at http://127.0.0.1:$moto_port, FHIR at http://127.0.0.1:$fhir_port/datastore/local/r4/
drop a file:   AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing aws --endpoint-url http://127.0.0.1:$moto_port s3 cp testdata/sample/Patient.ndjson.gz s3://$bucket/in/
watch logs:    tail -f $state/watch.log     metrics: curl -s 127.0.0.1:9464/metrics | grep ^fhirload_
dead letters:  $state/fhirload deadletter ls --config $state/pipeline.yaml
stop:          scripts/dev-stack.sh stop
MSG
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
