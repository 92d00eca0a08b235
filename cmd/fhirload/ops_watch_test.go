package main

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fhirload/fhirload/internal/testutil"
)

// `fhirload watch` serves /metrics with counters that move as files load,
// /healthz and /readyz; SIGTERM stops it cleanly.
func TestWatchServesMetricsAndHealth(t *testing.T) {
	m := newMotoWorld(t)
	queue := m.queue(t, "ops", true)
	dir := t.TempDir()
	port, _ := testutil.FreePort()
	metricsURL := fmt.Sprintf("http://127.0.0.1:%d", port)
	cfg := filepath.Join(dir, "pipeline.yaml")
	_ = os.WriteFile(cfg, []byte(fmt.Sprintf(`source: {queue_url: %q, wait_seconds: 1}
target: {data: "%s/store"}
deadletter: {url: "file://%s/dl"}
log: {level: info, format: json}
%s`, queue, dir, dir, m.awsYAML())), 0o600)
	p := startProcess(t, fhirloadBinary(t), dir, flowEnv, "watch", "--config", cfg, "--metrics-addr", fmt.Sprintf("127.0.0.1:%d", port))

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
	m.put(t, "in/Patient.ndjson.gz", body)
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
	if code := p.stop(t); code != 143 {
		t.Fatalf("watch exit %d after SIGTERM, want 143\n%s", code, p.log())
	}
	if strings.Contains(p.log(), "panic") {
		t.Fatal(p.log())
	}
}
