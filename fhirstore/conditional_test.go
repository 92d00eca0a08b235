package fhirstore

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// headers is a reqOpt setting request headers (pairs of name and value).
func headers(kv ...string) reqOpt {
	return reqOpt{pre: func(r *http.Request) {
		for i := 0; i+1 < len(kv); i += 2 {
			r.Header.Set(kv[i], kv[i+1])
		}
	}}
}

func patientWith(id, mrn string) string {
	idPart := ""
	if id != "" {
		idPart = `"id":"` + id + `",`
	}
	return `{"resourceType":"Patient",` + idPart + `"identifier":[{"system":"urn:test:mrn","value":"` + mrn + `"}],` +
		`"name":[{"family":"Doe","given":["Jo"]}],"gender":"female"}`
}

// total returns the total of a search.
func total(t *testing.T, e *testEnv, query string) int {
	t.Helper()
	r := e.do("GET", query, nil)
	mustStatus(t, r, http.StatusOK, query)
	n, ok := r.json(t)["total"].(float64)
	if !ok {
		t.Fatalf("%s: no total: %s", query, r.body)
	}
	return int(n)
}

func TestConditionalCreate(t *testing.T) {
	e := newEnv(t, Options{})
	ine := headers("If-None-Exist", "identifier=urn:test:mrn|MRN-9")
	r := e.do("POST", "Patient", []byte(patientWith("", "MRN-9")), ine)
	mustStatus(t, r, http.StatusCreated, "first conditional create")
	loc := r.header.Get("Location")
	r = e.do("POST", "Patient", []byte(patientWith("", "MRN-9")), ine)
	mustStatus(t, r, http.StatusOK, "second conditional create")
	if got := r.header.Get("Location"); got != loc {
		t.Errorf("second create Location %q, want the first's %q", got, loc)
	}
	if n := total(t, e, "Patient?identifier=urn:test:mrn|MRN-9"); n != 1 {
		t.Errorf("%d Patients with MRN-9 after the same conditional create twice, want 1", n)
	}
	// The criteria may be a URL (Patient?…), as fhir-kit-client sends it.
	r = e.do("POST", "Patient", []byte(patientWith("", "MRN-9")), headers("If-None-Exist", "Patient?identifier=urn:test:mrn|MRN-9"))
	mustStatus(t, r, http.StatusOK, "criteria as a URL")

	// Several matches: 412.
	mustStatus(t, e.do("PUT", "Patient/m1", []byte(patientWith("m1", "MRN-20"))), http.StatusCreated, "m1")
	mustStatus(t, e.do("PUT", "Patient/m2", []byte(patientWith("m2", "MRN-21"))), http.StatusCreated, "m2")
	r = e.do("POST", "Patient", []byte(patientWith("", "MRN-22")), headers("If-None-Exist", "family=Doe"))
	mustStatus(t, r, http.StatusPreconditionFailed, "several matches")
	// Criteria that are not search parameters are refused, not ignored.
	r = e.do("POST", "Patient", []byte(patientWith("", "MRN-22")), headers("If-None-Exist", "nope=1"))
	mustStatus(t, r, http.StatusBadRequest, "unknown criterion")
	if !strings.Contains(string(r.body), "nope") {
		t.Errorf("400 does not name the parameter: %s", r.body)
	}

	// A transaction entry's request.ifNoneExist, sent twice.
	tx := `{"resourceType":"Bundle","type":"transaction","entry":[{"fullUrl":"urn:uuid:6e1f0d53-3c8a-4b8e-9a34-3f1c1b6f0a01",` +
		`"resource":` + patientWith("", "MRN-30") + `,"request":{"method":"POST","url":"Patient","ifNoneExist":"identifier=urn:test:mrn|MRN-30"}}]}`
	for i, want := range []string{"201", "200"} {
		r := e.do("POST", "", []byte(tx))
		mustStatus(t, r, http.StatusOK, "transaction")
		if got := parseBundleResp(t, r).Entry[0].Response.Status; !strings.HasPrefix(got, want) {
			t.Errorf("transaction %d: entry status %q, want %s", i, got, want)
		}
	}
	if n := total(t, e, "Patient?identifier=urn:test:mrn|MRN-30"); n != 1 {
		t.Errorf("%d Patients after the same transaction twice, want 1", n)
	}
}

