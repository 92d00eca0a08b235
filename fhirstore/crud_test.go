package fhirstore

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const patientJSON = `{"resourceType":"Patient","id":"p1","identifier":[{"system":"urn:test:mrn","value":"MRN-1"}],` +
	`"name":[{"family":"Lemke","given":["Abram"]}],"gender":"male","birthDate":"1965-01-13"}`

func TestCRUDLifecycle(t *testing.T) {
	e := newEnv(t, Options{})

	// PUT to an absent id creates.
	r := e.do("PUT", "Patient/p1", []byte(patientJSON))
	mustStatus(t, r, http.StatusCreated, "PUT create")
	if got := r.header.Get("ETag"); got != `W/"1"` {
		t.Errorf("ETag = %q, want W/\"1\"", got)
	}
	if loc := r.header.Get("Location"); loc != e.base+"Patient/p1/_history/1" {
		t.Errorf("Location = %q", loc)
	}
	m := r.json(t)
	meta := m["meta"].(map[string]any)
	if meta["versionId"] != "1" || meta["lastUpdated"] == "" {
		t.Errorf("meta = %v", meta)
	}

	// An identical PUT is an update with a new version.
	r = e.do("PUT", "Patient/p1", []byte(patientJSON))
	mustStatus(t, r, http.StatusOK, "PUT update")
	if got := r.header.Get("ETag"); got != `W/"2"` {
		t.Errorf("ETag = %q, want W/\"2\"", got)
	}

	r = e.do("GET", "Patient/p1", nil)
	mustStatus(t, r, http.StatusOK, "read")
	if v := r.json(t)["meta"].(map[string]any)["versionId"]; v != "2" {
		t.Errorf("read versionId = %v", v)
	}
	mustStatus(t, e.do("GET", "Patient/p1/_history/1", nil), http.StatusOK, "vread 1")
	mustStatus(t, e.do("GET", "Patient/p1/_history/3", nil), http.StatusNotFound, "vread 3")
	h := e.do("GET", "Patient/p1/_history", nil)
	mustStatus(t, h, http.StatusOK, "history")
	if h.json(t)["total"] != 2.0 {
		t.Errorf("history total = %v", h.json(t)["total"])
	}

	// POST creates with a server id.
	body := strings.Replace(patientJSON, "MRN-1", "MRN-2", 1)
	r = e.do("POST", "Patient", []byte(body))
	mustStatus(t, r, http.StatusCreated, "POST")
	id := r.json(t)["id"].(string)
	if id == "p1" || !validID(id) {
		t.Errorf("server id = %q", id)
	}
	if !strings.HasSuffix(r.header.Get("Location"), "Patient/"+id+"/_history/1") {
		t.Errorf("Location = %q", r.header.Get("Location"))
	}

	// Delete, then read is 410 Gone, the old version stays readable.
	mustStatus(t, e.do("DELETE", "Patient/p1", nil), http.StatusNoContent, "delete")
	r = e.do("GET", "Patient/p1", nil)
	mustStatus(t, r, http.StatusGone, "read deleted")
	if c := r.issueCode(t); c != "deleted" {
		t.Errorf("issue code %q", c)
	}
	mustStatus(t, e.do("GET", "Patient/p1/_history/2", nil), http.StatusOK, "vread before delete")
	mustStatus(t, e.do("DELETE", "Patient/p1", nil), http.StatusNoContent, "delete again")
	mustStatus(t, e.do("DELETE", "Patient/never", nil), http.StatusNotFound, "delete absent")

	// PUT after delete recreates (201) and continues the version sequence.
	r = e.do("PUT", "Patient/p1", []byte(patientJSON))
	mustStatus(t, r, http.StatusCreated, "PUT after delete")
	if got := r.header.Get("ETag"); got != `W/"4"` {
		t.Errorf("ETag = %q, want W/\"4\"", got)
	}

	// If-Match guards updates.
	r = e.do("PUT", "Patient/p1", []byte(patientJSON), reqOpt{pre: func(r *http.Request) { r.Header.Set("If-Match", `W/"1"`) }})
	mustStatus(t, r, http.StatusPreconditionFailed, "If-Match stale")
	r = e.do("PUT", "Patient/p1", []byte(patientJSON), reqOpt{pre: func(r *http.Request) { r.Header.Set("If-Match", `W/"4"`) }})
	mustStatus(t, r, http.StatusOK, "If-Match current")

	// Prefer: return=minimal sends no body.
	r = e.do("PUT", "Patient/p1", []byte(patientJSON), reqOpt{pre: func(r *http.Request) { r.Header.Set("Prefer", "return=minimal") }})
	mustStatus(t, r, http.StatusOK, "minimal")
	if len(r.body) != 0 {
		t.Errorf("minimal body = %s", r.body)
	}

	// _id and _lastUpdated combine with indexed parameters.
	for q, want := range map[string]float64{
		"Patient?_id=p1&gender=male":                                    1,
		"Patient?_id=p1,nope&identifier=urn:test:mrn%7CMRN-1":           1,
		"Patient?_lastUpdated=ge2000&identifier=urn:test:mrn%7CMRN-2":   1,
		"Patient?_lastUpdated=lt2000&identifier=urn:test:mrn%7CMRN-2":   0,
		"Patient?_id=" + id + "&identifier=urn:test:mrn%7CMRN-1":        0,
		"Patient?gender=male&birthdate=1965-01&family:contains=EMK":     2,
		"Patient?identifier=urn:test:mrn%7C&_summary=count&gender=male": 2,
	} {
		r := e.do("GET", q, nil)
		mustStatus(t, r, http.StatusOK, q)
		if got := r.json(t)["total"]; got != want {
			t.Errorf("%s: total %v, want %v", q, got, want)
		}
	}

	cs := e.do("GET", "metadata", nil)
	mustStatus(t, cs, http.StatusOK, "metadata")
	if cs.json(t)["resourceType"] != "CapabilityStatement" || cs.json(t)["fhirVersion"] != "4.0.1" {
		t.Errorf("metadata: %s", cs.body)
	}
}

