package transform

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/fhirload/fhirload/internal/testlines"
)

const uuidX = "6b3c1e52-8a4d-4b0e-9d27-51c38e0a7f14"

func TestReferenceRewriting(t *testing.T) {
	obs := func(extra string) string {
		return `{"resourceType":"Observation","id":"o1","status":"final","code":{"text":"c"}` + extra + `}`
	}
	tests := []struct {
		name, ids, line string
		path            []string // into the output JSON
		want            string
	}{
		{"subject urn:uuid", IDsKeep, obs(`,"subject":{"reference":"urn:uuid:` + uuidX + `"}`), []string{"subject", "reference"}, "Patient/" + uuidX},
		{"subject typed", IDsKeep, obs(`,"subject":{"reference":"urn:uuid:` + uuidX + `","type":"Group"}`), []string{"subject", "reference"}, "Group/" + uuidX},
		{"encounter", IDsKeep, obs(`,"encounter":{"reference":"urn:uuid:` + uuidX + `"}`), []string{"encounter", "reference"}, "Encounter/" + uuidX},
		{"performer", IDsKeep, obs(`,"performer":[{"reference":"urn:uuid:` + uuidX + `"}]`), []string{"performer", "0", "reference"}, "Practitioner/" + uuidX},
		{"hasMember", IDsKeep, obs(`,"hasMember":[{"reference":"urn:uuid:` + uuidX + `"}]`), []string{"hasMember", "0", "reference"}, "Observation/" + uuidX},
		{"focus any type kept", IDsKeep, obs(`,"focus":[{"reference":"urn:uuid:` + uuidX + `"}]`), []string{"focus", "0", "reference"}, "urn:uuid:" + uuidX},
		{"relative kept", IDsKeep, obs(`,"subject":{"reference":"Patient/p1"}`), []string{"subject", "reference"}, "Patient/p1"},
		{"absolute kept", IDsDerive, obs(`,"subject":{"reference":"https://x.org/fhir/Patient/p1"}`), []string{"subject", "reference"}, "https://x.org/fhir/Patient/p1"},
		{"derive urn:uuid patient", IDsDerive, obs(`,"subject":{"reference":"urn:uuid:` + uuidX + `"}`), []string{"subject", "reference"}, "Patient/" + DeriveID("Patient", uuidX)},
		{"derive relative patient", IDsDerive, obs(`,"subject":{"reference":"Patient/p1"}`), []string{"subject", "reference"}, "Patient/" + DeriveID("Patient", "p1")},
		{"derive versioned kept", IDsDerive, obs(`,"subject":{"reference":"Patient/p1/_history/2"}`), []string{"subject", "reference"}, "Patient/p1/_history/2"},
		{"derive encounter", IDsDerive, obs(`,"encounter":{"reference":"urn:uuid:` + uuidX + `"}`), []string{"encounter", "reference"}, "Encounter/" + DeriveID("Encounter", uuidX)},
		{"derive id", IDsDerive, obs(``), []string{"id"}, DeriveID("Observation", "o1")},
		{"derive id without id", IDsDerive, `{"resourceType":"Patient","identifier":[{"system":"urn:s","value":"v1"}],"name":[{"family":"F","given":["G"]}]}`, []string{"id"}, DeriveID("Patient", "urn:s|v1")},
		{"keep id", IDsKeep, obs(``), []string{"id"}, "o1"},
		{"contained reference", IDsKeep, obs(`,"contained":[{"resourceType":"Observation","id":"c","status":"final","code":{"text":"c"},"subject":{"reference":"urn:uuid:` + uuidX + `"}}],"hasMember":[{"reference":"#c"}]`), []string{"contained", "0", "subject", "reference"}, "Patient/" + uuidX},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := mustNew(t, Options{IDs: tt.ids})
			res, _, err := tr.NewStream("x").Next([]byte(tt.line))
			if err != nil {
				t.Fatal(err)
			}
			var doc any
			if err := json.Unmarshal(res.Body, &doc); err != nil {
				t.Fatalf("output is not JSON: %v: %s", err, res.Body)
			}
			for _, p := range tt.path {
				switch d := doc.(type) {
				case map[string]any:
					doc = d[p]
				case []any:
					doc = d[int(p[0]-'0')]
				}
			}
			if doc != tt.want {
				t.Fatalf("%s = %v, want %s", strings.Join(tt.path, "."), doc, tt.want)
			}
			if err := tr.Validate(res.Body); err != nil {
				t.Fatalf("output invalid: %v", err)
			}
		})
	}
}

