package transform

import (
	"fmt"
	"strings"
	"testing"

	"github.com/fhirload/fhirload/internal/fhirpath"
	"github.com/fhirload/fhirload/registry"
)

// ruleCase is a line and the rule it breaks ("" for a valid line) at a location.
type ruleCase struct {
	name string
	line string
	rule string // "" valid
	loc  string
}

// checkRules validates each case under opts and checks the rule, the location, and that
// the error text shows none of the line's values (secrets: strings that appear in the
// lines only as values).
func checkRules(t *testing.T, opts Options, cases []ruleCase, secrets ...string) {
	t.Helper()
	tr := mustNew(t, opts)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := tr.NewStream("rules").Next([]byte(c.line))
			if c.rule == "" {
				if err != nil {
					t.Fatalf("valid line rejected: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted, want %s at %s", c.rule, c.loc)
			}
			e := asError(t, err)
			if e.Reason != ReasonInvalid || e.Rule != c.rule || e.Location != c.loc {
				t.Fatalf("got %s rule %q at %q (%s), want invalid rule %q at %q", e.Reason, e.Rule, e.Location, e.Message, c.rule, c.loc)
			}
			if !strings.HasPrefix(e.Message, c.rule+": ") || len(e.Message) < len(c.rule)+10 {
				t.Errorf("message %q does not name the rule and its text", e.Message)
			}
			for _, s := range secrets {
				if strings.Contains(err.Error(), s) {
					t.Errorf("error %q shows the value %q", err, s)
				}
			}
		})
	}
}

const (
	obsHead = `{"resourceType":"Observation","id":"o1","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"8302-2"}]},"subject":{"reference":"Patient/p1"}`
	patHead = `{"resourceType":"Patient","id":"p1","name":[{"family":"Doe","given":["Jane"]}]`
)

