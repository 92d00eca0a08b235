package loader

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// newTestReader builds a Reader on a loopback server with a fake clock and no jitter.
func newTestReader(t testing.TB, srv *httptest.Server, ro ReadOptions, mutate func(*Options)) (*Reader, *fakeClock) {
	t.Helper()
	clk := newFakeClock()
	o := Options{
		BaseURL: srv.URL + "/datastore/local/r4", Auth: AuthNone, HTTPClient: srv.Client(),
		Retry: RetryOptions{Initial: time.Second, Max: 8 * time.Second, MaxElapsed: time.Minute},
		clock: clk, noJitter: true,
	}
	if mutate != nil {
		mutate(&o)
	}
	r, err := NewReader(o, ro)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r, clk
}

func refs(n int) []Ref {
	out := make([]Ref, n)
	for i := range out {
		out[i] = Ref{Type: "Observation", ID: fmt.Sprintf("obs-%d", i)}
	}
	return out
}

func resourceJSON(ref Ref) string {
	return fmt.Sprintf(`{"resourceType":%q,"id":%q,"meta":{"versionId":"1"},"status":"final"}`, ref.Type, ref.ID)
}

// replyEntry is one entry of a batch-response to reads.
type replyEntry struct{ status, resource, outcome string }

func readReply(w http.ResponseWriter, entries []replyEntry) {
	var sb strings.Builder
	sb.WriteString(`{"resourceType":"Bundle","type":"batch-response","entry":[`)
	for i, e := range entries {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteByte('{')
		if e.resource != "" {
			fmt.Fprintf(&sb, `"resource":%s,`, e.resource)
		}
		fmt.Fprintf(&sb, `"response":{"status":%q`, e.status)
		if e.outcome != "" {
			fmt.Fprintf(&sb, `,"outcome":%s`, e.outcome)
		}
		sb.WriteString("}}")
	}
	sb.WriteString("]}")
	w.Header().Set("Content-Type", "application/fhir+json")
	io.WriteString(w, sb.String())
}

func TestNewReaderValidates(t *testing.T) {
	base := Options{BaseURL: "https://h/r4/", Auth: AuthNone}
	for _, c := range []struct {
		ro ReadOptions
		ok bool
	}{
		{ReadOptions{}, true},
		{ReadOptions{Method: ReadSearch, UnitsPerSecond: 100}, true},
		{ReadOptions{Method: "graphql"}, false},
		{ReadOptions{UnitsPerSecond: -1}, false},
	} {
		r, err := NewReader(base, c.ro)
		if (err == nil) != c.ok {
			t.Errorf("%+v: err %v", c.ro, err)
		}
		if err == nil {
			if want := cmpOr(c.ro.Method, ReadBatch); r.Method() != want {
				t.Errorf("method %q, want %q", r.Method(), want)
			}
			r.Close()
		}
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// TestReadBatchOutcomes: a batch Bundle of GET entries; 200 is found, 404
// and 410 are absent, 429 and 5xx entries are asked again alone, other 4xx
// are unread; the server's own meta comes back untouched.
func TestReadBatchOutcomes(t *testing.T) {
	var mu sync.Mutex
	var sent [][]string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/datastore/local/r4/" {
			t.Errorf("unexpected %s %s", r.Method, r.URL.Path)
		}
		entries := readBundle(t, r)
		var urls []string
		for _, e := range entries {
			if e.Request.Method != http.MethodGet || e.Resource != nil {
				t.Errorf("entry %s with resource %s", e.Request.Method, e.Resource)
			}
			urls = append(urls, e.Request.URL)
		}
		mu.Lock()
		sent = append(sent, urls)
		n := len(sent)
		mu.Unlock()
		var out []replyEntry
		for k, u := range urls {
			typ, id, _ := strings.Cut(u, "/")
			found := replyEntry{status: "200 OK", resource: resourceJSON(Ref{typ, id})}
			if n > 1 {
				out = append(out, found)
				continue
			}
			switch k {
			case 0:
				out = append(out, found)
			case 1:
				out = append(out, replyEntry{status: "404 Not Found", outcome: `{"resourceType":"OperationOutcome","issue":[{"code":"not-found"}]}`})
			case 2:
				out = append(out, replyEntry{status: "410 Gone"})
			case 3:
				out = append(out, replyEntry{status: "429 Too Many Requests"})
			case 4:
				out = append(out, replyEntry{status: "503 Service Unavailable"})
			case 5:
				out = append(out, replyEntry{status: "400 Bad Request", outcome: `{"resourceType":"OperationOutcome","issue":[{"code":"invalid"}]}`})
			}
		}
		readReply(w, out)
	}))
	defer srv.Close()
	r, clk := newTestReader(t, srv, ReadOptions{}, nil)
	in := refs(6)
	got, err := r.Read(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	if len(sent) != 2 || !slices.Equal(sent[1], []string{"Observation/obs-3", "Observation/obs-4"}) {
		t.Fatalf("requests %v: want the 429 and 503 entries asked again alone", sent)
	}
	want := []struct {
		st       ReadStatus
		status   int
		attempts int
	}{{Found, 200, 1}, {Absent, 404, 1}, {Absent, 410, 1}, {Found, 200, 2}, {Found, 200, 2}, {Unread, 400, 1}}
	for i, wnt := range want {
		g := got[i]
		if g.Status != wnt.st || g.HTTPStatus != wnt.status || g.Attempts != wnt.attempts {
			t.Errorf("ref %d: %+v, want %+v", i, g, wnt)
		}
	}
	if string(got[0].Body) != resourceJSON(in[0]) {
		t.Errorf("body %s", got[0].Body)
	}
	if got[5].Message != "HTTP 400 (invalid)" {
		t.Errorf("message %q", got[5].Message)
	}
	if clk.elapsed() != time.Second {
		t.Errorf("waited %v, want one backoff of 1s", clk.elapsed())
	}
	if s := r.Stats(); s.Requests != 2 || s.Throttled != 1 || s.Retries != 2 {
		t.Errorf("stats %+v", s)
	}
}