// TestDeriveSampleConsistent: under ids: derive every sample Observation's subject is the
// derived id of a sample Patient, and two runs give the same ids.
func TestDeriveSampleConsistent(t *testing.T) {
	tr := mustNew(t, Options{IDs: IDsDerive})
	patients := map[string]bool{}
	st := tr.NewStream("Patient.ndjson")
	for _, l := range testlines.All(t, "../testdata/sample/Patient.ndjson.gz") {
		res, _, err := st.Next(l)
		if err != nil {
			t.Fatal(err)
		}
		patients["Patient/"+res.ID] = true
	}
	ids := map[string]bool{}
	obs := testlines.All(t, "../testdata/sample/Observation.ndjson.gz")
	st = tr.NewStream("Observation.ndjson")
	for i, l := range obs {
		res, _, err := st.Next(l)
		if err != nil {
			t.Fatal(err)
		}
		var o struct {
			ID      string
			Subject struct{ Reference string }
		}
		if err := json.Unmarshal(res.Body, &o); err != nil {
			t.Fatal(err)
		}
		if !patients[o.Subject.Reference] || o.ID != res.ID {
			t.Fatalf("observation %d: subject %q not a derived patient id", i, o.Subject.Reference)
		}
		ids[res.ID] = true
		if i < 100 {
			again, _, _ := tr.NewStream("again").Next(l)
			if again.ID != res.ID || string(again.Body) != string(res.Body) {
				t.Fatalf("observation %d: not deterministic", i)
			}
		}
	}
	if len(ids) != len(obs) {
		t.Fatalf("%d distinct ids for %d observations", len(ids), len(obs))
	}
}

func TestDeriveIDIsUUIDv5(t *testing.T) {
	id := DeriveID("Patient", "x")
	if !isUUID([]byte(id), false) || id[14] != '5' || !strings.ContainsAny(id[19:20], "89ab") {
		t.Fatalf("%s is not a UUIDv5", id)
	}
	if DeriveID("Patient", "x") != id || DeriveID("Observation", "x") == id {
		t.Fatal("derivation must depend on type and key only")
	}
}

func TestOptions(t *testing.T) {
	tests := []struct {
		opts Options
		want string // substring of the error; "" for ok
	}{
		{Options{}, ""},
		{Options{Profile: "strict"}, "profile"},
		{Options{IDs: "random"}, "ids"},
		{Options{Format: "xml"}, "format"},
		{Options{Format: FormatCSV}, "mapping"},
		{Options{Format: FormatCSV, Mapping: "testdata/nope.yaml"}, "mapping"},
		{Options{Format: FormatCSV, Mapping: "testdata/bad-mapping.yaml"}, "resources[0].elements[0].as"},
		{Options{Format: FormatCSV, Mapping: "testdata/unknown-key-mapping.yaml"}, "colums"},
		{Options{Format: FormatCSV, Mapping: "../mappings/synthea-csv.yaml"}, ""},
	}
	for _, tt := range tests {
		_, err := New(tt.opts)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%+v: %v", tt.opts, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%+v: error %v, want it to name %q", tt.opts, err, tt.want)
		}
	}
	tr := mustNew(t, Options{Format: FormatCSV, IDs: IDsDerive, Mapping: "../mappings/synthea-csv.yaml"})
	p, ids, f, name, hash := tr.Info()
	if p != ProfileSeed || ids != IDsDerive || f != FormatCSV || name != "synthea-csv" || len(hash) != 64 {
		t.Fatalf("Info() = %s %s %s %s %s", p, ids, f, name, hash)
	}
}

