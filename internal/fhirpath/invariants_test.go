package fhirpath_test

import (
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/fhirload/fhirload/internal/fhirpath"
	"github.com/fhirload/fhirload/internal/fhirpath/internal/corpus"
	"github.com/fhirload/fhirload/internal/fhirpath/internal/r4"
	"github.com/fhirload/fhirload/internal/testlines"
)

var (
	baseOnce sync.Once
	baseSet  *fhirpath.Set
	baseErr  error
)

// baseInvariants returns a Set of the error-severity invariants of the R4 base
// definitions (resources and datatypes; profiles such as vitalsigns apply only to
// resources that declare them). txt-1/txt-2 use the test narrative hook.
func baseInvariants(t testing.TB) *fhirpath.Set {
	t.Helper()
	baseOnce.Do(func() {
		invs, err := corpus.Invariants(".")
		if err != nil {
			baseErr = err
			return
		}
		ty := r4.New()
		var list []fhirpath.Invariant
		for _, inv := range invs {
			if inv.Severity != "error" || !slices.ContainsFunc(inv.Definitions, ty.Defines) {
				continue
			}
			list = append(list, fhirpath.Invariant{Key: inv.Key, Severity: inv.Severity, Context: inv.Context, Expression: inv.Expression})
		}
		baseSet, baseErr = fhirpath.NewSet(list, fhirpath.WithNarrative())
	})
	if baseErr != nil {
		t.Fatal(baseErr)
	}
	return baseSet
}

// testHTMLChecks is a stand-in for the validator's XHTML checker: it rejects scripts and
// event handlers, which is all these tests need of it.
func testHTMLChecks(t *fhirpath.Tree, div fhirpath.NodeID) bool {
	s := strings.ToLower(string(t.Raw(div)))
	return !strings.Contains(s, "<script") && !strings.Contains(s, "onclick")
}

