package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/fhirload/fhirload/internal/testutil"
)

// `fhirload watch` serves /metrics with counters that move as files load,
// /healthz and /readyz; SIGTERM stops it cleanly.
func TestWatchServesMetricsAndHealth(t *testing.T) {
	bin := fhirloadBinary(t)
	ep := testutil.Moto(t)
	ctx := context.Background()
	s3c, sqsc := testutil.S3(ep), testutil.SQS(ep)
	bucket := testutil.Bucket(t, s3c)
	q, err := sqsc.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String("ops-" + bucket)})
	if err != nil {
		t.Fatal(err)
	}
	attrs, err := sqsc.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: q.QueueUrl,
		AttributeNames: []sqstypes.QueueAttributeName{"QueueArn"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s3c.PutBucketNotificationConfiguration(ctx, &s3.PutBucketNotificationConfigurationInput{
		Bucket: aws.String(bucket),
		NotificationConfiguration: &s3types.NotificationConfiguration{QueueConfigurations: []s3types.QueueConfiguration{{
			QueueArn: aws.String(attrs.Attributes["QueueArn"]), Events: []s3types.Event{"s3:ObjectCreated:*"}}}},
	}); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	port, _ := testutil.FreePort()
	metricsURL := fmt.Sprintf("http://127.0.0.1:%d", port)
	cfg := filepath.Join(dir, "pipeline.yaml")
	_ = os.WriteFile(cfg, []byte(fmt.Sprintf(`source: {queue_url: %q, wait_seconds: 1}
target: {data: "%s/store"}
aws: {endpoint_url: %q, s3_path_style: true}
deadletter: {url: "file://%s/dl"}
log: {level: info, format: json}
`, *q.QueueUrl, dir, ep, dir)), 0o600)
	cmd := exec.Command(bin, "watch", "--config", cfg, "--metrics-addr", fmt.Sprintf("127.0.0.1:%d", port))
	cmd.Env = append(os.Environ(), "AWS_ACCESS_KEY_ID=testing", "AWS_SECRET_ACCESS_KEY=testing", "AWS_REGION=us-east-1",
		"AWS_REQUEST_CHECKSUM_CALCULATION=when_required", "AWS_RESPONSE_CHECKSUM_VALIDATION=when_required")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()

	waitFor(t, 30*time.Second, func() bool {
		resp, err := http.Get(metricsURL + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	resp, err := http.Get(metricsURL + "/readyz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("readyz: %v %v", err, resp)
	}
	resp.Body.Close()
	if v := metricValue(t, metricsURL+"/metrics", "fhirload_lines_read_total"); v != 0 {
		t.Fatalf("lines before any file: %v", v)
	}

	body, err := os.ReadFile(samplePatients)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s3c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String("in/Patient.ndjson.gz"),
		Body: bytes.NewReader(body)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, func() bool {
		return metricValue(t, metricsURL+"/metrics", "fhirload_objects_total") >= 1
	})
	for name, want := range map[string]float64{
		"fhirload_lines_read_total":        100,
		"fhirload_resources_created_total": 100,
		"fhirload_objects_in_progress":     0,
	} {
		if got := metricValue(t, metricsURL+"/metrics", name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	// The bucket's s3:TestEvent and the object's event: both received, both deleted.
	recv := metricValue(t, metricsURL+"/metrics", "fhirload_sqs_messages_received_total")
	del := metricValue(t, metricsURL+"/metrics", "fhirload_sqs_messages_deleted_total")
	if recv < 1 || del != recv {
		t.Errorf("sqs messages received %v, deleted %v", recv, del)
	}
	for _, name := range []string{"fhirload_requests_total", "fhirload_concurrency_limit", "fhirload_request_duration_seconds_count"} {
		if got := metricValue(t, metricsURL+"/metrics", name); got <= 0 {
			t.Errorf("%s = %v, want > 0", name, got)
		}
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("watch did not stop on SIGTERM\n%s", stderr.String())
	}
	if code := cmd.ProcessState.ExitCode(); code != 143 {
		t.Fatalf("watch exit %d after SIGTERM, want 143\n%s", code, stderr.String())
	}
	if strings.Contains(stderr.String(), "panic") {
		t.Fatal(stderr.String())
	}
}
