package fhirstore

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

func TestFormatsAre406(t *testing.T) {
	e := newEnv(t, Options{})
	mustStatus(t, e.do("PUT", "Patient/p1", []byte(patientJSON)), http.StatusCreated, "seed")
	accept := func(v string) reqOpt { return headers("Accept", v) }
	for _, c := range []struct {
		name, method, path string
		body               string
		opt                reqOpt
		want               int
	}{
		{"Accept xml, read", "GET", "Patient/p1", "", accept("application/fhir+xml"), 406},
		{"Accept xml, search", "GET", "Patient?gender=male", "", accept("application/fhir+xml"), 406},
		{"Accept xml, metadata", "GET", "metadata", "", accept("application/xml"), 406},
		{"Accept xml, create", "POST", "Patient", patientWith("", "MRN-80"), accept("application/fhir+xml"), 406},
		{"Accept xml or json", "GET", "Patient/p1", "", accept("application/fhir+xml, application/fhir+json;q=0.5"), 200},
		{"Accept json refused by q=0", "GET", "Patient/p1", "", accept("application/fhir+json;q=0, text/html"), 406},
		{"Accept any", "GET", "Patient/p1", "", accept("*/*"), 200},
		{"_format=xml, read", "GET", "Patient/p1?_format=xml", "", reqOpt{}, 406},
		{"_format=xml, search", "GET", "Patient?_format=xml", "", reqOpt{}, 406},
		{"_format=xml, create", "POST", "Patient?_format=xml", patientWith("", "MRN-81"), reqOpt{}, 406},
		{"_format=xml, history", "GET", "_history?_format=application/fhir+xml", "", reqOpt{}, 406},
		{"_format=json", "GET", "Patient/p1?_format=json", "", reqOpt{}, 200},
	} {
		t.Run(c.name, func(t *testing.T) {
			var body []byte
			if c.body != "" {
				body = []byte(c.body)
			}
			r := e.do(c.method, c.path, body, c.opt)
			mustStatus(t, r, c.want, c.name)
			if ct := r.header.Get("Content-Type"); ct != contentTypeFHIR {
				t.Errorf("Content-Type %q", ct)
			}
			if c.want == 406 && r.issueCode(t) != "not-supported" {
				t.Errorf("406 body: %s", r.body)
			}
		})
	}
	if n := total(t, e, "Patient"); n != 1 {
		t.Errorf("the refused creates wrote: %d Patients", n)
	}
}

