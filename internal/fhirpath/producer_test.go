package fhirpath_test

import (
	"testing"

	"github.com/fhirload/fhirload/internal/fhirpath"
)

// TestTreeAdd builds a tree the way the validator will — appending nodes while it walks a
// line, with value spans into the line — and finds the same answers as Build.
func TestTreeAdd(t *testing.T) {
	line := []byte(`{"resourceType":"Observation","status":"final","_status":{"id":"s1"},"valueQuantity":{"value":5,"code":"mg"}}`)
	span := func(s string) (int, int) {
		for i := 0; i+len(s) <= len(line); i++ {
			if string(line[i:i+len(s)]) == s {
				return i, i + len(s)
			}
		}
		t.Fatalf("%q not in line", s)
		return 0, 0
	}
	var tr fhirpath.Tree
	for round := 0; round < 2; round++ { // the second round reuses the arena
		tr.Reset(line)
		root := tr.Add(-1, fhirpath.Node{Type: "Observation", Path: "Observation", Resource: true})
		st := tr.Add(root, fhirpath.Node{Name: "status", Type: "code", Path: "Observation.status"})
		s, e := span("final")
		tr.SetValue(st, fhirpath.JSONString, s, e)
		// The _status companion arrives later: its id goes under the primitive.
		id := tr.Add(tr.Child(root, "status", 0), fhirpath.Node{Name: "id", Type: "string", Path: "Element.id"})
		s, e = span("s1")
		tr.SetValue(id, fhirpath.JSONString, s, e)
		q := tr.Add(root, fhirpath.Node{Name: "value", Type: "Quantity", Path: "Observation.value[x]", Choice: true})
		v := tr.Add(q, fhirpath.Node{Name: "value", Type: "decimal", Path: "Quantity.value"})
		s, e = span("5")
		tr.SetValue(v, fhirpath.JSONNumber, s, e)
		c := tr.Add(q, fhirpath.Node{Name: "code", Type: "code", Path: "Quantity.code"})
		s, e = span("mg")
		tr.SetValue(c, fhirpath.JSONString, s, e)

		var ev fhirpath.Evaluator
		for expr, want := range map[string]string{
			"status":                 `["final"]`,
			"status.id":              `["s1"]`,
			"value.ofType(Quantity)": `[Quantity]`,
			"value > 4 'mg'":         `[true]`,
			"value.code.empty() or value.system.exists()": `[false]`,
		} {
			got, err := ev.Eval(fhirpath.MustCompile(expr), &tr, root)
			if err != nil {
				t.Fatalf("%s: %v", expr, err)
			}
			if s := show(&tr, got); s != want {
				t.Errorf("%s = %s, want %s", expr, s, want)
			}
		}
		if loc := string(tr.AppendLocation(nil, c)); loc != "Observation.value.ofType(Quantity).code" {
			t.Errorf("location %s", loc)
		}
	}
}

// TestBuildErrors: malformed or unknown JSON is an error naming the offset, never a value.
func TestBuildErrors(t *testing.T) {
	for _, src := range []string{
		``,
		`[]`,
		`{}`,
		`{"resourceType":"NoSuchType"}`,
		`{"resourceType":"Patient","secret":"Jane Doe"}`,
		`{"resourceType":"Patient","gender":"male"`,
		`{"resourceType":"Patient","gender":"male"} x`,
		`{"resourceType":"Patient","birthDate":null}`,
		`{"resourceType":"Patient","name":[{"given":[["x"]]}]}`,
		`{"resourceType":"Patient","gender":"ma` + "\x01" + `le"}`,
		`{"resourceType":"Patient","active":tru}`,
		`{"resourceType":"Patient","multipleBirthInteger":01}`,
		`{"resourceType":"Patient","gender":"male",}`,
	} {
		var tr fhirpath.Tree
		err := tr.Build([]byte(src), r4New())
		if err == nil {
			t.Errorf("%q: no error", src)
			continue
		}
		for _, secret := range []string{"Jane", "male", "x"} {
			if len(src) > 0 && containsWord(err.Error(), secret) {
				t.Errorf("%q: error %q shows data", src, err)
			}
		}
	}
}
