package fhirstore

import (
	"context"
	"database/sql"
	"net/http"
	"path/filepath"
	"slices"
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
// JSON (escapes, null, absent) into the rows of every parameter that finds
// them, and a value of the wrong shape is a 400 that names the element.
func TestIndexShapes(t *testing.T) {
	ok := []struct {
		body string
		rows []string // code=a|b, in key order
	}{
		{`{"resourceType":"Patient","name":[{"family":"M\u00fcller","given":["A\"b"]}],"deceasedBoolean":true}`,
			[]string{"deceased=true|", "family=müller|Müller", "given=a\"b|A\"b", "name=a\"b|A\"b", "name=müller|Müller"}},
		{`{"resourceType":"Patient","identifier":{"system":"s","value":"v"}}`, []string{"deceased=false|", "identifier=v|s"}},
		{`{"resourceType":"Patient","gender":"female","birthDate":"1970"}`, []string{"birthdate=0|31536000000", "deceased=false|", "gender=female|http://hl7.org/fhir/administrative-gender"}},
		{`{"resourceType":"Observation","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"1-8"},{"code":""}],"text":"Height"},` +
			`"category":[{"coding":[{"code":"vital-signs"}]}],"subject":{"reference":"Patient/x","display":"2"}}`,
			[]string{"category=vital-signs|", "code:text=height|Height", "code=1-8|http://loinc.org", "patient=x|Patient", "status=final|http://hl7.org/fhir/observation-status"}},
	}
	for _, c := range ok {
		p, e := parseResource([]byte(c.body), false)
		if e != nil {
			t.Errorf("%s: %v", c.body, e.text)
			continue
		}
		var got []string
		for _, r := range p.rows {
			got = append(got, rowString(p.typ, r))
		}
		slices.Sort(got)
		if strings.Join(got, " ") != strings.Join(c.rows, " ") {
			t.Errorf("%s:\n rows %q\n want %q", c.body, got, c.rows)
		}
		if rows := decodeRows(p.keys); len(rows) != len(p.rows) {
			t.Errorf("%s: keys decode to %d rows, want %d", c.body, len(rows), len(p.rows))
		}
	}
	bad := map[string]string{
		`{"resourceType":"Patient","identifier":[1]}`:                                                "Patient.identifier",
		`{"resourceType":"Patient","identifier":[{"value":5}]}`:                                      "Patient.identifier.value",
		`{"resourceType":"Patient","name":"x"}`:                                                      "Patient.name",
		`{"resourceType":"Patient","gender":1}`:                                                      "Patient.gender",
		`{"resourceType":"Patient","birthDate":"1970-01-01T10:00:00Z"}`:                              "Patient.birthDate",
		`{"resourceType":"Patient","Value":"x"}`:                                                     "Value",
		`{"resourceType":"Patient","gender":null}`:                                                   "null",
		`{"resourceType":"Observation","status":"final","code":[]}`:                                  "Observation.code",
		`{"resourceType":"Observation","code":{}}`:                                                   "Observation.status",
		`{"resourceType":"Observation","status":"final","code":{"coding":["x"]}}`:                    "Observation.code.coding",
		`{"resourceType":"Observation","status":"final","code":{},"subject":"Patient/1"}`:            "Observation.subject",
		`{"resourceType":"Observation","status":"final","code":{},"effectiveDateTime":20200101}`:     "Observation.effectiveDateTime",
		`{"resourceType":"Observation","status":"final","code":{},"effectivePeriod":{"start":true}}`: "Observation.effectivePeriod.start",
		`{"resourceType":"Observation","status":"final","code":{},"effectivePeriod":["2020"]}`:       "Observation.effectivePeriod",
		`{"resourceType":"Observation","status":"final","code":{},"effectiveDateTime":"2020-13-01"}`: "Observation.effectiveDateTime",
		`{"resourceType":"Observation","status":"final","code":{},"valueQuantity":{"value":"1"}}`:    "Observation.valueQuantity.value",
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

// TestOpenMigratesVersion2: a data folder of layout version 2 (a fixed list
// of Patient and Observation parameters, no method columns, no meta) is
// migrated on open: its resources keep their versions and history, their
// index rows are computed for every parameter of the catalog, a search of
// any parameter finds them, and history says PUT for versions written
// before (how they were written was not recorded).
func TestOpenMigratesVersion2(t *testing.T) {
	dir := t.TempDir()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, dbFile))
	if err != nil {
		t.Fatal(err)
	}
	v2 := `
CREATE TABLE resources (rid INTEGER PRIMARY KEY, type TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL,
	updated INTEGER NOT NULL, deleted INTEGER NOT NULL DEFAULT 0, body BLOB, keys BLOB, UNIQUE (type, id));
CREATE TABLE history (rid INTEGER NOT NULL, version INTEGER NOT NULL, updated INTEGER NOT NULL, deleted INTEGER NOT NULL,
	body BLOB, PRIMARY KEY (rid, version)) WITHOUT ROWID;
CREATE TABLE idx (k INTEGER NOT NULL, a, b, rid INTEGER NOT NULL, PRIMARY KEY (k, a, b, rid)) WITHOUT ROWID;
INSERT INTO idx VALUES (1, 'stale', 'Stale', 1);
PRAGMA user_version = 2;`
	if _, err := db.Exec(v2); err != nil {
		t.Fatal(err)
	}
	obs := `{"resourceType":"Observation","id":"o1","meta":{"versionId":"2","lastUpdated":"2026-01-02T00:00:00.000Z"},"status":"final",` +
		`"code":{"coding":[{"system":"http://loinc.org","code":"8302-2"}],"text":"Body Height"},"subject":{"reference":"Patient/p1"},` +
		`"encounter":{"reference":"Encounter/e1"},"valueQuantity":{"value":170,"unit":"cm","system":"http://unitsofmeasure.org","code":"cm"}}`
	old := strings.Replace(obs, `"versionId":"2"`, `"versionId":"1"`, 1)
	if _, err := db.Exec(`INSERT INTO resources (type, id, version, updated, body, keys) VALUES ('Observation', 'o1', 2, 1767312000000, ?, x'0102')`, obs); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO history (rid, version, updated, deleted, body) VALUES (1, 1, 1767225600000, 0, ?)`, old); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, Options{Dir: dir})
	for q, want := range map[string]int{
		"Observation?encounter=Encounter/e1": 1, "Observation?value-quantity=170|http://unitsofmeasure.org|cm": 1,
		"Observation?code:text=body": 1, "Observation?status=final": 1, "Observation?patient=p1": 1, "Observation?patient=p2": 0,
	} {
		if got := countOf(t, e, q); got != want {
			t.Errorf("migrated: %s total %d, want %d", q, got, want)
		}
	}
	r := e.do("GET", "Observation/o1/_history/1", nil)
	mustStatus(t, r, http.StatusOK, "vread of a migrated version")
	h := e.do("GET", "Observation/o1/_history", nil)
	mustStatus(t, h, http.StatusOK, "history")
	if !strings.Contains(string(h.body), `"method":"PUT"`) {
		t.Errorf("history of migrated versions: %s", h.body)
	}
	var v int
	if err := e.srv.reg.get(DefaultDatastoreID).st.r.QueryRowContext(context.Background(), `PRAGMA user_version`).Scan(&v); err != nil || v != schemaVersion {
		t.Errorf("user_version %d (%v), want %d", v, err, schemaVersion)
	}
}

// TestActiveKeysSurviveRestart: the index keys a search activated stay
// active after a restart (idx keeps their rows; writes keep them current),
// and keys never searched have no rows in idx.
func TestActiveKeysSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	e := newEnv(t, Options{Dir: dir})
	mustStatus(t, e.do("PUT", "Patient/p1", []byte(patientJSON)), http.StatusCreated, "create")
	if got := countOf(t, e, "Patient?family=lemke"); got != 1 {
		t.Fatalf("family=lemke: %d", got)
	}
	st := e.srv.reg.get(DefaultDatastoreID).st
	rows := func(k int64) int {
		var n int
		if err := st.r.QueryRow(`SELECT count(*) FROM idx WHERE k = ?`, k).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if rows(indexKey("Patient", "family")) != 1 || rows(indexKey("Patient", "birthdate")) != 0 {
		t.Fatalf("family rows %d (want 1), birthdate rows %d (never searched: want 0)", rows(indexKey("Patient", "family")), rows(indexKey("Patient", "birthdate")))
	}
	e.ts.Close()
	if err := e.srv.Close(); err != nil {
		t.Fatal(err)
	}
	e2 := newEnv(t, Options{Dir: dir})
	if !(*e2.srv.reg.get(DefaultDatastoreID).st.active.Load())[indexKey("Patient", "family")] {
		t.Fatal("family is not active after a restart")
	}
	mustStatus(t, e2.do("PUT", "Patient/p1", []byte(strings.Replace(patientJSON, "Lemke", "Kuhn", 1))), http.StatusOK, "update")
	for q, want := range map[string]int{"Patient?family=lemke": 0, "Patient?family=kuhn": 1, "Patient?birthdate=1965": 1} {
		if got := countOf(t, e2, q); got != want {
			t.Errorf("%s: %d, want %d", q, got, want)
		}
	}
}

// TestUnsupportedParametersAreRefused: a parameter the specification
// defines but the store cannot evaluate is refused with 400 naming it and
// why; one it does not define, with 400 naming it and what is supported.
func TestUnsupportedParametersAreRefused(t *testing.T) {
	e := newEnv(t, Options{})
	for q, want := range map[string]string{
		"Observation?code-value-quantity=x$5":  "code-value-quantity",
		"Patient?phonetic=smith":               "phonetic",
		"Observation?_text=height":             "_text",
		"Location?near=1|2|3|km":               "near",
		"Observation?valueQuantity=5":          "valueQuantity",
		"Observation?code:in=http://x/vs":      "terminology",
		"Observation?subject:above=Patient/1":  "above",
		"Observation?date:text=2020":           "text",
		"Observation?date=2020-13":             "date",
		"Observation?value-quantity=gt5|a|b|c": "",
	} {
		r := e.do("GET", q, nil)
		if r.status != http.StatusBadRequest || !strings.Contains(string(r.body), want) {
			t.Errorf("%s: %d %s, want 400 naming %s", q, r.status, r.body, want)
		}
	}
}

// TestIndexHugeNumbers: FHIR decimals have no limit of digits or range;
// a quantity of 10,000 digits or 1e999999 is stored as sent and indexed
// as the largest float64 (a regression: it was refused with 400).
func TestIndexHugeNumbers(t *testing.T) {
	e := newEnv(t, Options{})
	for id, v := range map[string]string{"g1": strings.Repeat("9", 10000), "g2": "1e999999", "g3": "1e-999999", "g4": "-" + strings.Repeat("9", 400)} {
		body := `{"resourceType":"Observation","id":"` + id + `","status":"final","code":{"text":"x"},"valueQuantity":{"value":` + v + `}}`
		mustStatus(t, e.do("PUT", "Observation/"+id, []byte(body)), http.StatusCreated, id)
	}
	for q, want := range map[string]int{"Observation?value-quantity=gt1e300": 2, "Observation?value-quantity=lt-1e300": 1, "Observation?value-quantity=0": 1} {
		if got := countOf(t, e, q); got != want {
			t.Errorf("%s: %d, want %d", q, got, want)
		}
	}
}
