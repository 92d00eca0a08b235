package fhirstore

import (
	"context"
	"database/sql"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
)

// searchTotal runs a Patient or Observation search and returns its total.
func countOf(t *testing.T, e *testEnv, query string) int {
	t.Helper()
	r := e.do("GET", query+"&_summary=count", nil)
	mustStatus(t, r, http.StatusOK, query)
	return int(r.json(t)["total"].(float64))
}

// TestIndexFollowsUpdates: the index rows of a resource are replaced on an
// update that changes them, kept on one that does not, and dropped on
// delete; nothing stale stays searchable.
func TestIndexFollowsUpdates(t *testing.T) {
	e := newEnv(t, Options{})
	mustStatus(t, e.do("PUT", "Patient/p1", []byte(patientJSON)), http.StatusCreated, "create")
	mustStatus(t, e.do("PUT", "Patient/p1", []byte(patientJSON)), http.StatusOK, "same again")
	for q, want := range map[string]int{"Patient?family=lemke": 1, "Patient?identifier=urn:test:mrn|MRN-1": 1, "Patient?given=abram": 1} {
		if got := countOf(t, e, q); got != want {
			t.Errorf("after an unchanged update: %s total %d, want %d", q, got, want)
		}
	}
	moved := strings.NewReplacer("Lemke", "Kuhn", "MRN-1", "MRN-9").Replace(patientJSON)
	mustStatus(t, e.do("PUT", "Patient/p1", []byte(moved)), http.StatusOK, "changed")
	for q, want := range map[string]int{
		"Patient?family=lemke": 0, "Patient?family=kuhn": 1, "Patient?given=abram": 1,
		"Patient?identifier=urn:test:mrn|MRN-1": 0, "Patient?identifier=urn:test:mrn|MRN-9": 1,
	} {
		if got := countOf(t, e, q); got != want {
			t.Errorf("after a changed update: %s total %d, want %d", q, got, want)
		}
	}
	// The old identifier is free again: another Patient may take it.
	other := strings.Replace(patientJSON, `"id":"p1"`, `"id":"p2"`, 1)
	mustStatus(t, e.do("POST", "Patient", []byte(other)), http.StatusCreated, "create with the freed identifier")
	mustStatus(t, e.do("DELETE", "Patient/p1", nil), http.StatusNoContent, "delete")
	if got := countOf(t, e, "Patient?family=kuhn"); got != 0 {
		t.Errorf("deleted resource still found: %d", got)
	}
	mustStatus(t, e.do("PUT", "Patient/p1", []byte(moved)), http.StatusCreated, "recreate")
	if got := countOf(t, e, "Patient?family=kuhn"); got != 1 {
		t.Errorf("recreated resource found %d times", got)
	}
}

// TestIndexKeepsTextValues: index values are compared as sent, so
// identifiers "00123" and "123" (or a code that looks like a number) are
// different values, not the number 123.
func TestIndexKeepsTextValues(t *testing.T) {
	e := newEnv(t, Options{})
	p := func(id, value string) []byte {
		return []byte(`{"resourceType":"Patient","id":"` + id + `","identifier":[{"system":"urn:test:mrn","value":"` + value + `"}]}`)
	}
	mustStatus(t, e.do("POST", "Patient", p("a", "00123")), http.StatusCreated, "00123")
	mustStatus(t, e.do("POST", "Patient", p("b", "123")), http.StatusCreated, "123 is not a duplicate of 00123")
	mustStatus(t, e.do("POST", "Patient", p("c", "1.23e2")), http.StatusCreated, "1.23e2 is not a duplicate of 123")
	mustStatus(t, e.do("POST", "Patient", p("d", "123")), http.StatusUnprocessableEntity, "123 again is")
	// A refused create leaves nothing behind: the id is still free.
	mustStatus(t, e.do("PUT", "Patient/d", p("d", "123")), http.StatusUnprocessableEntity, "PUT 123 again")
	mustStatus(t, e.do("GET", "Patient/d", nil), http.StatusNotFound, "read the refused create")
	mustStatus(t, e.do("PUT", "Patient/d", p("d", "456")), http.StatusCreated, "create it with a free identifier")
	for q, want := range map[string]int{
		"Patient?identifier=urn:test:mrn|00123": 1, "Patient?identifier=urn:test:mrn|123": 1, "Patient?identifier=123": 1,
		"Patient?identifier=urn:test:mrn|0123": 0,
	} {
		if got := countOf(t, e, q); got != want {
			t.Errorf("%s total %d, want %d", q, got, want)
		}
	}
}