// The store must keep every byte of the resource it was given except id and
// meta: number literals, member order, unknown elements, meta.profile.
func TestWriteKeepsResourceBytes(t *testing.T) {
	e := newEnv(t, Options{})
	in := `{"resourceType":"Observation","id":"o1","meta":{"profile":["http://example.org/p"],"versionId":"99","lastUpdated":"2000-01-01T00:00:00Z"},` +
		`"status":"final","code":{"coding":[{"system":"http://loinc.org","code":"8310-5"}]},` +
		`"valueQuantity":{"value":38.10,"unit":"C"},"extension":[{"url":"x","valueDecimal":1.0e2},{"url":"y","valueDecimal":0.30562800211089186}],` +
		`"note":[{"text":"caf\u00e9 \"q\""}]}`
	pretty, _ := json.MarshalIndent(json.RawMessage(in), "", "  ")
	r := e.do("PUT", "Observation/o1", pretty)
	mustStatus(t, r, http.StatusCreated, "PUT")
	got := e.do("GET", "Observation/o1", nil).body
	for _, want := range []string{`"value":38.10`, `"valueDecimal":1.0e2`, `"valueDecimal":0.30562800211089186`,
		`"profile":["http://example.org/p"]`, `"versionId":"1"`, `"note":[{"text":"caf\u00e9 \"q\""}]`} {
		if !bytes.Contains(got, []byte(want)) {
			t.Errorf("stored resource lacks %s: %s", want, got)
		}
	}
	if bytes.Contains(got, []byte(`"99"`)) || bytes.Contains(got, []byte("2000-01-01")) {
		t.Errorf("client meta.versionId/lastUpdated kept: %s", got)
	}
	if !json.Valid(got) {
		t.Errorf("stored resource is not valid JSON: %s", got)
	}
}

