package fhirstore

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/fhirload/fhirload/internal/testlines"
)

// fuzzNow is the fixed clock of the SigV4 fuzz target.
var fuzzNow = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)

// FuzzSigV4Verify feeds the verifier of `fhirload serve` arbitrary requests.
// Properties: it never panics; a request signed with the right key is
// accepted whatever its method, path, query and body; the same request with
// a changed body, or signed with another secret, is refused; a request
// carrying an arbitrary Authorization header is refused unless it is the
// correct signature.
func FuzzSigV4Verify(f *testing.F) {
	for _, s := range []struct{ method, path, query, body, auth string }{
		{"GET", "Patient/p1", "", "", ""},
		{"GET", "Observation", "patient=p1&code=http%3A%2F%2Floinc.org%7C8302-2&_count=10", "", ""},
		{"POST", "", "", `{"resourceType":"Bundle","type":"batch","entry":[]}`, ""},
		{"PUT", "Patient/a b", "x=%zz&y", `{"resourceType":"Patient","id":"a"}`, ""},
		{"GET", "metadata", "", "", "AWS4-HMAC-SHA256 Credential=AKIDTESTFULL/20240501/us-east-1/healthlake/aws4_request, SignedHeaders=host;x-amz-date, Signature=00"},
		{"GET", "Patient", "", "", "AWS4-HMAC-SHA256 Credential=/////, SignedHeaders=, Signature=" + strings.Repeat("ab", 32)},
		{"DELETE", "Patient/%2e%2e/x", "a=1&a=2&b=", "", "AWS4-HMAC-SHA256 Credential=AKIDTESTFULL/2024/us-east-1/healthlake/aws4_request,SignedHeaders=host,Signature=zz"},
	} {
		f.Add(s.method, s.path, s.query, []byte(s.body), s.auth)
	}
	v := newVerifier(testRegion, []Key{{AccessKeyID: testKeyID, SecretAccessKey: testSecret, Scopes: []string{"system/*.*"}}},
		func() time.Time { return fuzzNow })
	f.Fuzz(func(t *testing.T, method, path, query string, body []byte, auth string) {
		if method == "" || strings.ContainsAny(method, " \t\r\n()<>@,;:\\\"/[]?={}") {
			method = "GET"
		}
		target := "http://127.0.0.1:8080/datastore/local/r4/" + path
		if query != "" {
			target += "?" + query
		}
		newReq := func(b []byte) *http.Request {
			r, err := http.NewRequest(method, target, bytes.NewReader(b))
			if err != nil {
				return nil
			}
			r.Host = r.URL.Host
			return r
		}
		// An arbitrary Authorization header: no panic, and no acceptance
		// unless it happens to be the right signature.
		if r := newReq(body); r != nil {
			r.Header.Set("Authorization", auth)
			r.Header.Set("X-Amz-Date", fuzzNow.Format(amzDateFormat))
			if _, e := v.verify(r, body); e == nil {
				good := newReq(body)
				signRequest(good, body, testKeyID, testSecret, testRegion, "", fuzzNow)
				if good.Header.Get("Authorization") != auth {
					// Another canonical form of the same request may match; it
					// must still carry a 64-hex-digit signature of our key.
					if a, ok := parseAuthorization(auth); !ok || a.accessKey != testKeyID {
						t.Fatalf("accepted a forged Authorization header %q", auth)
					}
				}
			}
		}
		r := newReq(body)
		if r == nil {
			return
		}
		signRequest(r, body, testKeyID, testSecret, testRegion, "", fuzzNow)
		if _, e := v.verify(r, body); e != nil {
			t.Fatalf("%s %s: a correctly signed request was refused: %s", method, target, e.text)
		}
		tampered := append(append([]byte(nil), body...), 'x')
		if _, e := v.verify(r, tampered); e == nil {
			t.Fatalf("%s %s: a request whose body changed after signing was accepted", method, target)
		}
		other := newReq(body)
		signRequest(other, body, testKeyID, testSecret+"x", testRegion, "", fuzzNow)
		if _, e := v.verify(other, body); e == nil {
			t.Fatalf("%s %s: a request signed with the wrong secret was accepted", method, target)
		}
	})
}

