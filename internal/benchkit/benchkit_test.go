package benchkit

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/fhirload/fhirload/loader"
	"github.com/fhirload/fhirload/transform"
)

func TestBatchEntries(t *testing.T) {
	tests := []struct {
		name  string
		body  string
		count int
		ok    bool
	}{
		{"empty bundle", `{"resourceType":"Bundle","type":"batch","entry":[]}`, 0, true},
		{"no entry", `{"resourceType":"Bundle","type":"batch"}`, 0, true},
		{"two", `{"resourceType":"Bundle","type":"batch","entry":[{"resource":{"a":[{}]},"request":{}},{"request":{}}]}`, 2, true},
		{"entry key inside a resource is not counted", `{"entry":[{"resource":{"entry":[{},{}]}}]}`, 1, true},
		{"brackets and escaped quotes in strings", `{"entry":[{"resource":{"div":"{[\"}]\\"}}, {"x":"\\\\"}]}`, 2, true},
		{"whitespace", "{ \"entry\" : [ { } ,\n { } ] }", 2, true},
		{"other arrays are not entries", `{"link":[{},{}],"entry":[{}]}`, 1, true},
		{"unbalanced", `{"entry":[{}`, 1, false},
		{"unterminated string", `{"entry":[{"a":"b}]}`, 0, false},
		{"top-level array", `[{}]`, 0, false},
		{"empty", ``, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, ok := batchEntries([]byte(tt.body))
			if ok != tt.ok || (ok && n != tt.count) {
				t.Errorf("batchEntries = %d, %v; want %d, %v", n, ok, tt.count, tt.ok)
			}
		})
	}
}

func TestNoopAnswers(t *testing.T) {
	noop := &Noop{}
	srv := httptest.NewServer(noop)
	defer srv.Close()
	base := srv.URL + "/datastore/noop/r4/"
	tests := []struct {
		name, method, path, body string
		status                   int
		want                     string // substring of the answer
	}{
		{"metadata", "GET", "metadata", "", 200, `"resourceType":"CapabilityStatement"`},
		{"batch", "POST", "", `{"resourceType":"Bundle","type":"batch","entry":[{"resource":{},"request":{}},{"resource":{},"request":{}}]}`, 200,
			`"entry":[{"response":{"status":"201 Created","etag":"W/\"1\""}},{"response":{"status":"201 Created","etag":"W/\"1\""}}]`},
		{"not a bundle", "POST", "", `[1]`, 400, `"OperationOutcome"`},
		{"put", "PUT", "Patient/p1", `{"resourceType":"Patient","id":"p1"}`, 201, ``},
		{"unknown", "GET", "Patient/p1", "", 404, `"OperationOutcome"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, base+tt.path, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			b, _ := io.ReadAll(res.Body)
			if res.StatusCode != tt.status || !strings.Contains(string(b), tt.want) {
				t.Errorf("%s %s = %d %s; want %d containing %s", tt.method, tt.path, res.StatusCode, b, tt.status, tt.want)
			}
		})
	}
	if s := noop.Stats(); s.Requests != 5 || s.Entries != 3 || s.Signed != 0 {
		t.Errorf("stats = %+v, want 5 requests, 3 entries, 0 signed", s)
	}
}

// TestGenerateLoadsIntoNoop is the benchmark path in small: generated data is
// valid under the seed profile, and the real SigV4 loader writes all of it to
// the no-op endpoint in batch and single mode.
func TestGenerateLoadsIntoNoop(t *testing.T) {
	var pat, obs bytes.Buffer
	st, err := Generate(&pat, &obs, GenOptions{Patients: 5, ObservationsPerPatient: 12, Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	if st.Patients != 5 || st.Observations != 60 || st.PatientBytes != int64(pat.Len()) || st.ObsBytes != int64(obs.Len()) {
		t.Fatalf("stats %+v do not match the output (%d, %d bytes)", st, pat.Len(), obs.Len())
	}
	tr, err := transform.New(transform.Options{Profile: "seed"})
	if err != nil {
		t.Fatal(err)
	}
	var items []loader.Item
	patients := map[string]bool{}
	for _, src := range []*bytes.Buffer{&pat, &obs} {
		s := bufio.NewScanner(bytes.NewReader(src.Bytes()))
		s.Buffer(nil, 1<<20)
		stream := tr.NewStream("bench.ndjson")
		for s.Scan() {
			if n := len(s.Bytes()); n < 700 || n > 1800 {
				t.Errorf("line of %d bytes, want about 1 KB", n)
			}
			res, _, err := stream.Next(s.Bytes())
			if err != nil {
				t.Fatalf("generated line invalid: %v", err)
			}
			if res.Type == "Patient" {
				patients[res.ID] = true
			} else {
				var o struct {
					Subject struct{ Reference string } `json:"subject"`
				}
				if err := json.Unmarshal(res.Body, &o); err != nil {
					t.Fatal(err)
				}
				if id, ok := strings.CutPrefix(o.Subject.Reference, "Patient/"); !ok || !patients[id] {
					t.Errorf("subject %q does not name a generated Patient", o.Subject.Reference)
				}
			}
			items = append(items, loader.Item{Type: res.Type, ID: res.ID, Body: res.Body})
		}
	}
	if len(items) != 65 {
		t.Fatalf("%d resources, want 65", len(items))
	}
	for _, mode := range []string{loader.ModeBatch, loader.ModeSingle} {
		t.Run(mode, func(t *testing.T) {
			noop := &Noop{}
			srv := httptest.NewServer(noop)
			defer srv.Close()
			w, err := loader.New(loader.Options{BaseURL: srv.URL + "/datastore/noop/r4/", Mode: mode, BatchSize: 20, Concurrency: 4,
				Credentials: credentials.NewStaticCredentialsProvider("AKIDTEST", "secret", "")})
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			ctx := context.Background()
			if err := w.Check(ctx); err != nil {
				t.Fatal(err)
			}
			created := 0
			for i := 0; i < len(items); i += 20 {
				outs, err := w.Write(ctx, items[i:min(i+20, len(items))])
				if err != nil {
					t.Fatal(err)
				}
				for _, o := range outs {
					if o.Loaded && o.Created {
						created++
					}
				}
			}
			s := noop.Stats()
			if created != 65 || s.Entries != 65 || s.Signed != s.Requests {
				t.Errorf("created %d, endpoint %+v; want 65 created and entries, every request signed", created, s)
			}
		})
	}
}

func TestGenerateDeterministic(t *testing.T) {
	sum := func(o GenOptions) [2][32]byte {
		var p, ob bytes.Buffer
		if _, err := Generate(&p, &ob, o); err != nil {
			t.Fatal(err)
		}
		return [2][32]byte{sha256.Sum256(p.Bytes()), sha256.Sum256(ob.Bytes())}
	}
	a, b := sum(GenOptions{Bytes: 200 << 10, Seed: 3}), sum(GenOptions{Bytes: 200 << 10, Seed: 3})
	if a != b {
		t.Error("same options gave different bytes")
	}
	if c := sum(GenOptions{Bytes: 200 << 10, Seed: 4}); c == a {
		t.Error("another seed gave the same bytes")
	}
	var p, ob bytes.Buffer
	st, err := Generate(&p, &ob, GenOptions{Bytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if total := st.PatientBytes + st.ObsBytes; total < 1<<20 || total > 1<<20+60<<10 {
		t.Errorf("Bytes 1 MiB wrote %d bytes", total)
	}
}