// TestInvariantFamilies: valid and invalid lines for each family of the core invariants
// the issue names; every rejection names the rule and where it failed.
func TestInvariantFamilies(t *testing.T) {
	checkRules(t, Options{}, []ruleCase{
		{"valid observation", obsHead + `,"valueQuantity":{"value":180,"unit":"cm","system":"http://unitsofmeasure.org","code":"cm"}}`, "", ""},

		// ele-1: an element has a value or children other than its id.
		{"ele-1 valid primitive with an extension only", obsHead + `,"_issued":{"extension":[{"url":"http://example.org/x","valueString":"Secret1"}]}}`, "", ""},
		{"ele-1 complex element with only an id", obsHead + `,"valueQuantity":{"id":"q1"}}`, "ele-1", "Observation.value.ofType(Quantity)"},
		{"ele-1 primitive with only an id", obsHead + `,"_issued":{"id":"i1"}}`, "ele-1", "Observation.issued"},
		{"ele-1 valid primitive array with ids and values", obsHead + `,"valueString":"Secret1","_valueString":{"id":"v1"}}`, "", ""},

		// dom-2 … dom-5: contained resources.
		{"dom-3 valid: referenced contained", obsHead + `,"contained":[{"resourceType":"Specimen","id":"s1"}],"specimen":{"reference":"#s1"}}`, "", ""},
		{"dom-3 valid: contained refers to its container", obsHead + `,"contained":[{"resourceType":"Provenance","id":"v1","target":[{"reference":"#"}],"recorded":"2020-01-01T00:00:00Z","agent":[{"who":{"display":"Secret1"}}]}]}`, "", ""},
		{"dom-3 contained not referenced", obsHead + `,"contained":[{"resourceType":"Specimen","id":"s1"}]}`, "dom-3", "Observation"},
		{"dom-2 contained in contained", obsHead + `,"contained":[{"resourceType":"Specimen","id":"s1","contained":[{"resourceType":"Substance","id":"x","code":{"text":"Secret1"}}],"extension":[{"url":"http://example.org/x","valueUri":"#x"}]}],"specimen":{"reference":"#s1"}}`, "dom-2", "Observation"},
		{"ref-1 to a resource contained in a contained one", obsHead + `,"contained":[{"resourceType":"Specimen","id":"s1","contained":[{"resourceType":"Substance","id":"x","code":{"text":"Secret1"}}],"subject":{"reference":"#x"}}],"specimen":{"reference":"#s1"}}`, "ref-1", "Observation.contained.subject"},
		{"dom-4 contained with versionId", obsHead + `,"contained":[{"resourceType":"Specimen","id":"s1","meta":{"versionId":"7"}}],"specimen":{"reference":"#s1"}}`, "dom-4", "Observation"},
		{"dom-4 contained with lastUpdated", obsHead + `,"contained":[{"resourceType":"Specimen","id":"s1","meta":{"lastUpdated":"2020-01-01T00:00:00Z"}}],"specimen":{"reference":"#s1"}}`, "dom-4", "Observation"},
		{"dom-5 contained with a security label", obsHead + `,"contained":[{"resourceType":"Specimen","id":"s1","meta":{"security":[{"code":"R"}]}}],"specimen":{"reference":"#s1"}}`, "dom-5", "Observation"},

		// obs-6, obs-7.
		{"obs-6 valid: dataAbsentReason without a value", obsHead + `,"dataAbsentReason":{"text":"Secret1"}}`, "", ""},
		{"obs-6 value and dataAbsentReason", obsHead + `,"valueString":"Secret1","dataAbsentReason":{"text":"Secret2"}}`, "obs-6", "Observation"},
		{"obs-7 valid: component with another code", obsHead + `,"valueString":"Secret1","component":[{"code":{"coding":[{"system":"http://loinc.org","code":"8480-6"}]},"valueString":"Secret2"}]}`, "", ""},
		{"obs-7 component repeats the observation's code", obsHead + `,"valueString":"Secret1","component":[{"code":{"coding":[{"system":"http://loinc.org","code":"8302-2"}]},"valueString":"Secret2"}]}`, "obs-7", "Observation"},
		{"obs-3 referenceRange without low, high or text", obsHead + `,"referenceRange":[{"type":{"text":"Secret1"}}]}`, "obs-3", "Observation.referenceRange"},

		// pat-1.
		{"pat-1 valid contact with a name", patHead + `,"contact":[{"name":{"family":"Secret1"}}]}`, "", ""},
		{"pat-1 contact with only a gender", patHead + `,"contact":[{"gender":"female"}]}`, "pat-1", "Patient.contact"},
		{"pat-1 second contact", patHead + `,"contact":[{"name":{"family":"Secret1"}},{"gender":"female"}]}`, "pat-1", "Patient.contact[1]"},

		// ref-1: a local reference resolves to a contained resource.
		{"ref-1 valid local reference", obsHead + `,"contained":[{"resourceType":"Specimen","id":"s1"}],"specimen":{"reference":"#s1"}}`, "", ""},
		{"ref-1 local reference to nothing", obsHead + `,"specimen":{"reference":"#s9"}}`, "ref-1", "Observation.specimen"},

		// per-1: a Period's start is not after its end.
		{"per-1 valid period", obsHead + `,"effectivePeriod":{"start":"2020-01-01","end":"2020-01-02"}}`, "", ""},
		{"per-1 valid: different precisions compare as unknown", obsHead + `,"effectivePeriod":{"start":"2020-01-01T10:00:00Z","end":"2020-01-01"}}`, "", ""},
		{"per-1 start after end", obsHead + `,"effectivePeriod":{"start":"2020-01-02","end":"2020-01-01"}}`, "per-1", "Observation.effective.ofType(Period)"},

		// qty-3: a coded quantity has a system.
		{"qty-3 valid code with system", obsHead + `,"valueQuantity":{"value":1,"system":"http://unitsofmeasure.org","code":"mg"}}`, "", ""},
		{"qty-3 code without system", obsHead + `,"valueQuantity":{"value":1,"code":"mg"}}`, "qty-3", "Observation.value.ofType(Quantity)"},
		{"qty-3 in a component", obsHead + `,"component":[{"code":{"text":"x"},"valueQuantity":{"value":1,"code":"mg"}}]}`, "qty-3", "Observation.component.value.ofType(Quantity)"},

		// ext-1: an extension has a value or nested extensions, not both.
		{"ext-1 valid value", obsHead + `,"extension":[{"url":"http://example.org/x","valueString":"Secret1"}]}`, "", ""},
		{"ext-1 both value and extensions", obsHead + `,"extension":[{"url":"http://example.org/x","valueString":"Secret1","extension":[{"url":"a","valueString":"Secret2"}]}]}`, "ext-1", "Observation.extension"},
		{"ext-1 neither", obsHead + `,"extension":[{"url":"http://example.org/x","id":"e1"}]}`, "ext-1", "Observation.extension"},
		{"ext-1 on a primitive's extension", obsHead + `,"_status":{"extension":[{"url":"http://example.org/x","id":"e1"}]}}`, "ext-1", "Observation.status.extension"},

		// Invariants of resources inside resources.
		{"obs-6 in a Bundle entry", `{"resourceType":"Bundle","type":"collection","entry":[{"fullUrl":"urn:uuid:6f3c1e52-8a4d-4b0e-9d27-51c38e0a7f14","resource":` + obsHead + `,"valueString":"Secret1","dataAbsentReason":{"text":"Secret2"}}}]}`, "obs-6", "Bundle.entry.resource"},
		{"bdl-1 total outside a search set", `{"resourceType":"Bundle","type":"collection","total":3}`, "bdl-1", "Bundle"},
	}, "Secret1", "Secret2", "Jane", "Doe")
}