// TestOpenRebuildsVersion1Index: a data folder of the first release (idx
// keyed by type and param strings, no resources.keys) is migrated on open:
// its resources are searchable, and updates keep the index right.
func TestOpenRebuildsVersion1Index(t *testing.T) {
	dir := t.TempDir()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, dbFile))
	if err != nil {
		t.Fatal(err)
	}
	v1 := `
CREATE TABLE resources (rid INTEGER PRIMARY KEY, type TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL,
	updated INTEGER NOT NULL, deleted INTEGER NOT NULL DEFAULT 0, body BLOB, UNIQUE (type, id));
CREATE TABLE history (rid INTEGER NOT NULL, version INTEGER NOT NULL, updated INTEGER NOT NULL, deleted INTEGER NOT NULL,
	body BLOB, PRIMARY KEY (rid, version)) WITHOUT ROWID;
CREATE TABLE idx (type TEXT NOT NULL, param TEXT NOT NULL, a ANY, b ANY, rid INTEGER NOT NULL,
	PRIMARY KEY (type, param, a, b, rid)) WITHOUT ROWID;
CREATE INDEX idx_rid ON idx (rid);
INSERT INTO idx VALUES ('Patient', 'family', 'stale', 'Stale', 1);`
	if _, err := db.Exec(v1); err != nil {
		t.Fatal(err)
	}
	body := strings.Replace(patientJSON, `"id":"p1"`, `"id":"p1","meta":{"versionId":"1","lastUpdated":"2026-01-01T00:00:00.000Z"}`, 1)
	for i, id := range []string{"p1", "p2", "p3"} { // more than one page (reindexPage below)
		b := strings.Replace(body, `"id":"p1"`, `"id":"`+id+`"`, 1)
		if i > 0 {
			b = strings.Replace(b, "MRN-1", "MRN-X"+id, 1)
		}
		if _, err := db.Exec(`INSERT INTO resources (type, id, version, updated, body) VALUES ('Patient', ?, 1, 0, ?)`, id, b); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	defer func(n int) { reindexPage = n }(reindexPage)
	reindexPage = 2
	e := newEnv(t, Options{Dir: dir})
	for q, want := range map[string]int{"Patient?family=lemke": 3, "Patient?family=stale": 0, "Patient?identifier=MRN-1": 1, "Patient?identifier=MRN-Xp3": 1} {
		if got := countOf(t, e, q); got != want {
			t.Errorf("migrated: %s total %d, want %d", q, got, want)
		}
	}
	mustStatus(t, e.do("PUT", "Patient/p1", []byte(strings.Replace(patientJSON, "Lemke", "Kuhn", 1))), http.StatusOK, "update")
	if got := countOf(t, e, "Patient?family=lemke"); got != 2 {
		t.Errorf("after update: family=lemke total %d, want 2", got)
	}
	var v int
	if err := e.srv.reg.get(DefaultDatastoreID).st.r.QueryRowContext(context.Background(), `PRAGMA user_version`).Scan(&v); err != nil || v != schemaVersion {
		t.Errorf("user_version %d (%v), want %d", v, err, schemaVersion)
	}
}

