package fhirstore

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// Every status of section 1.5 of the HealthLake reference (but 500, see
// TestChaos), plus the HTTP-level ones the server adds, with the body shape
// the reference prescribes.
func TestErrorStatuses(t *testing.T) {
	e := newEnv(t, Options{MaxBodyBytes: 64 << 10})
	mustStatus(t, e.do("PUT", "Patient/p1", []byte(patientJSON)), http.StatusCreated, "seed")
	mustStatus(t, e.do("PUT", "Patient/gone", []byte(strings.NewReplacer(`"p1"`, `"gone"`, "MRN-1", "MRN-G").Replace(patientJSON))), http.StatusCreated, "seed")
	mustStatus(t, e.do("DELETE", "Patient/gone", nil), http.StatusNoContent, "seed delete")
	dupPatient := strings.Replace(patientJSON, `"p1"`, `"p2"`, 1) // same identifier as p1
	withCT := func(ct string) reqOpt { return reqOpt{pre: func(r *http.Request) { r.Header.Set("Content-Type", ct) }} }

	for _, c := range []struct {
		name   string
		method string
		path   string
		body   string
		opt    reqOpt
		status int
		code   string // OperationOutcome issue code; "" for AWS-style bodies
		text   string // part of the message
	}{
		{"malformed JSON", "PUT", "Patient/p1", `{"resourceType":"Patient",`, reqOpt{}, 400, "invalid", "Malformed JSON"},
		{"not an object", "PUT", "Patient/p1", `[1,2]`, reqOpt{}, 400, "invalid", "JSON object"},
		{"wrong resourceType", "PUT", "Patient/p1", `{"resourceType":"Observation","id":"p1","status":"final","code":{}}`, reqOpt{}, 400, "invalid", "does not match"},
		{"unknown resourceType", "POST", "Patient", `{"resourceType":"Bogus"}`, reqOpt{}, 400, "invalid", "Unknown resourceType"},
		{"body id differs from URL id", "PUT", "Patient/p1", strings.Replace(patientJSON, `"p1"`, `"p9"`, 1), reqOpt{}, 400, "invalid", "does not match the id"},
		{"invalid id", "PUT", "Patient/bad$id", patientJSON, reqOpt{}, 400, "invalid", "Invalid resource id"},
		{"invalid gender", "PUT", "Patient/p1", strings.Replace(patientJSON, `"male"`, `"mail"`, 1), reqOpt{}, 400, "invalid", "gender"},
		{"unknown search parameter", "GET", "Patient?birthdat=1970", "", reqOpt{}, 400, "invalid", "'birthdat'"},
		{"bad date", "GET", "Observation?date=ge2015-13", "", reqOpt{}, 400, "invalid", "Invalid date"},
		{"bad _count", "GET", "Patient?_count=x", "", reqOpt{}, 400, "invalid", "_count"},
		{"unknown resource type in URL", "GET", "Bogus/1", "", reqOpt{}, 400, "not-supported", "Unknown resource type"},
		{"not found", "GET", "Patient/nope", "", reqOpt{}, 404, "not-found", "Resource not found"},
		{"unknown datastore", "GET", e.ts.URL + "/datastore/other/r4/Patient/p1", "", reqOpt{}, 404, "not-found", "Datastore not found"},
		{"outside the base", "GET", e.ts.URL + "/foo", "", reqOpt{}, 404, "not-found", "base URL"},
		{"gone", "GET", "Patient/gone", "", reqOpt{}, 410, "deleted", "deleted"},
		{"method not allowed", "POST", "Patient/p1", patientJSON, reqOpt{}, 405, "not-supported", "allowed: GET, PUT, PATCH, DELETE"},
		{"method not allowed on history", "PUT", "Patient/_history", "", reqOpt{}, 405, "not-supported", "allowed: GET"},
		{"PUT base", "PUT", "", "", reqOpt{}, 405, "not-supported", "allowed: GET, POST"},
		{"conditional delete without criteria", "DELETE", "Patient", "", reqOpt{}, 400, "invalid", "needs search parameters"},
		{"FHIRPath patch", "PATCH", "Patient/p1", patientJSON, reqOpt{}, 415, "not-supported", "JSON Patch"},
		{"wrong content type", "PUT", "Patient/p1", patientJSON, withCT("text/plain"), 415, "not-supported", "Content-Type"},
		{"missing content type", "POST", "Patient", patientJSON, withCT(""), 415, "not-supported", "Content-Type"},
		{"too large", "PUT", "Patient/p1", `{"resourceType":"Patient","id":"p1","x":"` + strings.Repeat("a", 70<<10) + `"}`, reqOpt{}, 413, "too-long", "exceeds"},
		{"duplicate identifier on POST", "POST", "Patient", dupPatient, reqOpt{}, 422, "duplicate", "Duplicate identifier"},
		{"duplicate identifier on PUT create", "PUT", "Patient/p2", dupPatient, reqOpt{}, 422, "duplicate", "urn:test:mrn"},
		{"If-Match stale", "PUT", "Patient/p1", patientJSON, reqOpt{pre: func(r *http.Request) { r.Header.Set("If-Match", `W/"7"`) }}, 412, "conflict", "If-Match"},
		{"missing signature", "GET", "Patient/p1", "", reqOpt{unsigned: true}, 401, "", "Missing Authentication Token"},
		{"no scope", "GET", "Patient/p1", "", reqOpt{key: &obsKey}, 403, "", "no scope for Patient read"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var body []byte
			if c.body != "" {
				body = []byte(c.body)
			}
			r := e.do(c.method, c.path, body, c.opt)
			mustStatus(t, r, c.status, c.name)
			if c.code != "" {
				if got := r.issueCode(t); got != c.code {
					t.Errorf("issue code %q, want %q", got, c.code)
				}
			} else if m := r.json(t); m["message"] == nil {
				t.Errorf("AWS-style body lacks message: %s", r.body)
			}
			if !bytes.Contains(r.body, []byte(c.text)) {
				t.Errorf("body lacks %q: %s", c.text, r.body)
			}
			for _, leak := range []string{"MRN-1", "Lemke", "Abram", "1965", "sql", "goroutine"} {
				if bytes.Contains(bytes.ToLower(r.body), bytes.ToLower([]byte(leak))) {
					t.Errorf("error body shows %q: %s", leak, r.body)
				}
			}
		})
	}
	// An update (not a create) may carry an identifier another resource has.
	mustStatus(t, e.do("PUT", "Patient/p3", []byte(strings.NewReplacer(`"p1"`, `"p3"`, "MRN-1", "MRN-3").Replace(patientJSON))), http.StatusCreated, "p3")
	mustStatus(t, e.do("PUT", "Patient/p3", []byte(strings.Replace(patientJSON, `"p1"`, `"p3"`, 1))), http.StatusOK, "p3 update to p1's identifier")
}

