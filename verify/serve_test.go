package verify_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fhirload/fhirload/deadletter"
	"github.com/fhirload/fhirload/fhirstore"
	"github.com/fhirload/fhirload/ingest"
	"github.com/fhirload/fhirload/internal/testlines"
	"github.com/fhirload/fhirload/loader"
	"github.com/fhirload/fhirload/pipeline"
	"github.com/fhirload/fhirload/verify"
)

// End to end on loopback: the real runner, transform, loader and the local
// FHIR store (fhirload serve), with a slice of the pathling set (its 9
// Patients and first 150 Observations: Patient/… references, non-ASCII
// strings). The whole shared sample is verified by the binary-level tests
// of cmd/fhirload.

const pathlingLines = 9 + 150

// pathling writes the fixture into a temporary folder and returns its files.
func pathling(t testing.TB) []string {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join("..", "testdata", "shared", "fhir", "pathling")
	pat, err := os.ReadFile(filepath.Join(src, "Patient.ndjson"))
	if err != nil {
		t.Fatal(err)
	}
	var obs bytes.Buffer
	n := 0
	testlines.Each(t, filepath.Join(src, "Observation.ndjson.gz"), func(line []byte) bool {
		obs.Write(line)
		obs.WriteByte('\n')
		n++
		return n < 150
	})
	files := []string{filepath.Join(dir, "Patient.ndjson"), filepath.Join(dir, "Observation.ndjson")}
	if err := os.WriteFile(files[0], pat, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(files[1], obs.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return files
}

func startServe(t testing.TB, o fhirstore.Options) string {
	t.Helper()
	o.Dir, o.Auth = t.TempDir(), "none"
	srv, err := fhirstore.Open(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(func() { hs.Close(); _ = srv.Close() })
	return hs.URL + "/datastore/local/r4/"
}

func testCfg() pipeline.Config {
	cfg := pipeline.Defaults()
	cfg.Retry = pipeline.RetryConfig{Initial: 5 * time.Millisecond, Max: 50 * time.Millisecond, MaxElapsed: time.Minute}
	return cfg
}

func loaderOptions(base string, cfg pipeline.Config) loader.Options {
	return loader.Options{BaseURL: base, Auth: loader.AuthNone, BatchSize: cfg.Target.BatchSize, Concurrency: cfg.Target.Concurrency,
		Retry: loader.RetryOptions{Initial: cfg.Retry.Initial, Max: cfg.Retry.Max, MaxElapsed: cfg.Retry.MaxElapsed}}
}

func openPaths(t testing.TB, paths []string) pipeline.Source {
	t.Helper()
	p, err := ingest.NewPaths(paths, ingest.LocalOptions{Suffixes: pipeline.DefaultSuffixes("fhir")})
	if err != nil {
		t.Fatal(err)
	}
	return pipeline.FromIngest(p)
}

// load runs `run` over paths into base.
func load(t testing.TB, base string, paths []string) *pipeline.Report {
	t.Helper()
	cfg := testCfg()
	w, err := loader.New(loaderOptions(base, cfg))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	r := pipeline.NewRunner(pipeline.Deps{Config: cfg, Command: "run", Sink: pipeline.LoaderSink{W: w}, DeadLetters: discard{}})
	rep := r.Run(context.Background(), openPaths(t, paths))
	if rep.Fatal != "" || rep.Loaded != rep.Lines-rep.SkippedBlank {
		t.Fatalf("load: %+v", rep)
	}
	return rep
}

type discard struct{}

func (discard) Put(context.Context, ...deadletter.Entry) error { return nil }

// verifyAt runs `verify` over paths against base.
func verifyAt(t testing.TB, base, method string, paths []string) *verify.Report {
	t.Helper()
	cfg := testCfg()
	rd, err := loader.NewReader(loaderOptions(base, cfg), loader.ReadOptions{Method: method})
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	sink := verify.NewSink(verify.LoaderReader{R: rd}, verify.Options{})
	r := pipeline.NewRunner(pipeline.Deps{Config: cfg, Command: "verify", Sink: sink})
	rep := verify.NewReport(r.Run(context.Background(), openPaths(t, paths)), sink)
	if !rep.Reconciles() {
		t.Fatalf("verify report does not reconcile: %+v", rep)
	}
	return rep
}

// do sends one request to the store's REST API.
func do(t testing.TB, method, url string, body []byte) []byte {
	t.Helper()
	req, _ := http.NewRequest(method, url, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/fhir+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		t.Fatalf("%s %s: HTTP %d %s", method, url, resp.StatusCode, b)
	}
	return b
}

// firstIDs returns the ids of the first n resources of typ in the store.
func firstIDs(t testing.TB, base, typ string, n int) []string {
	var bundle struct {
		Entry []struct{ Resource struct{ ID string } }
	}
	if err := json.Unmarshal(do(t, http.MethodGet, fmt.Sprintf("%s%s?_count=%d", base, typ, n), nil), &bundle); err != nil {
		t.Fatal(err)
	}
	ids := make([]string, len(bundle.Entry))
	for i, e := range bundle.Entry {
		ids[i] = e.Resource.ID
	}
	return ids
}

// TestVerifyAgainstServe: after a clean load every line matches; after 3
// Observations are deleted and 2 Patients changed through the REST API,
// exactly those 5 are reported (with their lines and the paths that
// differ); a second load heals the store and verify is clean again. With
// both read methods.
func TestVerifyAgainstServe(t *testing.T) {
	if testing.Short() {
		t.Skip("loads the fixture into the local store twice per read method")
	}
	for _, method := range []string{loader.ReadBatch, loader.ReadSearch} {
		t.Run(method, func(t *testing.T) {
			t.Parallel()
			pathling := pathling(t)
			base := startServe(t, fhirstore.Options{})
			load(t, base, pathling)
			rep := verifyAt(t, base, method, pathling)
			if rep.Matched != pathlingLines || rep.Verified != pathlingLines || rep.ExitCode() != 0 || len(rep.Mismatches) != 0 {
				t.Fatalf("clean load: %+v", rep)
			}

			obs := firstIDs(t, base, "Observation", 3)
			for _, id := range obs {
				do(t, http.MethodDelete, base+"Observation/"+id, nil)
			}
			pats := firstIDs(t, base, "Patient", 2)
			for i, id := range pats {
				var p map[string]any
				if err := json.Unmarshal(do(t, http.MethodGet, base+"Patient/"+id, nil), &p); err != nil {
					t.Fatal(err)
				}
				if i == 0 {
					p["gender"] = "unknown" // changed
				} else {
					delete(p, "birthDate") // removed
					p["active"] = true     // added
				}
				b, _ := json.Marshal(p)
				do(t, http.MethodPut, base+"Patient/"+id, b)
			}

			rep = verifyAt(t, base, method, pathling)
			if rep.Missing != 3 || rep.Different != 2 || rep.Matched != pathlingLines-5 || rep.ExitCode() != 2 {
				t.Fatalf("after the changes: %+v", rep)
			}
			got := map[string]verify.Mismatch{}
			for _, m := range rep.Mismatches {
				got[m.Type+"/"+m.ID] = m
				if m.Line < 1 || !strings.HasSuffix(m.Source, m.Type+".ndjson") {
					t.Errorf("mismatch %+v: no source line", m)
				}
			}
			for _, id := range obs {
				if m := got["Observation/"+id]; m.Kind != verify.KindMissing {
					t.Errorf("deleted Observation/%s: %+v", id, m)
				}
			}
			want := [][]string{{"Patient.gender"}, {"Patient.birthDate", "Patient.active"}}
			for i, id := range pats {
				m := got["Patient/"+id]
				if m.Kind != verify.KindDifferent || strings.Join(m.Paths, " ") != strings.Join(want[i], " ") {
					t.Errorf("changed Patient/%s: %+v, want paths %q", id, m, want[i])
				}
			}

			load(t, base, pathling) // the rerun heals
			if rep = verifyAt(t, base, method, pathling); rep.Matched != pathlingLines || rep.ExitCode() != 0 {
				t.Fatalf("after the rerun: %+v", rep)
			}
		})
	}
}

// TestVerifyThroughChaos: against a store answering 20% of requests (and
// of batch entries) with 429 and 5% with 500, verify still finishes with
// the right numbers.
func TestVerifyThroughChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("verifies through injected failures (waits out their Retry-After)")
	}
	for _, method := range []string{loader.ReadBatch, loader.ReadSearch} {
		t.Run(method, func(t *testing.T) {
			t.Parallel()
			pathling := pathling(t)
			dir := t.TempDir()
			srv, err := fhirstore.Open(context.Background(), fhirstore.Options{Dir: dir, Auth: "none"})
			if err != nil {
				t.Fatal(err)
			}
			hs := httptest.NewServer(srv.Handler())
			base := hs.URL + "/datastore/local/r4/"
			load(t, base, pathling)
			do(t, http.MethodDelete, base+"Observation/"+firstIDs(t, base, "Observation", 1)[0], nil)
			hs.Close()
			_ = srv.Close()

			chaotic, err := fhirstore.Open(context.Background(), fhirstore.Options{Dir: dir, Auth: "none",
				Chaos429: 0.2, Chaos500: 0.05, ChaosSeed: 7})
			if err != nil {
				t.Fatal(err)
			}
			hs = httptest.NewServer(chaotic.Handler())
			defer func() { hs.Close(); _ = chaotic.Close() }()
			rep := verifyAt(t, hs.URL+"/datastore/local/r4/", method, pathling)
			if rep.Matched != pathlingLines-1 || rep.Missing != 1 || rep.Unreachable != 0 || rep.Retries == 0 || rep.ExitCode() != 2 {
				t.Fatalf("through chaos: %+v", rep)
			}
		})
	}
}
