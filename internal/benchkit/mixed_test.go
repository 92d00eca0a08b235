package benchkit

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"strings"
	"testing"

	"github.com/fhirload/fhirload/registry"
	"github.com/fhirload/fhirload/transform"
)

// TestGenerateMixed: every line of a mixed population is valid under the seed profile,
// every urn:uuid: reference resolves to a resource of the population through an Index
// (whatever the order), the types include some Synthea does not write, and the same
// options give the same bytes.
func TestGenerateMixed(t *testing.T) {
	var buf bytes.Buffer
	st, err := GenerateMixed(&buf, MixedOptions{Patients: 20, Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	var again bytes.Buffer
	if _, err := GenerateMixed(&again, MixedOptions{Patients: 20, Seed: 7}); err != nil || !bytes.Equal(buf.Bytes(), again.Bytes()) {
		t.Fatalf("not deterministic (%v)", err)
	}
	wantTypes := len(DefaultMixedTypes()) + len(DefaultSharedTypes()) + 1
	if st.Resources != int64(20*(1+3*len(DefaultMixedTypes()))+5*len(DefaultSharedTypes())) || len(st.PerType) != wantTypes || st.References < st.Resources {
		t.Fatalf("stats %+v", st)
	}
	for _, typ := range []string{"DocumentReference", "Provenance", "Location", "PractitionerRole"} {
		if st.PerType[typ] == 0 {
			t.Errorf("no %s", typ)
		}
	}
	x := transform.NewIndex(transform.IndexOptions{})
	defer x.Close()
	var lines [][]byte
	sc := bufio.NewScanner(&buf)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		l := bytes.Clone(sc.Bytes())
		lines = append(lines, l)
		typ, id, ok := transform.ScanID(l)
		if !ok {
			t.Fatalf("scan: %s", l)
		}
		x.Add(typ, id)
	}
	if err := x.Freeze(); err != nil {
		t.Fatal(err)
	}
	tr, err := transform.New(transform.Options{Resolver: x})
	if err != nil {
		t.Fatal(err)
	}
	s := tr.NewStream("mixed.ndjson")
	var size int64
	for i, l := range lines {
		res, _, err := s.Next(l)
		if err != nil {
			t.Fatalf("line %d: %v\n%s", i+1, err, l)
		}
		if res.Unresolved != 0 || strings.Contains(string(res.Body), `"reference":"urn:uuid:`) {
			t.Fatalf("line %d: unresolved reference: %s", i+1, res.Body)
		}
		size += int64(len(l))
	}
	t.Logf("%d resources of %d types, %d references, %d bytes (%d per resource)", st.Resources, len(st.PerType), st.References, size, size/st.Resources)
}

func TestGenerateMixedRejectsUnknownType(t *testing.T) {
	if _, err := GenerateMixed(&bytes.Buffer{}, MixedOptions{Types: []string{"Nope"}}); err == nil {
		t.Fatal("unknown type accepted")
	}
}

// TestGenerateEveryType: a population of all 146 resource types, generated from their
// definitions, is valid: the generator and the validator agree on every type.
func TestGenerateEveryType(t *testing.T) {
	var buf bytes.Buffer
	st, err := GenerateMixed(&buf, MixedOptions{Patients: 3, PerPatient: 2, Types: registry.R4().ResourceTypes(), Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	if len(st.PerType) != 146 {
		t.Fatalf("%d types", len(st.PerType))
	}
	tr, err := transform.New(transform.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s := tr.NewStream("all.ndjson")
	sc := bufio.NewScanner(&buf)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if _, _, err := s.Next(sc.Bytes()); err != nil {
			t.Fatalf("%v\n%s", err, sc.Bytes())
		}
	}
}

// TestGenerateMixedLarge: the drawn values are JSON values, and 900 Appointments
// (app-1 to app-4 tie four of their elements together: a few draws in a hundred
// hold) are generated. The date and dateTime values drawn for invariants were once
// written without quotes, every draw that used one was thrown away, and with 200
// draws at the most some Appointment of a 2,000-patient population ran out of them.
func TestGenerateMixedLarge(t *testing.T) {
	for typ, vs := range primitiveChoices {
		for _, v := range vs {
			if !json.Valid([]byte(v)) {
				t.Errorf("%s choice %s is not a JSON value", typ, v)
			}
		}
	}
	if testing.Short() {
		t.Skip("900 Appointments take ~0.2 s (2 s under -race)")
	}
	st, err := GenerateMixed(io.Discard, MixedOptions{Patients: 300, Types: []string{"Appointment"}, SharedTypes: []string{"Organization", "Location", "Practitioner", "PractitionerRole", "Device"}, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	if st.PerType["Appointment"] != 900 {
		t.Fatalf("stats %+v", st)
	}
}