// TestReadThrottledHonoursRetryAfter: a whole-request 429 with Retry-After
// makes the Reader wait that long (the backoff alone would wait 1s), and
// teaches its pacer.
func TestReadThrottledHonoursRetryAfter(t *testing.T) {
	for _, method := range []string{ReadBatch, ReadSearch} {
		t.Run(method, func(t *testing.T) {
			var n atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				if n.Add(1) == 1 {
					w.Header().Set("Retry-After", "7")
					w.WriteHeader(http.StatusTooManyRequests)
					return
				}
				if r.Method == http.MethodPost {
					readReply(w, []replyEntry{{"200 OK", resourceJSON(Ref{"Observation", "obs-0"}), ""}, {"200 OK", resourceJSON(Ref{"Observation", "obs-1"}), ""}})
					return
				}
				searchReply(w, []Ref{{"Observation", "obs-0"}, {"Observation", "obs-1"}}, "")
			}))
			defer srv.Close()
			r, clk := newTestReader(t, srv, ReadOptions{Method: method}, nil)
			got, err := r.Read(context.Background(), refs(2))
			if err != nil || got[0].Status != Found || got[1].Status != Found || got[0].Attempts != 2 {
				t.Fatalf("%v %+v", err, got)
			}
			if e := clk.elapsed(); e < 7*time.Second || e > 8*time.Second {
				t.Fatalf("waited %v (sleeps %v), want about 7s", e, clk.sleeps)
			}
			if s := r.Stats(); s.Throttled != 1 || s.Limit != DefaultConcurrency/2 {
				t.Fatalf("stats after one 429: %+v", s)
			}
		})
	}
}

func TestReadRetriesExhausted(t *testing.T) {
	for _, method := range []string{ReadBatch, ReadSearch} {
		t.Run(method, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				w.WriteHeader(http.StatusInternalServerError)
			}))
			defer srv.Close()
			r, _ := newTestReader(t, srv, ReadOptions{Method: method}, func(o *Options) { o.Retry.MaxElapsed = 20 * time.Second })
			got, err := r.Read(context.Background(), refs(3))
			if err != nil {
				t.Fatal(err)
			}
			for _, g := range got {
				if g.Status != Unread || g.HTTPStatus != 500 || g.Attempts != 5 || g.Message != "retries exhausted: HTTP 500" {
					t.Fatalf("got %+v", g)
				}
			}
		})
	}
}