// TestIDsDerivedWithoutID: under ids: keep a resource without an id gets a stable id —
// from its first identifier, else from its canonical content, which key order,
// whitespace and string escapes do not change — and says so; the same line twice gets
// the same id (a reload creates nothing new).
func TestIDsDerivedWithoutID(t *testing.T) {
	keep := mustNew(t, Options{})
	derive := mustNew(t, Options{IDs: IDsDerive})
	withIdent := `{"resourceType":"DocumentReference","identifier":[{"system":"urn:s","value":"v1"},{"value":"v2"}],"status":"current","content":[{"attachment":{"url":"http://x/a"}}]}`
	content := `{"resourceType":"Provenance","target":[{"reference":"Patient/p1"}],"recorded":"2020-01-01T00:00:00Z","agent":[{"who":{"reference":"Practitioner/x"}}]}`
	reordered := "{ \"agent\": [ {\"who\": {\"reference\": \"Practitioner/x\"}} ],\n  \"recorded\": \"2020-01-01T00:00:00Z\", \"resourceType\": \"Provenance\", \"target\": [{\"reference\": \"Patient\\/p1\"}] }"
	changed := strings.Replace(content, "2020-01-01", "2020-01-02", 1)
	id := func(tr *Transformer, line string) Resource {
		t.Helper()
		res, _, err := tr.NewStream("x").Next([]byte(line))
		if err != nil {
			t.Fatal(err)
		}
		var doc struct{ ID string }
		if err := json.Unmarshal(res.Body, &doc); err != nil || doc.ID != res.ID {
			t.Fatalf("body id %q, Resource.ID %q (%v)", doc.ID, res.ID, err)
		}
		if err := tr.Validate(res.Body); err != nil {
			t.Fatalf("output invalid: %v", err)
		}
		return res
	}
	a := id(keep, withIdent)
	if !a.IDDerived || a.ID != DeriveID("DocumentReference", "urn:s|v1") {
		t.Fatalf("identifier: %+v", a)
	}
	b := id(keep, content)
	if !b.IDDerived || b.ID != id(keep, content).ID || b.ID != id(keep, reordered).ID {
		t.Fatalf("content id not stable: %s %s", b.ID, id(keep, reordered).ID)
	}
	if id(keep, changed).ID == b.ID {
		t.Fatal("different content, same id")
	}
	if d := id(derive, content); !d.IDDerived || d.ID != b.ID {
		t.Fatalf("derive: %+v, keep gave %s", d, b.ID)
	}
	if r := id(keep, `{"resourceType":"Provenance","id":"pv1","target":[{"reference":"Patient/p1"}],"recorded":"2020-01-01T00:00:00Z","agent":[{"who":{"reference":"Practitioner/x"}}]}`); r.IDDerived || r.ID != "pv1" {
		t.Fatalf("a resource with an id: %+v", r)
	}
	if r := id(derive, `{"resourceType":"Provenance","id":"pv1","target":[{"reference":"Patient/p1"}],"recorded":"2020-01-01T00:00:00Z","agent":[{"who":{"reference":"Practitioner/x"}}]}`); r.IDDerived || r.ID != DeriveID("Provenance", "pv1") {
		t.Fatalf("derive with an id: %+v", r)
	}
}

// TestBundleEntryIDs: a Bundle entry without an id takes its urn:uuid fullUrl as id
// (under derive: as the key), so references to the fullUrl point at it.
func TestBundleEntryIDs(t *testing.T) {
	e := &BundleEntry{FullURL: "urn:uuid:" + uuidX, Resource: []byte(`{"resourceType":"Location","name":"Ward 1"}`)}
	for _, tt := range []struct {
		ids, want string
	}{{IDsKeep, uuidX}, {IDsDerive, DeriveID("Location", uuidX)}} {
		res, err := mustNew(t, Options{IDs: tt.ids}).NewStream("b").NextEntry(e)
		if err != nil || res.ID != tt.want || res.IDDerived || !strings.Contains(string(res.Body), `"id":"`+tt.want+`"`) {
			t.Fatalf("ids %s: %+v %v", tt.ids, res, err)
		}
	}
	bad := &BundleEntry{Err: &Error{Reason: ReasonInvalid, Location: "Bundle.entry[3]", Message: "entry has no resource"}}
	if _, err := mustNew(t, Options{}).NewStream("b").NextEntry(bad); err != bad.Err {
		t.Fatalf("entry error not returned: %v", err)
	}
}

// TestDeriveEveryType: under ids: derive references to any type become the derived id
// of their target, the same the target gets when it is loaded.
func TestDeriveEveryType(t *testing.T) {
	tr := mustNew(t, Options{IDs: IDsDerive})
	claim := `{"resourceType":"Claim","id":"c1","status":"active","type":{"text":"t"},"use":"claim","patient":{"reference":"Patient/p1"},"created":"2020-01-01","provider":{"reference":"Organization/o1"},"priority":{"text":"normal"},"insurance":[{"sequence":1,"focal":true,"coverage":{"reference":"Coverage/cv"}}]}`
	org := `{"resourceType":"Organization","id":"o1","name":"x"}`
	c, _, err := tr.NewStream("c").Next([]byte(claim))
	if err != nil {
		t.Fatal(err)
	}
	o, _, err := tr.NewStream("o").Next([]byte(org))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(c.Body), `"provider":{"reference":"Organization/`+o.ID+`"}`) ||
		!strings.Contains(string(c.Body), `"reference":"Coverage/`+DeriveID("Coverage", "cv")+`"`) {
		t.Fatalf("claim %s, organization id %s", c.Body, o.ID)
	}
}