func TestRestartPersistsAndFileIsPrivate(t *testing.T) {
	dir := t.TempDir()
	opts := Options{Dir: dir, Keys: []Key{{AccessKeyID: testKeyID, SecretAccessKey: testSecret, Scopes: []string{"system/*.*"}}}}
	srv, err := Open(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}

	e1 := newEnv(t, Options{Dir: dir})
	mustStatus(t, e1.do("PUT", "Patient/p1", []byte(patientJSON)), http.StatusCreated, "PUT")
	mustStatus(t, e1.do("PUT", "Patient/p1", []byte(patientJSON)), http.StatusOK, "PUT again")
	e1.ts.Close()
	if err := e1.srv.Close(); err != nil {
		t.Fatal(err)
	}

	for _, name := range []string{dbFile, dbFile + "-wal", dbFile + "-shm"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			if name == dbFile {
				t.Fatal(err)
			}
			continue
		}
		if mode := fi.Mode().Perm(); mode != 0o600 {
			t.Errorf("%s mode = %o, want 600", name, mode)
		}
	}

	e2 := newEnv(t, Options{Dir: dir})
	r := e2.do("GET", "Patient/p1", nil)
	mustStatus(t, r, http.StatusOK, "read after restart")
	if v := r.json(t)["meta"].(map[string]any)["versionId"]; v != "2" {
		t.Errorf("versionId after restart = %v", v)
	}
	s := e2.do("GET", "Patient?identifier=urn:test:mrn|MRN-1", nil)
	mustStatus(t, s, http.StatusOK, "search after restart")
	if s.json(t)["total"] != 1.0 {
		t.Errorf("total after restart = %v", s.json(t)["total"])
	}
}

// TestSeedProfile: with Profile seed (serve's default), a Patient created
// or updated without name.family or name.given is refused with 400 and an
// OperationOutcome naming the element (as text and as its expression), in
// single requests and in Bundle entries; base accepts it; other types are
// not concerned.
func TestSeedProfile(t *testing.T) {
	seed := newEnv(t, Options{Profile: ProfileSeed})
	base := newEnv(t, Options{})
	cases := map[string]string{
		`{"resourceType":"Patient","id":"p1"}`:                                                    "Patient.name",
		`{"resourceType":"Patient","id":"p1","name":[]}`:                                          "Patient.name",
		`{"resourceType":"Patient","id":"p1","name":[{"given":["Abram"]}]}`:                       "Patient.name[0].family",
		`{"resourceType":"Patient","id":"p1","name":[{"family":"Lemke"}]}`:                        "Patient.name[0].given",
		`{"resourceType":"Patient","id":"p1","name":[{"family":"Lemke","given":[" "]}]}`:          "Patient.name[0].given",
		`{"resourceType":"Patient","id":"p1","name":[{"family":"A","given":["B"]},{"text":"x"}]}`: "Patient.name[1].family",
	}
	for body, elem := range cases {
		for _, method := range []string{"POST", "PUT"} {
			path := "Patient"
			if method == "PUT" {
				path = "Patient/p1"
			}
			r := seed.do(method, path, []byte(body))
			if r.status != http.StatusBadRequest || r.issueCode(t) != "required" || !strings.Contains(string(r.body), `"expression":["`+elem+`"]`) {
				t.Errorf("seed %s %s: %d %s, want 400 required at %s", method, body, r.status, r.body, elem)
			}
			if r := base.do(method, path, []byte(body)); r.status >= 300 {
				t.Errorf("base %s %s: %d %s", method, body, r.status, r.body)
			}
		}
	}
	bundle := `{"resourceType":"Bundle","type":"batch","entry":[` +
		`{"resource":{"resourceType":"Patient","id":"p2"},"request":{"method":"PUT","url":"Patient/p2"}},` +
		`{"resource":` + patientJSON + `,"request":{"method":"PUT","url":"Patient/p1"}},` +
		`{"resource":{"resourceType":"Observation","id":"o1","status":"final","code":{"text":"x"}},"request":{"method":"PUT","url":"Observation/o1"}}]}`
	r := seed.do("POST", "", []byte(bundle))
	mustStatus(t, r, http.StatusOK, "batch")
	if got := strings.Join(entryStatuses(t, r), ","); got != "400 Bad Request,201 Created,201 Created" {
		t.Errorf("batch entries: %s", got)
	}
}