// nativeMatchesExpression checks that the validator's own check of invariant key
// (violated: whether it finds the invariant broken at a node) decides, node for node,
// what the invariant's expression decides. It runs on lines, the first and last line of
// each fhir-all file and, with examples, the official examples; it returns how many
// violations the two agreed on. Each line starts with no ref-1 id sets, as checkRef1
// does.
func nativeMatchesExpression(t *testing.T, key string, lines [][]byte, withExamples bool, violated func(*validator, fhirpath.NodeID) bool) int {
	t.Helper()
	var invs []fhirpath.Invariant
	for _, x := range registry.R4().Invariants() {
		if x.Key == key {
			invs = append(invs, x)
		}
	}
	set, err := fhirpath.NewSet(invs)
	if err != nil {
		t.Fatal(err)
	}
	tr := mustNew(t, Options{Profile: ProfileBase})
	v := tr.newValidator()
	var ev fhirpath.Evaluator
	for _, ls := range allLines(t) {
		lines = append(lines, ls[0], ls[len(ls)-1])
	}
	if withExamples {
		for _, ex := range examples(t) {
			lines = append(lines, ex)
		}
	}
	agreed := 0
	for i, l := range lines {
		v.reset(l)
		if !v.resource() {
			t.Fatalf("line %d: %v", i, v.err)
		}
		v.idSets = v.idSets[:0]
		want := map[fhirpath.NodeID]bool{}
		for _, x := range set.Check(&ev, &v.tree, nil) {
			want[x.Node] = true
		}
		for n := 0; n < v.tree.Len(); n++ {
			id := fhirpath.NodeID(n)
			if got := violated(&v, id); got != want[id] {
				t.Errorf("line %d, %s: native %s violated=%v, expression violated=%v", i, v.tree.AppendLocation(nil, id), key, got, want[id])
			} else if got {
				agreed++
			}
		}
	}
	return agreed
}

// TestEle1MatchesItsExpression: the validator's own ele-1 check finds, node for node,
// what the expression finds where the core package states it.
func TestEle1MatchesItsExpression(t *testing.T) {
	lines := [][]byte{
		[]byte(obsHead + `,"valueQuantity":{"id":"q1"},"_issued":{"id":"i1"},"focus":[{"id":"f"},{"display":"x"}]}`),
		[]byte(`{"resourceType":"Patient","name":[{"given":["A",null],"_given":[{"id":"g1"},{"id":"g2"}]}],"contained":[{"resourceType":"Organization","id":"o","contact":[{"id":"c"}]}],"managingOrganization":{"reference":"#o"}}`),
		[]byte(`{"resourceType":"Bundle","type":"collection","entry":[{"id":"e1"},{"resource":{"resourceType":"Basic","id":"b","code":{"id":"c"}}}]}`),
	}
	nativeMatchesExpression(t, "ele-1", lines, false, func(v *validator, id fhirpath.NodeID) bool {
		v.err = nil
		return !v.ele1At(id)
	})
}

