package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fhirload/fhirload/fhirstore"
)

// A wrong secret key: the run stops fast with exit 1, one line naming the
// 401, and no dead letters (nothing was wrong with the lines).
func TestWrongSecretKeyIsFatal(t *testing.T) {
	dir := t.TempDir()
	base, _ := startStore(t, filepath.Join(dir, "store"), fhirstore.Options{Auth: "sigv4",
		Keys: []fhirstore.Key{{AccessKeyID: "AKIDFHIRLOADTEST", SecretAccessKey: "right-secret", Scopes: []string{"system/*.*"}}}})

	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDFHIRLOADTEST")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
	t.Setenv("AWS_SESSION_TOKEN", "")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "none"))
	w := newWorkspace(t, fmt.Sprintf("url: %q, auth: sigv4", base), "")
	var stdout, stderr bytes.Buffer
	result := make(chan int, 1)
	go func() {
		result <- realMain([]string{"run", "--config", w.config, samplePatients, sampleObservations}, &stdout, &stderr)
	}()
	select {
	case code := <-result:
		if code != 1 {
			t.Fatalf("exit %d, want 1\n%s", code, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("still running after 10 s\n%s", stderr.String())
	}
	last := lastLine(stderr.String())
	t.Logf("stderr: %s", last)
	if !strings.HasPrefix(last, "fhirload: ") || !strings.Contains(last, "401") {
		t.Fatalf("last line %q does not name the 401", last)
	}
	segs, _ := filepath.Glob(filepath.Join(w.dir, "deadletter", "segments", "*"))
	for _, s := range segs {
		if b, _ := os.ReadFile(s); len(bytes.TrimSpace(b)) > 0 {
			t.Fatalf("dead letters written: %s", s)
		}
	}
}
