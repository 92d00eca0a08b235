package fhirstore

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

type bundleResp struct {
	ResourceType, Type string
	Entry              []struct {
		Resource json.RawMessage
		Response struct {
			Status, Location, Etag string
			Outcome                *struct {
				Issue []struct{ Code string }
			}
		}
	}
}

func parseBundleResp(t *testing.T, r *resp) bundleResp {
	t.Helper()
	var b bundleResp
	if err := json.Unmarshal(r.body, &b); err != nil {
		t.Fatalf("bad Bundle: %v: %s", err, r.body)
	}
	return b
}

func TestBatch(t *testing.T) {
	e := newEnv(t, Options{})
	mustStatus(t, e.do("PUT", "Patient/p1", []byte(patientJSON)), http.StatusCreated, "seed")
	batch := `{"resourceType":"Bundle","type":"batch","entry":[
	 {"resource":{"resourceType":"Patient","id":"a"},"request":{"method":"PUT","url":"Patient/a"}},
	 {"resource":{"resourceType":"Patient","id":"p1","gender":"female","identifier":[{"system":"urn:test:mrn","value":"MRN-1"}]},"request":{"method":"PUT","url":"Patient/p1"}},
	 {"resource":{"resourceType":"Patient","identifier":[{"system":"urn:test:mrn","value":"MRN-1"}]},"request":{"method":"POST","url":"Patient"}},
	 {"resource":{"resourceType":"Patient","id":"zz"},"request":{"method":"PUT","url":"Patient/other"}},
	 {"resource":{"resourceType":"Observation","id":"o1","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"1-1"}]},"subject":{"reference":"Patient/a"}},"request":{"method":"PUT","url":"Observation/o1"}},
	 {"request":{"method":"GET","url":"Patient/a"}},
	 {"request":{"method":"GET","url":"Observation?patient=a"}},
	 {"request":{"method":"GET","url":"Patient/missing"}},
	 {"request":{"method":"DELETE","url":"Patient/a"}},
	 {"request":{"method":"PATCH","url":"Patient/a"}},
	 {"request":{"method":"GET","url":"Patient?nope=1"}},
	 {"resource":{"resourceType":"Patient","id":"x"}}
	]}`
	r := e.do("POST", "", []byte(batch))
	mustStatus(t, r, 200, "batch")
	b := parseBundleResp(t, r)
	if b.Type != "batch-response" || len(b.Entry) != 12 {
		t.Fatalf("type %q with %d entries", b.Type, len(b.Entry))
	}
	want := []struct {
		status, issue string
	}{
		{"201", ""}, {"200", ""}, {"422", "duplicate"}, {"400", "invalid"}, {"201", ""}, {"200", ""}, {"200", ""},
		{"404", "not-found"}, {"204", ""}, {"400", "invalid"}, {"400", "invalid"}, {"400", "invalid"},
	}
	for i, w := range want {
		en := b.Entry[i]
		if !strings.HasPrefix(en.Response.Status, w.status+" ") {
			t.Errorf("entry %d: status %q, want %s", i, en.Response.Status, w.status)
		}
		if w.issue != "" && (en.Response.Outcome == nil || en.Response.Outcome.Issue[0].Code != w.issue) {
			t.Errorf("entry %d: outcome %+v, want issue %s", i, en.Response.Outcome, w.issue)
		}
	}
	if b.Entry[0].Response.Location != "Patient/a/_history/1" || b.Entry[0].Response.Etag != `W/"1"` {
		t.Errorf("entry 0 response %+v", b.Entry[0].Response)
	}
	if len(b.Entry[0].Resource) != 0 {
		t.Error("write entries carry the resource without Prefer: return=representation")
	}
	if !strings.Contains(string(b.Entry[6].Resource), `"total":1`) {
		t.Errorf("search inside the batch: %s", b.Entry[6].Resource)
	}
	mustStatus(t, e.do("GET", "Patient/a", nil), http.StatusGone, "deleted in batch")

	r = e.do("POST", "", []byte(`{"resourceType":"Bundle","type":"batch","entry":[{"resource":{"resourceType":"Patient","id":"r"},"request":{"method":"PUT","url":"Patient/r"}}]}`),
		reqOpt{pre: func(r *http.Request) { r.Header.Set("Prefer", "return=representation") }})
	if b := parseBundleResp(t, r); !strings.Contains(string(b.Entry[0].Resource), `"versionId":"1"`) {
		t.Errorf("representation: %s", r.body)
	}

	// Scopes are checked per entry: a key for Observations only gets 403 on
	// the Patient entry and its Observation entry written.
	mixed := `{"resourceType":"Bundle","type":"batch","entry":[
	 {"resource":{"resourceType":"Patient","id":"s1"},"request":{"method":"PUT","url":"Patient/s1"}},
	 {"resource":{"resourceType":"Observation","id":"s2","status":"final","code":{}},"request":{"method":"PUT","url":"Observation/s2"}}]}`
	b = parseBundleResp(t, e.do("POST", "", []byte(mixed), reqOpt{key: &obsKey}))
	if !strings.HasPrefix(b.Entry[0].Response.Status, "403") || b.Entry[0].Response.Outcome.Issue[0].Code != "forbidden" ||
		!strings.HasPrefix(b.Entry[1].Response.Status, "201") {
		t.Errorf("per-entry scopes: %+v", b.Entry)
	}

	// Bundle-level errors.
	var many []string
	for i := range MaxBundleEntries + 1 {
		many = append(many, fmt.Sprintf(`{"request":{"method":"GET","url":"Patient/x%d"}}`, i))
	}
	for _, c := range []struct{ name, body string }{
		{"too many entries", `{"resourceType":"Bundle","type":"batch","entry":[` + strings.Join(many, ",") + `]}`},
		{"not a Bundle", `{"resourceType":"Patient"}`},
		{"collection", `{"resourceType":"Bundle","type":"collection","entry":[]}`},
		{"malformed", `{"resourceType":"Bundle",`},
	} {
		r := e.do("POST", "", []byte(c.body))
		mustStatus(t, r, 400, c.name)
		if r.issueCode(t) != "invalid" {
			t.Errorf("%s: %s", c.name, r.body)
		}
	}
}