func TestReadFatal(t *testing.T) {
	cases := []struct {
		name   string
		status int
		body   string
	}{
		{"401", 401, `{"__type":"UnrecognizedClientException"}`},
		{"403", 403, `{"__type":"AccessDeniedException"}`},
		{"404 data store", 404, `{"message":"no such data store"}`},
	}
	for _, c := range cases {
		for _, method := range []string{ReadBatch, ReadSearch} {
			t.Run(c.name+"/"+method, func(t *testing.T) {
				srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					w.WriteHeader(c.status)
					io.WriteString(w, c.body)
				}))
				defer srv.Close()
				r, _ := newTestReader(t, srv, ReadOptions{Method: method}, nil)
				_, err := r.Read(context.Background(), refs(2))
				var fe *FatalError
				if !errors.As(err, &fe) || fe.Status != c.status {
					t.Fatalf("err %v, want a FatalError with status %d", err, c.status)
				}
			})
		}
	}
	// A batch entry refused for lack of scope stops the run too.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		readReply(w, []replyEntry{{"200 OK", resourceJSON(Ref{"Observation", "obs-0"}), ""}, {"403 Forbidden", "", ""}})
	}))
	defer srv.Close()
	r, _ := newTestReader(t, srv, ReadOptions{}, nil)
	var fe *FatalError
	if _, err := r.Read(context.Background(), refs(2)); !errors.As(err, &fe) || fe.Status != 403 {
		t.Fatalf("entry 403: %v", err)
	}
}

// TestReadFallsBackToSingleGets: a server that refuses a batch Bundle (or
// an _id list) as a whole is read one GET per resource.
func TestReadFallsBackToSingleGets(t *testing.T) {
	for _, method := range []string{ReadBatch, ReadSearch} {
		t.Run(method, func(t *testing.T) {
			var gets atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				if r.Method == http.MethodPost || r.URL.RawQuery != "" {
					w.WriteHeader(http.StatusBadRequest)
					io.WriteString(w, `{"resourceType":"OperationOutcome","issue":[{"code":"not-supported"}]}`)
					return
				}
				gets.Add(1)
				parts := strings.Split(r.URL.Path, "/")
				typ, id := parts[len(parts)-2], parts[len(parts)-1]
				if id == "obs-1" {
					w.WriteHeader(http.StatusNotFound)
					io.WriteString(w, `{"resourceType":"OperationOutcome","issue":[{"code":"not-found","diagnostics":"Resource not found."}]}`)
					return
				}
				io.WriteString(w, resourceJSON(Ref{typ, id}))
			}))
			defer srv.Close()
			r, _ := newTestReader(t, srv, ReadOptions{Method: method}, nil)
			got, err := r.Read(context.Background(), refs(3))
			if err != nil {
				t.Fatal(err)
			}
			if gets.Load() != 3 || got[0].Status != Found || got[1].Status != Absent || got[2].Status != Found {
				t.Fatalf("%d GETs, got %+v", gets.Load(), got)
			}
		})
	}
}

func searchReply(w http.ResponseWriter, found []Ref, next string) {
	var sb strings.Builder
	fmt.Fprintf(&sb, `{"resourceType":"Bundle","type":"searchset","total":%d,"link":[{"relation":"self","url":"x"}`, len(found))
	if next != "" {
		fmt.Fprintf(&sb, `,{"relation":"next","url":%q}`, next)
	}
	sb.WriteString(`],"entry":[`)
	for i, f := range found {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, `{"fullUrl":"x","resource":%s,"search":{"mode":"match"}}`, resourceJSON(f))
	}
	sb.WriteString("]}")
	io.WriteString(w, sb.String())
}

