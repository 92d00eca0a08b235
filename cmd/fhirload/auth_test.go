package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
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
	srv, err := fhirstore.Open(context.Background(), fhirstore.Options{Dir: filepath.Join(dir, "store"), Auth: "sigv4",
		Keys: []fhirstore.Key{{AccessKeyID: "AKIDFHIRLOADTEST", SecretAccessKey: "right-secret", Scopes: []string{"system/*.*"}}}})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ctx, l) }()
	t.Cleanup(func() { cancel(); <-done; _ = srv.Close() })

	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDFHIRLOADTEST")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
	t.Setenv("AWS_SESSION_TOKEN", "")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "none"))
	w := newWorkspace(t, fmt.Sprintf("url: %q, auth: sigv4", "http://"+l.Addr().String()+"/datastore/local/r4/"), "")
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