func TestTransaction(t *testing.T) {
	e := newEnv(t, Options{})
	tx := `{"resourceType":"Bundle","type":"transaction","entry":[
	 {"fullUrl":"urn:uuid:11111111-1111-4111-8111-111111111111","resource":{"resourceType":"Patient","identifier":[{"system":"urn:t","value":"v1"}]},"request":{"method":"POST","url":"Patient"}},
	 {"fullUrl":"urn:uuid:22222222-2222-4222-8222-222222222222","resource":{"resourceType":"Observation","status":"final","code":{"coding":[{"code":"c"}]},
	   "subject":{"reference":"urn:uuid:11111111-1111-4111-8111-111111111111"},"hasMember":[{"reference":"urn:uuid:33333333-3333-4333-8333-333333333333"}]},"request":{"method":"POST","url":"Observation"}},
	 {"fullUrl":"urn:uuid:33333333-3333-4333-8333-333333333333","resource":{"resourceType":"Observation","id":"o3","status":"final","code":{}},"request":{"method":"PUT","url":"Observation/o3"}}]}`
	r := e.do("POST", "", []byte(tx))
	mustStatus(t, r, 200, "transaction")
	b := parseBundleResp(t, r)
	if b.Type != "transaction-response" || len(b.Entry) != 3 {
		t.Fatalf("%s", r.body)
	}
	patLoc := b.Entry[0].Response.Location
	patID := strings.Split(patLoc, "/")[1]
	obsLoc := b.Entry[1].Response.Location
	obs := e.do("GET", strings.TrimSuffix(obsLoc, "/_history/1"), nil)
	mustStatus(t, obs, 200, "read observation")
	if !strings.Contains(string(obs.body), `"subject":{"reference":"Patient/`+patID+`"}`) ||
		!strings.Contains(string(obs.body), `"hasMember":[{"reference":"Observation/o3"}]`) {
		t.Errorf("urn:uuid references not resolved: %s", obs.body)
	}
	if got := searchCount(t, e, "Observation?patient="+patID); got != 1 {
		t.Errorf("search by resolved reference: %d", got)
	}

	// All or nothing: the failing entry (a duplicate identifier) fails the
	// request with its status, and the valid entry before it is not written.
	bad := `{"resourceType":"Bundle","type":"transaction","entry":[
	 {"resource":{"resourceType":"Patient","id":"t1"},"request":{"method":"PUT","url":"Patient/t1"}},
	 {"resource":{"resourceType":"Patient","identifier":[{"system":"urn:t","value":"v1"}]},"request":{"method":"POST","url":"Patient"}}]}`
	r = e.do("POST", "", []byte(bad))
	mustStatus(t, r, 422, "failing transaction")
	if r.issueCode(t) != "duplicate" || !strings.Contains(string(r.body), "entry 1") {
		t.Errorf("%s", r.body)
	}
	mustStatus(t, e.do("GET", "Patient/t1", nil), http.StatusNotFound, "rolled back")

	// Scopes: one entry without scope fails the whole transaction with 403.
	mixed := `{"resourceType":"Bundle","type":"transaction","entry":[
	 {"resource":{"resourceType":"Observation","id":"t2","status":"final","code":{}},"request":{"method":"PUT","url":"Observation/t2"}},
	 {"resource":{"resourceType":"Patient","id":"t3"},"request":{"method":"PUT","url":"Patient/t3"}}]}`
	mustStatus(t, e.do("POST", "", []byte(mixed), reqOpt{key: &obsKey}), http.StatusForbidden, "transaction without scope")
	mustStatus(t, e.do("GET", "Observation/t2", nil), http.StatusNotFound, "nothing written")
}