// FuzzSearchParams sends arbitrary search queries to a store holding real
// Patients and Observations. Properties: never a panic or a 5xx (which would
// mean SQL built from input, or an unchecked case); the answer is a searchset
// Bundle (200) or an OperationOutcome (400); and the data is intact after.
func FuzzSearchParams(f *testing.F) {
	for _, q := range []string{
		"", "_id=p1", "_count=0", "_count=1000", "_count=-1", "_summary=count", "_summary=true",
		"name=Doe", "family:exact=Doe", "given:contains=an", "gender=female", "birthdate=ge1970-01-01",
		"birthdate=lt2000&birthdate=gt1900", "identifier=http://hospital.smarthealthit.org|123",
		"identifier=|x", "identifier=x|", "_lastUpdated=gt2020-01-01T00:00:00Z",
		"name=' OR 1=1 --", "_id=1;DROP TABLE resources", "family=%27%3B%20DROP%20TABLE%20r%3B--",
		"name=%", "name=_", "name=\\", "birthdate=eq", "birthdate=2015-13-45", "foo=bar", ":=x", "name:=x",
		"_sort=name", "_include=Observation:patient", "_count=1&_cursor=abc", "a=%zz", "&&&=&", "name=" + strings.Repeat("x", 3000),
	} {
		f.Add("Patient", q)
	}
	for _, q := range []string{
		"patient=p1", "subject=Patient/p1", "code=http://loinc.org|8302-2", "code=8302-2,72514-3",
		"category=laboratory", "date=ge2015-01-01&date=lt2016", "date=ne2015", "date=2011-02-02T21:30:49Z",
		"date=lt2011-02-02T16:30:49-05:00", "patient=Patient/p1' OR '1'='1", "code=|", "code=a|b|c",
		"subject:Patient=p1", "patient:missing=true",
	} {
		f.Add("Observation", q)
	}
	srv, err := Open(context.Background(), Options{Dir: f.TempDir(), Auth: "none"})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = srv.Close() })
	h := srv.Handler()
	seedFuzzStore(f, h)
	want := searchTotal(f, h, "Patient")
	f.Fuzz(func(t *testing.T, typ, query string) {
		if typ != "Patient" && typ != "Observation" {
			typ = "Patient"
		}
		req := httptest.NewRequest(http.MethodGet, "http://127.0.0.1/datastore/local/r4/"+typ, nil)
		req.URL.RawQuery = query
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		switch rec.Code {
		case http.StatusOK:
			var b struct{ ResourceType, Type string }
			if err := json.Unmarshal(rec.Body.Bytes(), &b); err != nil || b.ResourceType != "Bundle" || b.Type != "searchset" {
				t.Fatalf("?%s: 200 but not a searchset Bundle: %.200s", query, rec.Body.String())
			}
		case http.StatusBadRequest:
			var oo struct{ ResourceType string }
			if err := json.Unmarshal(rec.Body.Bytes(), &oo); err != nil || oo.ResourceType != "OperationOutcome" {
				t.Fatalf("?%s: 400 but not an OperationOutcome: %.200s", query, rec.Body.String())
			}
			assertNoInternals(t, rec.Body.Bytes())
		default:
			t.Fatalf("%s?%s: status %d: %.300s", typ, query, rec.Code, rec.Body.String())
		}
		if got := searchTotal(t, h, "Patient"); got != want {
			t.Fatalf("after ?%s the store holds %d Patients, want %d", query, got, want)
		}
	})
}