func TestConditionalUpdate(t *testing.T) {
	e := newEnv(t, Options{})
	q := "Patient?identifier=" + url.QueryEscape("urn:test:mrn|MRN-40")
	r := e.do("PUT", q, []byte(patientWith("", "MRN-40")))
	mustStatus(t, r, http.StatusCreated, "no match creates")
	id := r.json(t)["id"].(string)
	body := strings.Replace(patientWith(id, "MRN-40"), `"female"`, `"other"`, 1)
	r = e.do("PUT", q, []byte(body))
	mustStatus(t, r, http.StatusOK, "one match updates")
	if r.header.Get("ETag") != `W/"2"` || r.json(t)["gender"] != "other" {
		t.Errorf("update: ETag %s, body %s", r.header.Get("ETag"), r.body)
	}
	r = e.do("PUT", q, []byte(patientWith("other-id", "MRN-40")))
	mustStatus(t, r, http.StatusBadRequest, "body id differs from the match")
	mustStatus(t, e.do("PUT", "Patient/x2", []byte(patientWith("x2", "MRN-41"))), http.StatusCreated, "x2")
	mustStatus(t, e.do("PUT", "Patient?family=Doe", []byte(patientWith("", "MRN-42"))), http.StatusPreconditionFailed, "several matches")
	if n := total(t, e, "Patient?family=Doe"); n != 2 {
		t.Errorf("%d Patients, want 2", n)
	}
}

func TestConditionalRead(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)}
	e := newEnv(t, Options{now: clock.now})
	mustStatus(t, e.do("PUT", "Patient/p1", []byte(patientJSON)), http.StatusCreated, "seed")
	cases := []struct {
		name   string
		header []string
		want   int
	}{
		{"If-None-Match current", []string{"If-None-Match", `W/"1"`}, http.StatusNotModified},
		{"If-None-Match *", []string{"If-None-Match", `*`}, http.StatusNotModified},
		{"If-None-Match other", []string{"If-None-Match", `W/"7"`}, http.StatusOK},
		{"If-Modified-Since later", []string{"If-Modified-Since", clock.t.Add(time.Hour).Format(http.TimeFormat)}, http.StatusNotModified},
		{"If-Modified-Since same second", []string{"If-Modified-Since", clock.t.Format(http.TimeFormat)}, http.StatusNotModified},
		{"If-Modified-Since earlier", []string{"If-Modified-Since", clock.t.Add(-time.Hour).Format(http.TimeFormat)}, http.StatusOK},
		{"If-Modified-Since not a date", []string{"If-Modified-Since", "yesterday"}, http.StatusBadRequest},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := e.do("GET", "Patient/p1", nil, headers(c.header...))
			mustStatus(t, r, c.want, c.name)
			if c.want == http.StatusNotModified && (len(r.body) != 0 || r.header.Get("ETag") != `W/"1"`) {
				t.Errorf("304 with body %q, ETag %q", r.body, r.header.Get("ETag"))
			}
		})
	}
	// A conditional header on an interaction that does not take it is refused.
	mustStatus(t, e.do("GET", "Patient?_id=p1", nil, headers("If-None-Match", `W/"1"`)), http.StatusBadRequest, "If-None-Match on search")
}

func TestConditionalDeleteAndIfMatch(t *testing.T) {
	e := newEnv(t, Options{})
	mustStatus(t, e.do("PUT", "Patient/p1", []byte(patientJSON)), http.StatusCreated, "seed")
	mustStatus(t, e.do("PUT", "Patient/p1", []byte(patientJSON)), http.StatusOK, "version 2")

	r := e.do("DELETE", "Patient/p1", nil, headers("If-Match", `W/"1"`))
	mustStatus(t, r, http.StatusPreconditionFailed, "DELETE with a stale If-Match")
	mustStatus(t, e.do("GET", "Patient/p1", nil), http.StatusOK, "still there after the refused delete")
	mustStatus(t, e.do("DELETE", "Patient/p1", nil, headers("If-Match", `W/"2"`)), http.StatusNoContent, "DELETE at the current version")
	mustStatus(t, e.do("GET", "Patient/p1", nil), http.StatusGone, "deleted")

	mustStatus(t, e.do("PUT", "Patient/c1", []byte(patientWith("c1", "MRN-50"))), http.StatusCreated, "c1")
	mustStatus(t, e.do("DELETE", "Patient?identifier=urn:test:mrn|MRN-50", nil), http.StatusNoContent, "conditional delete")
	mustStatus(t, e.do("GET", "Patient/c1", nil), http.StatusGone, "conditionally deleted")
	mustStatus(t, e.do("DELETE", "Patient?identifier=urn:test:mrn|MRN-404", nil), http.StatusNoContent, "conditional delete, no match")
}