// TestDom3MatchesItsExpression: the validator's own dom-3 check decides, resource for
// resource, what the expression decides.
func TestDom3MatchesItsExpression(t *testing.T) {
	spec := func(contained, rest string) []byte {
		return []byte(obsHead + `,"contained":[` + contained + `]` + rest + `}`)
	}
	s1 := `{"resourceType":"Specimen","id":"s1"}`
	lines := [][]byte{
		spec(s1, ``),
		spec(s1, `,"specimen":{"reference":"#s1"}`),
		spec(s1, `,"specimen":{"reference":"#s2"}`),
		spec(s1, `,"specimen":{"reference":"#S1"}`),
		spec(`{"resourceType":"Specimen"}`, ``),
		spec(s1+`,{"resourceType":"Specimen","id":"s2"}`, `,"specimen":{"reference":"#s1"}`),
		spec(s1+`,{"resourceType":"Specimen","id":"s2","parent":[{"reference":"#s1"}]}`, `,"specimen":{"reference":"#s2"}`),
		spec(`{"resourceType":"Specimen","id":"s1","parent":[{"reference":"#"}]}`, ``),
		spec(`{"resourceType":"Specimen","id":"s1","parent":[{"reference":"#"}],"request":[{"reference":"#"}]}`, ``),
		spec(`{"resourceType":"Specimen","id":"s1","note":[{"text":"#"}]}`, ``),
		spec(s1, `,"extension":[{"url":"http://example.org/x","valueUri":"#s1"}]`),
		spec(s1, `,"extension":[{"url":"http://example.org/x","valueCanonical":"#s1"}]`),
		spec(s1, `,"extension":[{"url":"http://example.org/x","valueString":"#s1"}]`),
		spec(s1, `,"identifier":[{"system":"#s1","value":"v"}]`),
		spec(s1, `,"note":[{"text":"#s1"}]`),
		spec(`{"resourceType":"Basic","id":"b","code":{"text":"x"},"extension":[{"url":"http://example.org/x","valueCanonical":"#"}]}`, ``),
		spec(`{"resourceType":"Specimen","id":"s\u0031"}`, `,"specimen":{"reference":"#s1"}`),
		[]byte(`{"resourceType":"Bundle","type":"collection","entry":[{"resource":` + string(spec(s1, ``)) + `},{"resource":` + string(spec(s1, `,"specimen":{"reference":"#s1"}`)) + `}]}`),
	}
	violated := nativeMatchesExpression(t, "dom-3", lines, true, func(v *validator, id fhirpath.NodeID) bool { return !v.dom3At(id) })
	if violated < 6 {
		t.Errorf("only %d violations among the cases", violated)
	}
}