// TestReadSearch: one _id search per type and 100 ids; ids the searchset
// lacks are absent; a repeated ref shares its result; next links are
// followed on the target's own host only.
func TestReadSearch(t *testing.T) {
	var mu sync.Mutex
	var queries []string
	var srvURL string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			t.Errorf("method %s", r.Method)
		}
		mu.Lock()
		queries = append(queries, strings.TrimPrefix(r.URL.Path, "/datastore/local/r4/")+"?"+r.URL.RawQuery)
		mu.Unlock()
		typ := strings.TrimPrefix(r.URL.Path, "/datastore/local/r4/")
		if r.URL.Query().Get("page") == "2" {
			searchReply(w, []Ref{{typ, "p-1"}}, "")
			return
		}
		var found []Ref
		for _, id := range strings.Split(r.URL.Query().Get("_id"), ",") {
			if id != "obs-2" && id != "p-1" {
				found = append(found, Ref{typ, id})
			}
		}
		next := ""
		if typ == "Patient" {
			next = srvURL + "/datastore/local/r4/Patient?page=2"
		}
		searchReply(w, found, next)
	}))
	defer srv.Close()
	srvURL = srv.URL
	r, _ := newTestReader(t, srv, ReadOptions{Method: ReadSearch}, func(o *Options) { o.BatchSize = 500 })
	in := append(refs(205), Ref{"Patient", "p-0"}, Ref{"Patient", "p-1"}, Ref{"Observation", "obs-0"})
	got, err := r.Read(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	for i, g := range got {
		want := Found
		if in[i].ID == "obs-2" {
			want = Absent
		}
		if g.Status != want {
			t.Fatalf("ref %d %v: %+v", i, in[i], g)
		}
		if want == Found && !strings.Contains(string(g.Body), `"id":"`+in[i].ID+`"`) {
			t.Fatalf("ref %d: body %s", i, g.Body)
		}
	}
	if len(queries) != 5 {
		t.Fatalf("queries %d: %q", len(queries), queries)
	}
	first := queries[0]
	if !strings.HasPrefix(first, "Observation?_id=obs-0,obs-1,") || !strings.HasSuffix(first, "&_count=100") || strings.Count(first, ",") != 99 {
		t.Fatalf("first query %q", first)
	}
	if queries[2] != "Observation?_id=obs-200,obs-201,obs-202,obs-203,obs-204&_count=5" {
		t.Fatalf("third query %q", queries[2])
	}
	if queries[3] != "Patient?_id=p-0,p-1&_count=2" || queries[4] != "Patient?page=2" {
		t.Fatalf("patient queries %q", queries[3:])
	}

	// A next link to another host is not followed with our signature.
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		searchReply(w, nil, "http://127.0.0.2:9/steal?page=2")
	}))
	defer evil.Close()
	r2, _ := newTestReader(t, evil, ReadOptions{Method: ReadSearch}, nil)
	var fe *FatalError
	if _, err := r2.Read(context.Background(), refs(2)); !errors.As(err, &fe) {
		t.Fatalf("foreign next link: %v", err)
	}
}

// TestReadUnits: the pacer counts read units (one per resource asked for)
// against ReadOptions.UnitsPerSecond, not against any write budget.
func TestReadUnits(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b struct{ Entry []bundleEntry }
		json.NewDecoder(r.Body).Decode(&b)
		out := make([]replyEntry, len(b.Entry))
		for i, e := range b.Entry {
			typ, id, _ := strings.Cut(e.Request.URL, "/")
			out[i] = replyEntry{"200 OK", resourceJSON(Ref{typ, id}), ""}
		}
		readReply(w, out)
	}))
	defer srv.Close()
	r, clk := newTestReader(t, srv, ReadOptions{UnitsPerSecond: 100}, func(o *Options) { o.WriteUnitsPerSecond = 1 })
	for range 3 {
		if _, err := r.Read(context.Background(), refs(100)); err != nil {
			t.Fatal(err)
		}
	}
	// 300 units at 100/s with a 10-unit burst: the third read starts at 2.9s.
	if e := clk.elapsed(); e < 2800*time.Millisecond || e > 3*time.Second {
		t.Fatalf("elapsed %v (sleeps %v), want about 2.9s", e, clk.sleeps)
	}
}

func TestReadInvalidRefs(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("no request expected, got %s %s", r.Method, r.URL)
	}))
	defer srv.Close()
	r, _ := newTestReader(t, srv, ReadOptions{}, nil)
	got, err := r.Read(context.Background(), []Ref{{"Observation", "bad id"}, {"Obs/x", "1"}})
	if err != nil || got[0].Status != Unread || got[1].Status != Unread {
		t.Fatalf("%v %+v", err, got)
	}
	if _, err := r.Read(context.Background(), refs(101)); err == nil {
		t.Fatal("more refs than the batch size were accepted")
	}
}

// TestReadBadResponse: a batch-response with the wrong number of entries
// (or not a Bundle at all) is retried, not trusted.
func TestReadBadResponse(t *testing.T) {
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		switch n.Add(1) {
		case 1:
			readReply(w, []replyEntry{{"200 OK", resourceJSON(Ref{"Observation", "obs-0"}), ""}}) // one entry for two
		case 2:
			io.WriteString(w, `{"resourceType":"OperationOutcome"}`)
		default:
			readReply(w, []replyEntry{{"200 OK", resourceJSON(Ref{"Observation", "obs-0"}), ""}, {"404 Not Found", "", ""}})
		}
	}))
	defer srv.Close()
	r, _ := newTestReader(t, srv, ReadOptions{}, nil)
	got, err := r.Read(context.Background(), refs(2))
	if err != nil || got[0].Status != Found || got[1].Status != Absent || got[0].Attempts != 3 {
		t.Fatalf("%v %+v", err, got)
	}
	if s := r.Stats(); s.RetriesByCause[CauseBadResponse] != 4 {
		t.Fatalf("stats %+v", s)
	}
}
