package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fhirload/fhirload/deadletter"
)

// hangingTarget is a FHIR server that passes the preflight (GET metadata)
// and holds every write until the client goes away: a replay sending to it
// stays in flight, holding its lease.
func hangingTarget(t *testing.T) (url string, writing <-chan struct{}) {
	t.Helper()
	arrived, stop := make(chan struct{}), make(chan struct{})
	var once sync.Once
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/metadata") {
			w.Header().Set("Content-Type", "application/fhir+json")
			w.Write([]byte(`{"resourceType":"CapabilityStatement","status":"active","kind":"instance","fhirVersion":"4.0.1"}`))
			return
		}
		// Read the body: only then does the server notice the client leave.
		io.Copy(io.Discard, r.Body)
		once.Do(func() { close(arrived) })
		select {
		case <-r.Context().Done():
		case <-stop:
		}
	}))
	t.Cleanup(func() {
		close(stop)
		srv.Close()
	})
	return srv.URL + "/", arrived
}

// seedDeadLetters puts n replayable entries into the workspace's store.
func seedDeadLetters(t *testing.T, url string, opts deadletter.Options, from, n int) {
	t.Helper()
	ctx := context.Background()
	st, err := deadletter.Open(ctx, url, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	es := make([]deadletter.Entry, n)
	for i := range es {
		id := fmt.Sprintf("p%d", from+i)
		es[i] = deadletter.Entry{RunID: "night-1", Reason: deadletter.ReasonRetriesExhausted, Stage: deadletter.StageLoad,
			Source: deadletter.Source{URI: "file:///in/Patient.ndjson", Line: int64(from + i)},
			Line:   patientLine(id), ResourceType: "Patient", ResourceID: id, Attempts: 1}
	}
	if err := st.Put(ctx, es...); err != nil {
		t.Fatal(err)
	}
}

// purgeCmd runs `fhirload deadletter purge --yes` in-process.
func (w workspace) purge(t *testing.T, extra ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = realMain(append([]string{"deadletter", "purge", "--config", w.config, "--yes"}, extra...), &out, &errb)
	return code, out.String(), errb.String()
}

// Issue 14, defect 6: `deadletter purge` takes the replay lease. While a
// replay (the built binary, a separate process, stuck sending to a target
// that does not answer) holds it, purge refuses with exit 1 and one line
// naming when the replay started, and purges nothing; --force purges all
// the same; once the replay is gone (SIGKILL: its S3 lease is left behind),
// purge works without --force. Both dead-letter backends.
func TestPurgeRespectsReplayLease(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the fhirload binary (2–10 s); the full suite runs it")
	}
	for _, backend := range []string{"file", "s3"} {
		t.Run(backend, func(t *testing.T) {
			target, writing := hangingTarget(t)
			extra := ""
			var m *motoWorld
			if backend == "s3" {
				m = newMotoWorld(t)
				extra = m.awsYAML()
			}
			w := newWorkspace(t, fmt.Sprintf("url: %q, auth: none", target), extra)
			url, opts := "file://"+filepath.Join(w.dir, "deadletter"), deadletter.Options{}
			if m != nil {
				w.useS3DeadLetters(t, m, "dl")
				url, opts = "s3://"+m.bucket+"/dl", deadletter.Options{S3: m.s3}
			}
			seedDeadLetters(t, url, opts, 1, 20)

			replay := startFhirload(t, w.dir, "replay", "--config", w.config)
			select {
			case <-writing:
			case <-replay.done:
				t.Fatalf("replay exited before writing:\n%s", replay.log())
			case <-time.After(time.Minute):
				t.Fatalf("replay did not start writing:\n%s", replay.log())
			}

			code, out, errs := w.purge(t)
			if code != 1 {
				t.Fatalf("purge during a replay: exit %d, want 1\n%s%s", code, out, errs)
			}
			lines := strings.Split(strings.TrimSpace(errs), "\n")
			if len(lines) != 1 || !strings.HasPrefix(lines[0], "fhirload: a replay is running (since ") ||
				!strings.HasSuffix(lines[0], "): purge refused; --force to override") ||
				!strings.Contains(lines[0], fmt.Sprintf("pid %d", replay.cmd.Process.Pid)) {
				t.Errorf("purge refusal on stderr: %q", errs)
			}
			if n := len(w.deadLetters(t)); n != 20 {
				t.Fatalf("%d entries after the refused purge, want 20", n)
			}

			code, out, errs = w.purge(t, "--force")
			if code != 0 || !strings.Contains(out, "purged 20 entries") {
				t.Fatalf("purge --force: exit %d\n%s%s", code, out, errs)
			}
			if n := len(w.deadLetters(t)); n != 0 {
				t.Fatalf("%d entries after purge --force, want 0", n)
			}

			replay.kill(t)
			seedDeadLetters(t, url, opts, 100, 5)
			code, out, errs = w.purge(t)
			if code != 0 || !strings.Contains(out, "purged 5 entries") {
				t.Fatalf("purge after the replay died: exit %d\n%s%s", code, out, errs)
			}
			if n := len(w.deadLetters(t)); n != 0 {
				t.Fatalf("%d entries left, want 0", n)
			}
		})
	}
}
