package fhirpath_test

import (
	"testing"

	"github.com/fhirload/fhirload/internal/fhirpath"
	"github.com/fhirload/fhirload/internal/fhirpath/internal/r4"
)

// FuzzCompile: any text either compiles or fails with an error; it never panics, and a
// compiled expression evaluates (to a result or an error) without panicking.
func FuzzCompile(f *testing.F) {
	for _, s := range []string{
		"hasValue() or (children().count() > id.count())",
		"name.where(use = 'usual').given.first()",
		"@2020-01-01T10:00:00Z + 1 'h'",
		"(1 | 2 | 3).aggregate($this + $total, 0)",
		"%`vs-x`.length() > 4 'mg'",
		"contained.where(('#'+id in %resource.descendants().reference).not()).empty()",
		"iif(a, b, c).ofType(FHIR.Quantity) is System.Quantity",
		"'\\u00e9' ~ 'E' /* c */ // d",
	} {
		f.Add(s)
	}
	tr := build(f, patientJSON)
	f.Fuzz(func(t *testing.T, src string) {
		x, err := fhirpath.Compile(src)
		if err != nil {
			if x != nil {
				t.Fatal("an expression with an error")
			}
			_ = fhirpath.Classify(src)
			return
		}
		var ev fhirpath.Evaluator
		_, _ = ev.Eval(x, tr, 0)
		_, _ = ev.Test(x, tr, 0)
	})
}

// FuzzBuild: any bytes either build a tree or fail with an error, never a panic; the
// base invariants then run on whatever was built.
func FuzzBuild(f *testing.F) {
	f.Add([]byte(patientJSON))
	f.Add([]byte(obsJSON))
	f.Add([]byte(`{"resourceType":"Patient","name":[{"given":["a",null],"_given":[null,{"id":"x"}]}]}`))
	f.Add([]byte(`{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"Observation","status":"final"}}]}`))
	set := baseInvariants(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		var tr fhirpath.Tree
		if err := tr.Build(b, r4.New()); err != nil {
			return
		}
		var ev fhirpath.Evaluator
		ev.Env.HTMLChecks = testHTMLChecks
		_ = set.Check(&ev, &tr, nil)
	})
}
