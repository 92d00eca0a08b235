package fhirpath_test

import (
	"testing"

	"github.com/fhirload/fhirload/internal/fhirpath"
)

const obsJSON = `{"resourceType":"Observation","id":"o1","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"8302-2"}]},"subject":{"reference":"Patient/p1"},"effectiveDateTime":"2020-01-02T10:00:00-05:00","valueQuantity":{"value":172.5,"unit":"cm","system":"http://unitsofmeasure.org","code":"cm"},"_status":{"extension":[{"url":"http://x","valueString":"a\"b"}]}}`

func TestSmoke(t *testing.T) {
	tr := build(t, obsJSON)
	var ev fhirpath.Evaluator
	for _, c := range []struct{ expr, want string }{
		{"status", `["final"]`},
		{"Observation.status", `["final"]`},
		{"value.value", `[172.5]`},
		{"value.value > 100", `[true]`},
		{"value > 1.5 'm'", `[true]`},
		{"status.extension.value", `["a\"b"]`},
		{"status.extension.value = 'a\"b'", `[true]`},
		{"children().count()", `[6]`},
		{"status.children().count() > status.id.count()", `[true]`},
		{"hasValue() or (children().count() > id.count())", `[true]`},
		{"subject.where(resolve() is Patient).exists()", `[true]`},
		{"effective > @2020-01-01", `[true]`},
		{"@2020 < @2020-01", `[]`},
		{"1 + 2 * 3", `[7]`},
		{"(1 | 2 | 1).count()", `[2]`},
		{"'abc'.substring(1)", `['bc']`},
		{"value is Quantity", `[true]`},
		{"(value as Quantity).unit", `["cm"]`},
		{"descendants().count()", `[17]`},
	} {
		x, err := fhirpath.Compile(c.expr)
		if err != nil {
			t.Errorf("%s: %v", c.expr, err)
			continue
		}
		got, err := ev.Eval(x, tr, 0)
		if err != nil {
			t.Errorf("%s: %v", c.expr, err)
			continue
		}
		if s := show(tr, got); s != c.want {
			t.Errorf("%s = %s, want %s", c.expr, s, c.want)
		}
	}
}