// Search values reach SQL only as bound parameters: injection attempts are
// either refused (400) or match nothing, and the data is intact afterwards.
func TestSearchInjection(t *testing.T) {
	e := newEnv(t, Options{})
	mustStatus(t, e.do("PUT", "Patient/p1", []byte(patientJSON)), http.StatusCreated, "seed")
	for _, q := range []string{
		"_id=' OR '1'='1",
		"_id=p1') OR 1=1 --",
		"family=x' OR 1=1; DROP TABLE resources; --",
		"family:contains=%_",
		"family:exact=Lemke'--",
		"identifier=urn:test:mrn|' UNION SELECT body FROM history --",
		"gender=male\x00",
		"birthdate=ge1965-01-13' OR 1=1",
		"name=\\",
		"_count=1;DELETE FROM idx",
		"family;DROP=1",
		"given:exact)) OR 1=1 --=x",
	} {
		r := e.do("GET", "Patient?"+url.PathEscape(q), nil)
		if r.status != 200 && r.status != 400 {
			t.Errorf("%q: status %d: %s", q, r.status, r.body)
		}
		if r.status == 200 && r.json(t)["total"] != 0.0 {
			t.Errorf("%q matched: %s", q, r.body)
		}
	}
	if got := searchCount(t, e, "Patient?family=lemke"); got != 1 {
		t.Errorf("after injection attempts: %d patients", got)
	}
	// Raw query strings, not re-encoded by the client.
	for _, raw := range []string{"family=%27%20OR%201%3D1%20--", "family%27=1", "_id=p1%27%29%20OR%20%28%271%27%3D%271"} {
		r := e.do("GET", "Patient?"+raw, nil)
		if r.status != 200 && r.status != 400 {
			t.Errorf("%q: status %d", raw, r.status)
		}
		if r.status == 200 && r.json(t)["total"] != 0.0 {
			t.Errorf("%q matched: %s", raw, r.body)
		}
	}
}
