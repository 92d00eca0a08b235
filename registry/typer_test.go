package registry_test

import (
	"testing"

	"github.com/fhirload/fhirload/internal/fhirpath"
	"github.com/fhirload/fhirload/registry"
)

// TestTyper: the registry's fhirpath.Typer names elements the way FHIRPath and the
// invariants' contexts expect, and a tree built with it evaluates expressions.
func TestTyper(t *testing.T) {
	ty := registry.R4().Typer()
	obs, ok := ty.Resource([]byte("Observation"))
	if !ok || obs.Type != "Observation" || obs.Path != "Observation" {
		t.Fatalf("Resource(Observation) = %+v, %v", obs, ok)
	}
	if _, ok := ty.Resource([]byte("Quantity")); ok {
		t.Error("Quantity is not a resource")
	}
	step := func(parent fhirpath.Element, key string) fhirpath.Element {
		t.Helper()
		e, ok := ty.Element(parent, []byte(key))
		if !ok {
			t.Fatalf("no element %s under %s", key, parent.Path)
		}
		return e
	}
	for _, c := range []struct {
		parent fhirpath.Element
		key    string
		want   fhirpath.Element
	}{
		{obs, "valueQuantity", fhirpath.Element{Name: "value", Type: "Quantity", Path: "Observation.value[x]", Choice: true}},
		{obs, "status", fhirpath.Element{Name: "status", Type: "code", Path: "Observation.status"}},
		{obs, "id", fhirpath.Element{Name: "id", Type: "id", Path: "Observation.id"}},
		{step(obs, "valueQuantity"), "code", fhirpath.Element{Name: "code", Type: "code", Path: "Quantity.code"}},
		{step(obs, "status"), "extension", fhirpath.Element{Name: "extension", Type: "Extension", Path: "Element.extension"}},
		{step(obs, "component"), "code", fhirpath.Element{Name: "code", Type: "CodeableConcept", Path: "Observation.component.code"}},
	} {
		got := step(c.parent, c.key)
		got.Def = 0
		if got != c.want {
			t.Errorf("%s.%s = %+v, want %+v", c.parent.Path, c.key, got, c.want)
		}
	}
	q, _ := ty.Resource([]byte("Questionnaire"))
	if item := step(step(q, "item"), "item"); item.Path != "Questionnaire.item" || item.Type != "BackboneElement" {
		t.Errorf("Questionnaire.item.item = %+v", item)
	}
	for _, bad := range []string{"valueFoo", "value", "resourceType", "_status"} {
		if _, ok := ty.Element(obs, []byte(bad)); ok {
			t.Errorf("%s is an element of Observation", bad)
		}
	}

	var tree fhirpath.Tree
	line := []byte(`{"resourceType":"Observation","status":"final","_status":{"id":"s"},"code":{"text":"x"},"valueQuantity":{"value":5,"code":"mg"}}`)
	if err := tree.Build(line, ty); err != nil {
		t.Fatal(err)
	}
	var ev fhirpath.Evaluator
	got, err := ev.Test(fhirpath.MustCompile("value.code.empty() or value.system.exists()"), &tree, 0)
	if err != nil || got != fhirpath.False {
		t.Errorf("qty-3 on a code without a system = %v, %v; want false", got, err)
	}
	if err := tree.Build([]byte(`{"resourceType":"Observation","valueFoo":1}`), ty); err == nil {
		t.Error("an unknown element builds")
	}
}

// TestInvariantSet: every error-severity invariant of the core types compiles; the set
// evaluates all but those that need narrative checks or other resources.
func TestInvariantSet(t *testing.T) {
	r := registry.R4()
	invs := r.Invariants()
	set, err := r.InvariantSet()
	if err != nil {
		t.Fatal(err)
	}
	skipped := map[string]fhirpath.Class{}
	for _, s := range set.Skipped() {
		skipped[s.Invariant.Key] = s.Class.Class
	}
	want := map[string]fhirpath.Class{"txt-1": fhirpath.NeedsNarrative, "txt-2": fhirpath.NeedsNarrative, "ctm-1": fhirpath.NeedsResolution}
	for k, c := range want {
		if skipped[k] != c {
			t.Errorf("%s: skipped as %v, want %v", k, skipped[k], c)
		}
	}
	if len(skipped) != len(want) || set.Len()+len(set.Skipped()) != len(invs) || len(invs) < 8000 {
		t.Errorf("%d invariants, %d evaluated, skipped %v", len(invs), set.Len(), skipped)
	}
	if again, _ := r.InvariantSet(); again != set {
		t.Error("InvariantSet is built again")
	}
}