func TestPatch(t *testing.T) {
	e := newEnv(t, Options{Profile: ProfileSeed})
	mustStatus(t, e.do("PUT", "Patient/p1", []byte(patientJSON)), http.StatusCreated, "seed")
	patchCT := headers("Content-Type", contentTypeJSONPatch)
	version := 1
	for _, c := range []struct {
		name, patch string
		opts        []string // extra headers
		want        int
		check       func(m map[string]any) bool
		text        string // in the OperationOutcome
	}{
		{name: "replace", patch: `[{"op":"replace","path":"/gender","value":"female"}]`, want: 200,
			check: func(m map[string]any) bool { return m["gender"] == "female" }},
		{name: "test then add", patch: `[{"op":"test","path":"/gender","value":"female"},{"op":"add","path":"/name/0/given/-","value":"B."}]`, want: 200,
			check: func(m map[string]any) bool { return len(m["name"].([]any)[0].(map[string]any)["given"].([]any)) == 2 }},
		{name: "failed test changes nothing", patch: `[{"op":"replace","path":"/gender","value":"male"},{"op":"test","path":"/gender","value":"female"}]`, want: 422, text: "test"},
		{name: "missing path", patch: `[{"op":"remove","path":"/telecom"}]`, want: 422, text: "/telecom"},
		{name: "not a patch", patch: `{"op":"replace"}`, want: 400},
		{name: "unknown op", patch: `[{"op":"merge","path":"/gender","value":"x"}]`, want: 400, text: "merge"},
		{name: "changes the id", patch: `[{"op":"replace","path":"/id","value":"p2"}]`, want: 422, text: "id"},
		{name: "result invalid", patch: `[{"op":"replace","path":"/gender","value":"sometimes"}]`, want: 422},
		{name: "seed: removes the name", patch: `[{"op":"remove","path":"/name"}]`, want: 422, text: "name"},
		{name: "stale If-Match", patch: `[{"op":"replace","path":"/gender","value":"other"}]`, opts: []string{"If-Match", `W/"1"`}, want: 412},
		{name: "current If-Match", patch: `[{"op":"replace","path":"/gender","value":"other"}]`, opts: []string{"If-Match", `W/"3"`}, want: 200,
			check: func(m map[string]any) bool { return m["gender"] == "other" }},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := append([]string{"Content-Type", contentTypeJSONPatch}, c.opts...)
			r := e.do("PATCH", "Patient/p1", []byte(c.patch), headers(h...))
			mustStatus(t, r, c.want, c.name)
			if c.want == 200 {
				version++
				if got, want := r.header.Get("ETag"), fmt.Sprintf(`W/"%d"`, version); got != want {
					t.Errorf("ETag %s, want %s", got, want)
				}
				if !c.check(r.json(t)) {
					t.Errorf("patched resource: %s", r.body)
				}
				return
			}
			if r.json(t)["resourceType"] != "OperationOutcome" || !strings.Contains(string(r.body), c.text) {
				t.Errorf("refusal does not name %q: %s", c.text, r.body)
			}
		})
	}
	// The failed patches wrote nothing.
	r := e.do("GET", "Patient/p1", nil)
	if got, want := r.header.Get("ETag"), fmt.Sprintf(`W/"%d"`, version); got != want {
		t.Errorf("after the patches ETag %s, want %s", got, want)
	}
	mustStatus(t, e.do("PATCH", "Patient/nope", []byte(`[]`), patchCT), http.StatusNotFound, "patch of an absent resource")
	// Conditional patch and a patch in a Bundle (a Binary).
	r = e.do("PATCH", "Patient?identifier=urn:test:mrn|MRN-1", []byte(`[{"op":"replace","path":"/gender","value":"unknown"}]`), patchCT)
	mustStatus(t, r, http.StatusOK, "conditional patch")
	data := "W3sib3AiOiJyZXBsYWNlIiwicGF0aCI6Ii9nZW5kZXIiLCJ2YWx1ZSI6Im1hbGUifV0=" // [{"op":"replace","path":"/gender","value":"male"}]
	tx := `{"resourceType":"Bundle","type":"transaction","entry":[{"resource":{"resourceType":"Binary","contentType":"application/json-patch+json","data":"` +
		data + `"},"request":{"method":"PATCH","url":"Patient/p1"}}]}`
	r = e.do("POST", "", []byte(tx))
	mustStatus(t, r, http.StatusOK, "patch in a transaction")
	if g := e.do("GET", "Patient/p1", nil).json(t)["gender"]; g != "male" {
		t.Errorf("gender after the Bundle patch: %v", g)
	}
}