// TestRef1MatchesItsExpression: the validator's own ref-1 check decides, Reference for
// Reference, what the expression decides.
func TestRef1MatchesItsExpression(t *testing.T) {
	many := ""
	for i := 0; i < 12; i++ {
		many += `,{"resourceType":"Specimen","id":"m` + strings.Repeat("x", i) + `"}`
	}
	lines := [][]byte{
		[]byte(obsHead + `,"specimen":{"reference":"#s1"}}`),
		[]byte(obsHead + `,"specimen":{"reference":"#"}}`),
		[]byte(obsHead + `,"contained":[{"resourceType":"Specimen","id":"s1"}],"specimen":{"reference":"#s1"}}`),
		[]byte(obsHead + `,"contained":[{"resourceType":"Specimen","id":"s1"}],"specimen":{"reference":"#s2"}}`),
		[]byte(obsHead + `,"contained":[{"resourceType":"Specimen","id":"s1","parent":[{"reference":"#s2"}]},{"resourceType":"Specimen","id":"s2","parent":[{"reference":"#"}]}],"specimen":{"reference":"#s1"}}`),
		[]byte(obsHead + `,"contained":[{"resourceType":"Specimen","id":"s1","contained":[{"resourceType":"Substance","id":"x","code":{"text":"y"}}],"subject":{"reference":"#x"}}],"specimen":{"reference":"#s1"}}`),
		[]byte(obsHead + `,"contained":[{"resourceType":"Specimen","id":"s\u0031"}],"specimen":{"reference":"\u0023s1"}}`),
		[]byte(obsHead + `,"specimen":{"_reference":{"extension":[{"url":"http://example.org/x","valueString":"y"}]}}}`),
		[]byte(obsHead + `,"specimen":{"reference":"Specimen/1"},"extension":[{"url":"http://example.org/x","valueReference":{"reference":"#nope"}}]}`),
		[]byte(obsHead + `,"contained":[{"resourceType":"Specimen","id":"s1"}` + many + `],"specimen":{"reference":"#mxxxxx"},"hasMember":[{"reference":"#s1"},{"reference":"#nope"}]}`),
		[]byte(`{"resourceType":"Bundle","type":"collection","entry":[{"resource":` + obsHead + `,"contained":[{"resourceType":"Specimen","id":"s1"}],"specimen":{"reference":"#s1"}}},{"resource":` + obsHead + `,"specimen":{"reference":"#s1"}}}]}`),
	}
	violated := nativeMatchesExpression(t, "ref-1", lines, true, func(v *validator, id fhirpath.NodeID) bool { return !v.ref1At(id) })
	if violated < 5 {
		t.Errorf("only %d violations among the cases", violated)
	}
}

// TestQuadraticLinesStayLinear: a line whose invariants compare each of its items with
// each of the others (2,000 contained resources and 2,000 local references: ref-1 and
// dom-3 through their expressions took 4 million steps, 9 s at 10,000) is checked in a
// number of evaluation steps proportional to its size.
func TestQuadraticLinesStayLinear(t *testing.T) {
	const n = 2000
	var sb strings.Builder
	sb.WriteString(obsHead + `,"contained":[`)
	for i := 0; i < n; i++ {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, `{"resourceType":"Specimen","id":"s%d"}`, i)
	}
	sb.WriteString(`],"hasMember":[`)
	for i := 0; i < n; i++ {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, `{"reference":"#s%d"}`, n-1-i)
	}
	sb.WriteString(`]}`)
	tr := mustNew(t, Options{})
	v := tr.newValidator()
	if e := v.validate([]byte(sb.String()), false, false); e != nil {
		t.Fatal(e)
	}
	if steps, nodes := v.ev.Steps(), int64(v.tree.Len()); steps > 50*nodes {
		t.Fatalf("%d evaluation steps for %d nodes", steps, nodes)
	}
	if len(v.idSets) != 1 {
		t.Fatalf("ref-1 looked ids up without a set (%d sets)", len(v.idSets))
	}
}

// TestEvaluationBudget: an invariant whose evaluation would be quadratic in the line
// (obs-7 intersects every component's codings with the Observation's) stops at the
// line's budget and rejects it, naming the invariant.
func TestEvaluationBudget(t *testing.T) {
	const n = 1000
	var codes, comps strings.Builder
	for i := 0; i < n; i++ {
		if i > 0 {
			codes.WriteByte(',')
			comps.WriteByte(',')
		}
		fmt.Fprintf(&codes, `{"system":"http://loinc.org","code":"c%d"}`, i)
		fmt.Fprintf(&comps, `{"code":{"coding":[{"system":"http://loinc.org","code":"k%d"}]},"valueString":"x"}`, i)
	}
	line := []byte(`{"resourceType":"Observation","status":"final","code":{"coding":[` + codes.String() + `]},"valueString":"x","component":[` + comps.String() + `]}`)
	tr := mustNew(t, Options{})
	v := tr.newValidator()
	if e := v.validate(line, false, false); e != nil {
		t.Fatalf("under the default budget: %v", e)
	}
	v.stepsPerNode = 10
	e := v.validate(line, false, false)
	if e == nil || e.Rule != "obs-7" || !strings.Contains(e.Message, "too much work") {
		t.Fatalf("with a budget of 10 steps per node: %v", e)
	}
}