func TestPreferHandling(t *testing.T) {
	e := newEnv(t, Options{})
	mustStatus(t, e.do("PUT", "Patient/p1", []byte(patientJSON)), http.StatusCreated, "seed")
	for _, prefer := range []string{"", "handling=strict"} {
		var opts []reqOpt
		if prefer != "" {
			opts = append(opts, headers("Prefer", prefer))
		}
		r := e.do("GET", "Patient?gender=male&shoe-size=44", nil, opts...)
		mustStatus(t, r, http.StatusBadRequest, "unknown parameter, "+prefer)
		if !strings.Contains(string(r.body), "shoe-size") {
			t.Errorf("400 does not name the parameter: %s", r.body)
		}
	}
	r := e.do("GET", "Patient?gender=male&shoe-size=44", nil, headers("Prefer", "handling=lenient"))
	mustStatus(t, r, http.StatusOK, "lenient")
	if got := r.header.Get("Preference-Applied"); got != "handling=lenient" {
		t.Errorf("Preference-Applied %q", got)
	}
	var b struct {
		Total int
		Link  []struct{ Relation, URL string }
		Entry []struct {
			Resource map[string]any
			Search   struct{ Mode string }
		}
	}
	if err := json.Unmarshal(r.body, &b); err != nil {
		t.Fatal(err)
	}
	var matches, outcomes int
	for _, en := range b.Entry {
		switch en.Search.Mode {
		case "match":
			matches++
		case "outcome":
			outcomes++
			if en.Resource["resourceType"] != "OperationOutcome" || !strings.Contains(mustJSON(en.Resource), "shoe-size") {
				t.Errorf("outcome entry: %v", en.Resource)
			}
		}
	}
	if b.Total != 1 || matches != 1 || outcomes != 1 {
		t.Errorf("lenient: total %d, %d matches, %d outcomes: %s", b.Total, matches, outcomes, r.body)
	}
	if strings.Contains(b.Link[0].URL, "shoe-size") {
		t.Errorf("self link keeps the ignored parameter: %s", b.Link[0].URL)
	}
	for _, bad := range []string{"handling=sloppy", "return=everything", "respond-async"} {
		r := e.do("GET", "Patient", nil, headers("Prefer", bad))
		mustStatus(t, r, http.StatusBadRequest, bad)
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestPreferReturn(t *testing.T) {
	e := newEnv(t, Options{})
	for i, c := range []struct {
		prefer string
		check  func(t *testing.T, r *resp)
	}{
		{"", func(t *testing.T, r *resp) {
			if r.json(t)["resourceType"] != "Patient" {
				t.Errorf("default: %s", r.body)
			}
		}},
		{"return=representation", func(t *testing.T, r *resp) {
			if r.json(t)["resourceType"] != "Patient" {
				t.Errorf("representation: %s", r.body)
			}
		}},
		{"return=minimal", func(t *testing.T, r *resp) {
			if len(r.body) != 0 {
				t.Errorf("minimal: body %s", r.body)
			}
		}},
		{"return=OperationOutcome", func(t *testing.T, r *resp) {
			if r.issueCode(t) != "informational" || !strings.Contains(string(r.body), "Created Patient/") {
				t.Errorf("OperationOutcome: %s", r.body)
			}
		}},
	} {
		t.Run(c.prefer, func(t *testing.T) {
			var opts []reqOpt
			if c.prefer != "" {
				opts = append(opts, headers("Prefer", c.prefer))
			}
			r := e.do("POST", "Patient", []byte(patientWith("", "MRN-9"+string(rune('0'+i)))), opts...)
			mustStatus(t, r, http.StatusCreated, c.prefer)
			if r.header.Get("Location") == "" || r.header.Get("ETag") != `W/"1"` {
				t.Errorf("headers %v", r.header)
			}
			if c.prefer != "" && r.header.Get("Preference-Applied") != c.prefer {
				t.Errorf("Preference-Applied %q", r.header.Get("Preference-Applied"))
			}
			c.check(t, r)
		})
	}
	// In a Bundle: the write entries carry the resource or an outcome.
	tx := `{"resourceType":"Bundle","type":"transaction","entry":[{"resource":` + patientWith("b1", "MRN-99") + `,"request":{"method":"PUT","url":"Patient/b1"}}]}`
	r := e.do("POST", "", []byte(tx), headers("Prefer", "return=representation"))
	mustStatus(t, r, http.StatusOK, "bundle representation")
	if en := parseBundleResp(t, r).Entry[0]; len(en.Resource) == 0 {
		t.Errorf("representation: entry without resource: %s", r.body)
	}
	r = e.do("POST", "", []byte(tx), headers("Prefer", "return=OperationOutcome"))
	mustStatus(t, r, http.StatusOK, "bundle OperationOutcome")
	if en := parseBundleResp(t, r).Entry[0]; en.Response.Outcome == nil || len(en.Resource) != 0 {
		t.Errorf("OperationOutcome: %s", r.body)
	}
}

func TestCORS(t *testing.T) {
	const app = "https://app.example"
	e := newEnv(t, Options{CORSOrigins: []string{app}})
	off := newEnv(t, Options{})
	any := newEnv(t, Options{CORSOrigins: []string{"*"}})
	preflight := func(origin string) reqOpt {
		return reqOpt{unsigned: true, pre: func(r *http.Request) {
			r.Header.Set("Origin", origin)
			r.Header.Set("Access-Control-Request-Method", "PUT")
			r.Header.Set("Access-Control-Request-Headers", "authorization, content-type, x-amz-date")
		}}
	}
	r := e.do("OPTIONS", "Patient/p1", nil, preflight(app))
	mustStatus(t, r, http.StatusNoContent, "allowed preflight")
	if r.header.Get("Access-Control-Allow-Origin") != app || !strings.Contains(r.header.Get("Access-Control-Allow-Methods"), "PUT") ||
		!strings.Contains(r.header.Get("Access-Control-Allow-Headers"), "authorization") {
		t.Errorf("preflight headers %v", r.header)
	}
	r = any.do("OPTIONS", "Patient/p1", nil, preflight("https://elsewhere.example"))
	mustStatus(t, r, http.StatusNoContent, "preflight, any origin")
	if r.header.Get("Access-Control-Allow-Origin") != "*" {
		t.Errorf("any origin: %v", r.header)
	}
	for name, env := range map[string]*testEnv{"other origin": e, "CORS off": off} {
		r := env.do("OPTIONS", "Patient/p1", nil, preflight("https://evil.example"))
		mustStatus(t, r, http.StatusForbidden, name)
		// 403s are AWS-style JSON, as HealthLake's are.
		if r.header.Get("Access-Control-Allow-Origin") != "" || !strings.Contains(string(r.body), "cors-origin") {
			t.Errorf("%s: %v %s", name, r.header, r.body)
		}
	}
	// The actual request: signed as usual, with the CORS headers.
	r = e.do("PUT", "Patient/p1", []byte(patientJSON), headers("Origin", app))
	mustStatus(t, r, http.StatusCreated, "PUT from the app")
	if r.header.Get("Access-Control-Allow-Origin") != app || !strings.Contains(r.header.Get("Access-Control-Expose-Headers"), "ETag") {
		t.Errorf("response headers %v", r.header)
	}
	r = e.do("GET", "Patient/p1", nil, headers("Origin", "https://evil.example"))
	mustStatus(t, r, http.StatusOK, "GET from another origin")
	if r.header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("another origin allowed: %v", r.header)
	}
	// Unsigned requests other than preflights are still refused.
	mustStatus(t, e.do("GET", "Patient/p1", nil, reqOpt{unsigned: true}, headers("Origin", app)), http.StatusUnauthorized, "unsigned GET")
	// OPTIONS that is not a preflight says what is allowed.
	r = off.do("OPTIONS", "metadata", nil, reqOpt{unsigned: true})
	mustStatus(t, r, http.StatusNoContent, "plain OPTIONS")
	if !strings.Contains(r.header.Get("Allow"), "PATCH") {
		t.Errorf("Allow %q", r.header.Get("Allow"))
	}
}