// violations checks a resource against the base invariants and returns the violated
// keys with their locations ("obs-6@Observation"), sorted.
func violations(t *testing.T, src string) []string {
	t.Helper()
	set := baseInvariants(t)
	tr := build(t, src)
	ev := fhirpath.Evaluator{Env: fhirpath.Env{HTMLChecks: testHTMLChecks}}
	var out []string
	for _, v := range set.Check(&ev, tr, nil) {
		s := v.Invariant.Key + "@" + string(tr.AppendLocation(nil, v.Node))
		if v.Err != nil {
			s += " (" + v.Err.Error() + ")"
		}
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

// TestInvariantFamilies runs valid and invalid resources of each invariant family.
func TestInvariantFamilies(t *testing.T) {
	const (
		obs  = `"resourceType":"Observation","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"8302-2"}]}`
		pat  = `"resourceType":"Patient"`
		xhtm = `<div xmlns=\"http://www.w3.org/1999/xhtml\">`
	)
	for _, c := range []struct {
		name string
		src  string
		want []string
	}{
		{"minimal observation", `{` + obs + `}`, nil},
		// ele-1: every element has a value or children other than id.
		{"ele-1 valid primitive extension only", `{` + obs + `,"_issued":{"extension":[{"url":"http://x","valueString":"y"}]}}`, nil},
		{"ele-1 complex element with only an id", `{` + obs + `,"valueQuantity":{"id":"q"}}`,
			[]string{"ele-1@Observation.value.ofType(Quantity)"}},
		{"ele-1 primitive with only an id", `{` + obs + `,"_issued":{"id":"i1"}}`, []string{"ele-1@Observation.issued"}},
		// dom-2…dom-5: contained resources.
		{"dom-3 valid referenced contained", `{` + obs + `,"contained":[{"resourceType":"Patient","id":"p"}],"subject":{"reference":"#p"}}`, nil},
		{"dom-3 unreferenced contained", `{` + obs + `,"contained":[{"resourceType":"Patient","id":"p"}]}`, []string{"dom-3@Observation"}},
		{"dom-3 referenced from inside another contained", `{` + obs + `,"contained":[{"resourceType":"Patient","id":"p","managingOrganization":{"reference":"#o"}},{"resourceType":"Organization","id":"o","name":"O"}],"subject":{"reference":"#p"}}`, nil},
		{"dom-2 nested contained", `{` + obs + `,"contained":[{"resourceType":"Patient","id":"p","contained":[{"resourceType":"Organization","id":"o","name":"O"}],"managingOrganization":{"reference":"#o"}}],"subject":{"reference":"#p"}}`,
			// ref-1 resolves in the container's contained list only: nesting is what dom-2 forbids.
			[]string{"dom-2@Observation", "ref-1@Observation.contained.managingOrganization"}},
		{"dom-4 contained meta.versionId", `{` + obs + `,"contained":[{"resourceType":"Patient","id":"p","meta":{"versionId":"1"}}],"subject":{"reference":"#p"}}`,
			[]string{"dom-4@Observation"}},
		{"dom-4 contained meta.lastUpdated", `{` + obs + `,"contained":[{"resourceType":"Patient","id":"p","meta":{"lastUpdated":"2020-01-01T00:00:00Z"}}],"subject":{"reference":"#p"}}`,
			[]string{"dom-4@Observation"}},
		{"dom-5 contained meta.security", `{` + obs + `,"contained":[{"resourceType":"Patient","id":"p","meta":{"security":[{"code":"R"}]}}],"subject":{"reference":"#p"}}`,
			[]string{"dom-5@Observation"}},
		// obs-6, obs-7.
		{"obs-6 valid dataAbsentReason alone", `{` + obs + `,"dataAbsentReason":{"text":"lost"}}`, nil},
		{"obs-6 value and dataAbsentReason", `{` + obs + `,"valueString":"x","dataAbsentReason":{"text":"lost"}}`, []string{"obs-6@Observation"}},
		{"obs-7 valid component with another code", `{` + obs + `,"valueString":"x","component":[{"code":{"coding":[{"system":"http://loinc.org","code":"8480-6"}]},"valueString":"y"}]}`, nil},
		{"obs-7 component repeats the code", `{` + obs + `,"valueString":"x","component":[{"code":{"coding":[{"system":"http://loinc.org","code":"8302-2"}]},"valueString":"y"}]}`,
			[]string{"obs-7@Observation"}},
		{"obs-7 valid same code without a value", `{` + obs + `,"component":[{"code":{"coding":[{"system":"http://loinc.org","code":"8302-2"}]},"valueString":"y"}]}`, nil},
		{"obs-3 referenceRange without low, high or text", `{` + obs + `,"referenceRange":[{"type":{"text":"normal"}}]}`, []string{"obs-3@Observation.referenceRange"}},
		{"obs-3 valid", `{` + obs + `,"referenceRange":[{"low":{"value":1}}]}`, nil},
		// pat-1.
		{"pat-1 valid contact", `{` + pat + `,"contact":[{"name":{"family":"X"}}]}`, nil},
		{"pat-1 contact with only a gender", `{` + pat + `,"contact":[{"gender":"male"}]}`, []string{"pat-1@Patient.contact"}},
		// ref-1: a local reference must name a contained resource.
		{"ref-1 valid", `{` + pat + `,"contained":[{"resourceType":"Organization","id":"o","name":"O"}],"managingOrganization":{"reference":"#o"}}`, nil},
		{"ref-1 dangling local reference", `{` + pat + `,"managingOrganization":{"reference":"#o"}}`, []string{"ref-1@Patient.managingOrganization"}},
		{"ref-1 plain relative reference", `{` + pat + `,"managingOrganization":{"reference":"Organization/o"}}`, nil},
		// per-1: start <= end.
		{"per-1 valid", `{` + obs + `,"effectivePeriod":{"start":"2020-01-01","end":"2020-01-02"}}`, nil},
		{"per-1 end before start", `{` + obs + `,"effectivePeriod":{"start":"2020-01-02","end":"2020-01-01"}}`, []string{"per-1@Observation.effective.ofType(Period)"}},
		{"per-1 zones compared in UTC", `{` + obs + `,"effectivePeriod":{"start":"2020-01-01T10:00:00+02:00","end":"2020-01-01T09:00:00Z"}}`, nil},
		{"per-1 end before start across zones", `{` + obs + `,"effectivePeriod":{"start":"2020-01-01T10:00:00-02:00","end":"2020-01-01T11:00:00Z"}}`, []string{"per-1@Observation.effective.ofType(Period)"}},
		{"per-1 different precisions are unknown, not a violation", `{` + obs + `,"effectivePeriod":{"start":"2020-01","end":"2020-01-15"}}`, nil},
		// qty-3 and rng-2.
		{"qty-3 code without system", `{` + obs + `,"valueQuantity":{"value":1,"code":"mg"}}`, []string{"qty-3@Observation.value.ofType(Quantity)"}},
		{"qty-3 valid", `{` + obs + `,"valueQuantity":{"value":1,"code":"mg","system":"http://unitsofmeasure.org"}}`, nil},
		{"rng-2 low above high", `{` + obs + `,"valueRange":{"low":{"value":5,"unit":"mg","system":"http://unitsofmeasure.org","code":"mg"},"high":{"value":2,"unit":"mg","system":"http://unitsofmeasure.org","code":"mg"}}}`,
			[]string{"rng-2@Observation.value.ofType(Range)"}},
		{"rng-2 valid across units", `{` + obs + `,"valueRange":{"low":{"value":500,"system":"http://unitsofmeasure.org","code":"mg"},"high":{"value":2,"system":"http://unitsofmeasure.org","code":"g"}}}`, nil},
		// ext-1: an extension has a value or extensions, not both, not neither.
		{"ext-1 valid", `{` + obs + `,"extension":[{"url":"http://x","valueString":"y"}]}`, nil},
		{"ext-1 value and extensions", `{` + obs + `,"extension":[{"url":"http://x","valueString":"y","extension":[{"url":"a","valueString":"b"}]}]}`, []string{"ext-1@Observation.extension"}},
		{"ext-1 neither", `{` + obs + `,"extension":[{"url":"http://x"}]}`, []string{"ext-1@Observation.extension"}},
		{"ext-1 on a primitive's extension", `{` + obs + `,"_status":{"extension":[{"url":"http://x"}]}}`, []string{"ext-1@Observation.status.extension"}},
		// txt-1/txt-2 go through the narrative hook.
		{"txt valid", `{` + pat + `,"text":{"status":"generated","div":"` + xhtm + `ok</div>"}}`, nil},
		{"txt script", `{` + pat + `,"text":{"status":"generated","div":"` + xhtm + `<script>x()</script></div>"}}`,
			[]string{"txt-1@Patient.text.div", "txt-2@Patient.text.div"}},
		// Other resources.
		{"con-5 entered-in-error with a clinical status", `{"resourceType":"Condition","subject":{"reference":"Patient/p"},"clinicalStatus":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/condition-clinical","code":"active"}]},"verificationStatus":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/condition-ver-status","code":"entered-in-error"}]}}`,
			[]string{"con-5@Condition"}},
		{"con-3 abatement without a resolved status", `{"resourceType":"Condition","subject":{"reference":"Patient/p"},"clinicalStatus":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/condition-clinical","code":"active"}]},"abatementDateTime":"2020-01-01"}`,
			[]string{"con-4@Condition"}},
		{"bdl-1 total outside a searchset", `{"resourceType":"Bundle","type":"collection","total":1}`, []string{"bdl-1@Bundle"}},
		{"bdl-3 batch entry without request", `{"resourceType":"Bundle","type":"batch","entry":[{"resource":{"resourceType":"Patient","id":"a"}}]}`, []string{"bdl-3@Bundle"}},
		{"bdl-3 valid", `{"resourceType":"Bundle","type":"batch","entry":[{"resource":{"resourceType":"Patient","id":"a"},"request":{"method":"PUT","url":"Patient/a"}}]}`, nil},
		{"bdl-7 duplicate fullUrl", `{"resourceType":"Bundle","type":"collection","entry":[{"fullUrl":"urn:uuid:1","resource":{"resourceType":"Patient"}},{"fullUrl":"urn:uuid:1","resource":{"resourceType":"Patient"}}]}`,
			[]string{"bdl-7@Bundle"}},
		{"bdl-11 document without Composition first", `{"resourceType":"Bundle","type":"document","identifier":{"system":"s","value":"v"},"timestamp":"2020-01-01T00:00:00Z","entry":[{"resource":{"resourceType":"Patient"}}]}`,
			[]string{"bdl-11@Bundle"}},
		{"que-1 nested group without items", `{"resourceType":"Questionnaire","status":"active","item":[{"linkId":"1","type":"group","item":[{"linkId":"1.1","type":"group"}]}]}`,
			[]string{"que-1@Questionnaire.item.item"}},
		{"que-2 duplicate linkId", `{"resourceType":"Questionnaire","status":"active","item":[{"linkId":"1","type":"string"},{"linkId":"1","type":"string"}]}`,
			[]string{"que-2@Questionnaire"}},
		{"tim-1 duration without unit", `{"resourceType":"MedicationRequest","status":"active","intent":"order","subject":{"reference":"Patient/p"},"medicationCodeableConcept":{"text":"x"},"dosageInstruction":[{"timing":{"repeat":{"duration":5}}}]}`,
			[]string{"tim-1@MedicationRequest.dosageInstruction.timing.repeat"}},
		{"tim-4 negative duration", `{"resourceType":"MedicationRequest","status":"active","intent":"order","subject":{"reference":"Patient/p"},"medicationCodeableConcept":{"text":"x"},"dosageInstruction":[{"timing":{"repeat":{"duration":-5,"durationUnit":"h"}}}]}`,
			[]string{"tim-4@MedicationRequest.dosageInstruction.timing.repeat"}},
		{"inv-1 of Parameters", `{"resourceType":"Parameters","parameter":[{"name":"a","valueString":"x","part":[{"name":"b","valueString":"y"}]}]}`,
			[]string{"inv-1@Parameters.parameter"}},
		{"app-3 appointment without start", `{"resourceType":"Appointment","status":"booked","participant":[{"actor":{"reference":"Patient/p"},"status":"accepted"}]}`,
			[]string{"app-3@Appointment"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := violations(t, c.src)
			if strings.Join(got, "\n") != strings.Join(c.want, "\n") {
				t.Errorf("violations:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(c.want, "\n"))
			}
		})
	}
}

// TestExamplesSatisfyInvariants: the HL7 examples and a sample of every resource type of
// a Synthea population satisfy every base invariant that can be evaluated.
func TestExamplesSatisfyInvariants(t *testing.T) {
	files, err := filepath.Glob("testdata/examples/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("examples: %v", err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if v := violations(t, string(b)); len(v) > 0 {
			t.Errorf("%s: %s", filepath.Base(f), strings.Join(v, "; "))
		}
	}
	n := 0
	testlines.Each(t, "testdata/synthea-all-types.ndjson.gz", func(line []byte) bool {
		n++
		if v := violations(t, string(line)); len(v) > 0 {
			t.Errorf("synthea line %d: %s", n, strings.Join(v, "; "))
		}
		return true
	})
	if n < 80 {
		t.Errorf("%d synthea lines", n)
	}
}

// TestEveryResourceTypeEvaluates: on a bare resource of every R4 type, every base
// invariant that applies evaluates without an error (false is fine: a bare resource may
// well break a rule).
func TestEveryResourceTypeEvaluates(t *testing.T) {
	set := baseInvariants(t)
	ev := fhirpath.Evaluator{Env: fhirpath.Env{HTMLChecks: testHTMLChecks}}
	n := 0
	for typ := range r4Resources() {
		var tr fhirpath.Tree
		src := `{"resourceType":"` + typ + `","id":"x","meta":{"versionId":"1"},"text":{"status":"generated","div":"<div xmlns=\"http://www.w3.org/1999/xhtml\">x</div>"},"extension":[{"url":"http://x","valueString":"y"}]}`
		switch typ {
		case "Bundle", "Binary", "Parameters": // not DomainResources: no text, no extension
			src = `{"resourceType":"` + typ + `","id":"x","meta":{"versionId":"1"}}`
		}
		if err := tr.Build([]byte(src), r4.New()); err != nil {
			t.Fatalf("%s: %v", typ, err)
		}
		for _, v := range set.Check(&ev, &tr, nil) {
			if v.Err != nil {
				t.Errorf("%s: %s: %v", typ, v.Invariant.Key, v.Err)
			}
		}
		n++
	}
	if n < 140 {
		t.Errorf("only %d resource types", n)
	}
}

func r4Resources() map[string]bool {
	out := map[string]bool{}
	invs, _ := corpus.Invariants(".")
	ty := r4.New()
	for _, inv := range invs {
		if !strings.Contains(inv.Context, ".") && ty.IsResource(inv.Context) && inv.Context != "Resource" && inv.Context != "DomainResource" {
			out[inv.Context] = true
		}
	}
	return out
}
