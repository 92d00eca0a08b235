package transform

import (
	"strings"
	"testing"
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
		{"dom-2 contained in contained", obsHead + `,"contained":[{"resourceType":"Specimen","id":"s1","contained":[{"resourceType":"Substance","id":"x","code":{"text":"Secret1"}}],"subject":{"reference":"#x"}}],"specimen":{"reference":"#s1"}}`, "dom-2", "Observation"},
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