// TestIndexShapes: the elements behind search parameters are decoded as
// JSON (escapes, null, absent) and a value of the wrong shape is a 400 that
// names the element.
func TestIndexShapes(t *testing.T) {
	ok := []struct {
		body string
		rows []string // param=a|b, in order
	}{
		{`{"resourceType":"Patient","name":[{"family":"M\u00fcller","given":["A\"b",null],"text":null}],"gender":null}`,
			[]string{"family=müller|Müller", "name=müller|Müller", "given=a\"b|A\"b", "name=a\"b|A\"b"}},
		{`{"resourceType":"Patient","identifier":{"system":"s","value":"v"},"name":null}`, []string{"identifier=v|s"}},
		{`{"resourceType":"Patient","identifier":[{"value":"v","value":"w","Value":"x"}]}`, []string{"identifier=w|"}},
		{`{"resourceType":"Observation","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"1-8"},{"code":""}],"text":1},` +
			`"category":[{"coding":[{"code":"vital-signs"}]}],"subject":{"reference":"Patient/x","display":2}}`,
			[]string{"code=1-8|http://loinc.org", "category=vital-signs|", "subject=x|Patient"}},
	}
	for _, c := range ok {
		p, e := parseResource([]byte(c.body), false)
		if e != nil {
			t.Errorf("%s: %v", c.body, e.text)
			continue
		}
		var got []string
		for _, r := range p.rows {
			got = append(got, r.param+"="+r.a+"|"+r.b)
		}
		if strings.Join(got, " ") != strings.Join(c.rows, " ") {
			t.Errorf("%s:\n rows %q\n want %q", c.body, got, c.rows)
		}
		if rows := decodeRows(p.keys); len(rows) != len(p.rows) {
			t.Errorf("%s: keys decode to %d rows, want %d", c.body, len(rows), len(p.rows))
		}
	}
	bad := map[string]string{
		`{"resourceType":"Patient","identifier":[1]}`:                                                "identifier",
		`{"resourceType":"Patient","identifier":[{"value":5}]}`:                                      "identifier",
		`{"resourceType":"Patient","name":"x"}`:                                                      "name",
		`{"resourceType":"Patient","name":[{"given":"x"}]}`:                                          "name",
		`{"resourceType":"Patient","gender":1}`:                                                      "gender",
		`{"resourceType":"Patient","birthDate":["1970"]}`:                                            "birthDate",
		`{"resourceType":"Observation","status":"final","code":[]}`:                                  "code",
		`{"resourceType":"Observation","status":"final","code":{"coding":{"code":"x"}}}`:             "code",
		`{"resourceType":"Observation","status":"final","code":{},"category":{}}`:                    "category",
		`{"resourceType":"Observation","status":"final","code":{},"subject":"Patient/1"}`:            "subject",
		`{"resourceType":"Observation","status":"final","code":{},"effectiveDateTime":20200101}`:     "effectiveDateTime",
		`{"resourceType":"Observation","status":"final","code":{},"effectivePeriod":{"start":true}}`: "effectivePeriod",
		`{"resourceType":"Observation","status":"final","code":{},"effectivePeriod":["2020"]}`:       "effectivePeriod",
		`{"resourceType":"Observation","status":"final","code":{},"effectiveDateTime":"2020-13-01"}`: "effectiveDateTime",
	}
	for body, elem := range bad {
		_, e := parseResource([]byte(body), false)
		if e == nil || e.status != http.StatusBadRequest || !strings.Contains(e.text, elem) {
			t.Errorf("%s: got %v, want a 400 naming %s", body, e, elem)
		}
	}
}

func TestSkipString(t *testing.T) {
	for s, want := range map[string]int{
		`"a"x`: 3, `""`: 2, `"a\"b"x`: 6, `"a\\"x`: 5, `"a\\\"b"x`: 8, `"\\\\"`: 6, `"abc`: 4, `"a\"`: 4, `"\u0022"x`: 8,
	} {
		if got := skipString([]byte(s), 0); got != want {
			t.Errorf("skipString(%s) = %d, want %d", s, got, want)
		}
	}
}