func TestMethodNotAllowedSaysAllow(t *testing.T) {
	e := newEnv(t, Options{})
	for _, c := range []struct{ method, path, allow string }{
		{"POST", "Patient/p1", "GET, PUT, PATCH, DELETE"},
		{"DELETE", "Patient/_history", "GET"},
		{"PUT", "", "GET, POST"},
		{"DELETE", "metadata", "GET"},
	} {
		r := e.do(c.method, c.path, nil)
		mustStatus(t, r, http.StatusMethodNotAllowed, c.method+" "+c.path)
		if got := r.header.Get("Allow"); got != c.allow {
			t.Errorf("%s %s: Allow %q, want %q", c.method, c.path, got, c.allow)
		}
	}
}

func TestTransactionTouchingAResourceTwice(t *testing.T) {
	e := newEnv(t, Options{})
	for _, c := range []struct{ name, entries string }{
		{"PUT and DELETE", `{"resource":` + patientWith("a", "MRN-60") + `,"request":{"method":"PUT","url":"Patient/a"}},
			{"request":{"method":"DELETE","url":"Patient/a"}}`},
		{"two PUTs", `{"resource":` + patientWith("a", "MRN-60") + `,"request":{"method":"PUT","url":"Patient/a"}},
			{"resource":` + patientWith("a", "MRN-61") + `,"request":{"method":"PUT","url":"Patient/a"}}`},
		{"same conditional update", `{"resource":` + patientWith("", "MRN-60") + `,"request":{"method":"PUT","url":"Patient?identifier=urn:test:mrn|MRN-60"}},
			{"resource":` + patientWith("", "MRN-60") + `,"request":{"method":"PUT","url":"Patient?identifier=urn:test:mrn|MRN-60"}}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := e.do("POST", "", []byte(`{"resourceType":"Bundle","type":"transaction","entry":[`+c.entries+`]}`))
			mustStatus(t, r, http.StatusBadRequest, c.name)
			if !strings.Contains(string(r.body), "touch the same resource") || strings.Contains(string(r.body), "MRN-60") {
				t.Errorf("400 does not say why, or shows an identifier value: %s", r.body)
			}
		})
	}
	mustStatus(t, e.do("GET", "Patient/a", nil), http.StatusNotFound, "nothing written")
	// In a batch the entries are independent: both run.
	r := e.do("POST", "", []byte(`{"resourceType":"Bundle","type":"batch","entry":[{"resource":`+patientWith("a", "MRN-60")+
		`,"request":{"method":"PUT","url":"Patient/a"}},{"request":{"method":"DELETE","url":"Patient/a"}}]}`))
	mustStatus(t, r, http.StatusOK, "batch")
	mustStatus(t, e.do("GET", "Patient/a", nil), http.StatusGone, "batch ran both")
}

// TestCacheBytes: Options.CacheBytes is the page cache of the store's
// connections, readers and writer alike.
func TestCacheBytes(t *testing.T) {
	for _, c := range []struct {
		bytes, wantKiB int64
	}{{0, DefaultCacheBytes >> 10}, {4 << 20, 4096}} {
		e := newEnv(t, Options{CacheBytes: c.bytes})
		st, done, _ := e.srv.reg.acquire(DefaultDatastoreID)
		var r, w int64
		if err := st.r.QueryRow("PRAGMA cache_size").Scan(&r); err != nil {
			t.Fatal(err)
		}
		if err := st.w.QueryRow("PRAGMA cache_size").Scan(&w); err != nil {
			t.Fatal(err)
		}
		done()
		if r != -c.wantKiB || w != -c.wantKiB {
			t.Errorf("CacheBytes %d: cache_size reader %d, writer %d, want %d", c.bytes, r, w, -c.wantKiB)
		}
	}
	if _, err := Open(t.Context(), Options{Dir: t.TempDir(), Auth: "none", CacheBytes: -1}); err == nil {
		t.Error("a negative CacheBytes was accepted")
	}
}

// TestReadOnlyBundleBesideWrites: a Bundle of reads only (what fhirload
// verify sends) is answered on the read connections while a write holds
// the writer; a Bundle with a write waits for it.
func TestReadOnlyBundleBesideWrites(t *testing.T) {
	e := newEnv(t, Options{})
	mustStatus(t, e.do("PUT", "Patient/p1", []byte(patientJSON)), http.StatusCreated, "seed")
	st, done, _ := e.srv.reg.acquire(DefaultDatastoreID)
	defer done()
	holding, release, writeDone := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() {
		writeDone <- st.write(t.Context(), func(*wtx) error {
			close(holding)
			<-release
			return nil
		})
	}()
	<-holding
	reads := `{"resourceType":"Bundle","type":"batch","entry":[{"request":{"method":"GET","url":"Patient/p1"}},` +
		`{"request":{"method":"GET","url":"Patient?identifier=urn:test:mrn|MRN-1"}},{"request":{"method":"GET","url":"Patient/nope"}}]}`
	answered := make(chan *resp, 1)
	go func() { answered <- e.do("POST", "", []byte(reads)) }()
	select {
	case r := <-answered:
		mustStatus(t, r, http.StatusOK, "read-only batch")
		st := entryStatuses(t, r)
		if len(st) != 3 || !strings.HasPrefix(st[0], "200") || !strings.HasPrefix(st[1], "200") || !strings.HasPrefix(st[2], "404") {
			t.Errorf("statuses %v", st)
		}
	case <-time.After(30 * time.Second): // a liveness guard, not a timing assertion
		close(release)
		t.Fatal("a read-only batch waited for the writer")
	}
	// A batch with a write queues behind the held writer and completes
	// once it is released.
	write := `{"resourceType":"Bundle","type":"batch","entry":[{"request":{"method":"GET","url":"Patient/p1"}},` +
		`{"resource":` + patientWith("p2", "MRN-2") + `,"request":{"method":"PUT","url":"Patient/p2"}}]}`
	go func() { answered <- e.do("POST", "", []byte(write)) }()
	close(release)
	if err := <-writeDone; err != nil {
		t.Fatal(err)
	}
	mustStatus(t, <-answered, http.StatusOK, "batch with a write")
	mustStatus(t, e.do("GET", "Patient/p2", nil), http.StatusOK, "written")
}

// TestScopesCoverWhatASearchReads: a key may not see, through _include,
// _revinclude, a chain or _has, a type it may not search.
func TestScopesCoverWhatASearchReads(t *testing.T) {
	e := newEnv(t, Options{})
	mustStatus(t, e.do("PUT", "Patient/p1", []byte(patientJSON)), http.StatusCreated, "seed")
	mustStatus(t, e.do("PUT", "Observation/o1", []byte(`{"resourceType":"Observation","id":"o1","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/p1"}}`)), http.StatusCreated, "seed")
	obs, read := reqOpt{key: &obsKey}, reqOpt{key: &readKey}
	for _, c := range []struct {
		query string
		key   reqOpt
		want  int
	}{
		{"Observation?status=final", obs, 200},
		{"Observation?_include=Observation:subject", obs, 403},
		{"Observation?_include=Observation:subject:Patient", obs, 403},
		{"Observation?subject:Patient.family=Lemke", obs, 403},
		{"Observation?_has:Provenance:target:agent=x", obs, 403},
		{"Observation?_revinclude=Provenance:target", obs, 403},
		{"Observation?_include=Observation:subject", read, 200},
		{"Observation?subject:Patient.family=Lemke", read, 200},
		{"Observation?_has:Provenance:target:agent=x", read, 200},
	} {
		r := e.do("GET", c.query, nil, c.key)
		mustStatus(t, r, c.want, c.query)
		if c.want == 403 && !strings.Contains(string(r.body), "search") {
			t.Errorf("%s: %s", c.query, r.body)
		}
	}
	// In a batch, the entry is refused alone.
	b := `{"resourceType":"Bundle","type":"batch","entry":[{"request":{"method":"GET","url":"Observation?_include=Observation:subject"}},` +
		`{"request":{"method":"GET","url":"Observation?status=final"}}]}`
	r := e.do("POST", "", []byte(b), obs)
	mustStatus(t, r, http.StatusOK, "batch")
	if st := entryStatuses(t, r); len(st) != 2 || !strings.HasPrefix(st[0], "403") || !strings.HasPrefix(st[1], "200") {
		t.Errorf("batch statuses %v", st)
	}
}