func TestThrottle(t *testing.T) {
	clock := &fakeClock{t: time.Now()}
	e := newEnv(t, Options{WriteUnitsPerSecond: 2, now: clock.now})
	big := `{"resourceType":"Patient","id":"p1","language":"` + strings.Repeat("a", 1500) + `"}` // 2 units
	mustStatus(t, e.do("PUT", "Patient/p1", []byte(big)), http.StatusCreated, "first write")
	r := e.do("PUT", "Patient/p1", []byte(big))
	mustStatus(t, r, http.StatusTooManyRequests, "second write")
	if ra := r.header.Get("Retry-After"); ra != "1" {
		t.Errorf("Retry-After = %q, want 1", ra)
	}
	if m := r.json(t); m["__type"] != "ThrottlingException" {
		t.Errorf("429 body: %s", r.body)
	}
	mustStatus(t, e.do("GET", "Patient/p1", nil), http.StatusOK, "reads are not throttled")
	clock.advance(time.Second)
	mustStatus(t, e.do("PUT", "Patient/p1", []byte(big)), http.StatusOK, "after refill")

	// A request larger than a second's worth passes once the bucket is full,
	// then waits for the debt to be repaid.
	clock.advance(5 * time.Second)
	huge := `{"resourceType":"Patient","id":"p1","language":"` + strings.Repeat("a", 5000) + `"}` // 5 units
	mustStatus(t, e.do("PUT", "Patient/p1", []byte(huge)), http.StatusOK, "huge write on a full bucket")
	r = e.do("PUT", "Patient/p1", []byte(big))
	mustStatus(t, r, http.StatusTooManyRequests, "after huge write")
	if ra := r.header.Get("Retry-After"); ra != "3" {
		t.Errorf("Retry-After = %q, want 3 (debt of 3 units, need 2, at 2/s)", ra)
	}
}

// fakeClock is a settable clock for throttling and SigV4 skew tests.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func TestChaos(t *testing.T) {
	for _, c := range []struct {
		name   string
		opts   Options
		status int
		typ    string
	}{
		{"429", Options{Chaos429: 1}, 429, "ThrottlingException"},
		{"500", Options{Chaos500: 1}, 500, "InternalServerException"},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, c.opts)
			r := e.do("PUT", "Patient/p1", []byte(patientJSON))
			mustStatus(t, r, c.status, "request")
			if m := r.json(t); m["__type"] != c.typ {
				t.Errorf("body %s", r.body)
			}
			if c.status == 429 && r.header.Get("Retry-After") == "" {
				t.Error("no Retry-After")
			}
		})
	}

	// Per-entry chaos in a batch: with a fixed seed some entries fail, the
	// others are written, and every failed entry carries an OperationOutcome.
	e := newEnv(t, Options{ChaosSeed: 7, Chaos429: 0.2, Chaos500: 0.2})
	var entries []string
	for i := range 50 {
		entries = append(entries, fmt.Sprintf(`{"resource":{"resourceType":"Patient","id":"c%d"},"request":{"method":"PUT","url":"Patient/c%d"}}`, i, i))
	}
	var r *resp
	for range 20 { // the request itself may draw a fault; retry like a client
		r = e.do("POST", "", []byte(`{"resourceType":"Bundle","type":"batch","entry":[`+strings.Join(entries, ",")+`]}`))
		if r.status == 200 {
			break
		}
	}
	mustStatus(t, r, 200, "batch")
	counts := map[string]int{}
	for _, s := range entryStatuses(t, r) {
		counts[s[:3]]++
	}
	if counts["429"] == 0 || counts["500"] == 0 || counts["201"] == 0 || counts["201"]+counts["429"]+counts["500"] != 50 {
		t.Errorf("entry statuses %v", counts)
	}
	// Count what was stored through a second, chaos-free server on the same data.
	calm := newEnv(t, Options{Dir: e.dir})
	if got := searchCount(t, calm, "Patient"); got != counts["201"] {
		t.Errorf("stored %d, want %d", got, counts["201"])
	}
	if !bytes.Contains(r.body, []byte(`"outcome":{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"throttled"`)) {
		t.Errorf("429 entry without outcome: %.500s", r.body)
	}
}