// seedFuzzStore loads the pathling Patients and a few Observations that
// refer to them.
func seedFuzzStore(tb testing.TB, h http.Handler) {
	tb.Helper()
	put := func(line []byte) {
		var r struct{ ResourceType, ID string }
		if err := json.Unmarshal(line, &r); err != nil {
			tb.Fatal(err)
		}
		req := httptest.NewRequest(http.MethodPut, "http://127.0.0.1/datastore/local/r4/"+r.ResourceType+"/"+r.ID, bytes.NewReader(line))
		req.Header.Set("Content-Type", contentTypeFHIR)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusCreated && rec.Code != http.StatusOK {
			tb.Fatalf("seed %s/%s: %d %s", r.ResourceType, r.ID, rec.Code, rec.Body.String())
		}
	}
	forLines(tb, "../testdata/shared/fhir/pathling/Patient.ndjson", 100, put)
	forLines(tb, "../testdata/shared/fhir/pathling/Observation.ndjson.gz", 50, put)
}

func forLines(tb testing.TB, path string, limit int, fn func([]byte)) {
	tb.Helper()
	n := 0
	testlines.Each(tb, path, func(line []byte) bool {
		if n == limit {
			return false
		}
		n++
		fn(bytes.Clone(line))
		return true
	})
}

func searchTotal(tb testing.TB, h http.Handler, typ string) int {
	tb.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "http://127.0.0.1/datastore/local/r4/"+typ+"?_summary=count", nil))
	var b struct{ Total int }
	if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &b) != nil {
		tb.Fatalf("count %s: %d %s", typ, rec.Code, rec.Body.String())
	}
	return b.Total
}

// assertNoInternals fails when an error body shows implementation details:
// SQL, Go stack traces or source file names.
func assertNoInternals(tb testing.TB, body []byte) {
	tb.Helper()
	low := strings.ToLower(string(body))
	for _, bad := range []string{"sql", "goroutine", ".go:", "panic", "select ", "near \"", "syntax error"} {
		if strings.Contains(low, bad) {
			tb.Fatalf("error body shows internals (%q): %s", bad, body)
		}
	}
}

// FuzzParseBundle feeds the store's JSON decoding (Bundle, then each entry's
// resource with its search-index rows) arbitrary bytes. Properties: it never
// panics; a Bundle it accepts is valid JSON; every resource it accepts has
// index keys that decode back to as many rows as it extracted.
func FuzzParseBundle(f *testing.F) {
	f.Add([]byte(`{"resourceType":"Bundle","type":"batch","entry":[{"resource":` + patientJSON + `,"request":{"method":"PUT","url":"Patient/p1"}}]}`))
	f.Add([]byte(`{"resourceType":"Bundle","type":"batch","entry":[{"resource":{"resourceType":"Observation","status":"final",` +
		`"code":{"coding":[{"system":"http://loinc.org","code":"8302-2"}]},"subject":{"reference":"Patient/p1"},` +
		`"effectivePeriod":{"start":"2020-01-01","end":"2020-02"}},"request":{"method":"PUT","url":"Observation/o1"}}]}`))
	f.Add([]byte(`{"resourceType":"Bundle","entry":[null,{"resource":null,"request":null},{"fullUrl":"\u0041"}]} `))
	f.Add([]byte(`{"resourceType":"Patient","name":[{"given":["a\"b",null]}],"identifier":{"value":"1"}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		check := func(res []byte) {
			p, e := parseResource(res, false)
			if e != nil {
				return
			}
			if n := len(decodeRows(p.keys)); n != len(p.rows) {
				t.Fatalf("%d rows, keys decode to %d", len(p.rows), n)
			}
		}
		check(body)
		in, ok := decodeBundle(body)
		if !ok {
			return
		}
		if !json.Valid(body) {
			t.Fatal("accepted a Bundle that is not valid JSON")
		}
		for _, e := range in.Entry {
			if len(e.Resource) > 0 {
				p, fe := parseResource(e.Resource, true)
				if fe == nil && len(decodeRows(p.keys)) != len(p.rows) {
					t.Fatal("entry keys do not decode to its rows")
				}
			}
		}
	})
}
