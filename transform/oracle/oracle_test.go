// Package oracle compares transform's validator with github.com/google/fhir/go (the
// accurate Go FHIR library) on the shared data and on mutations of it. It is a separate
// module so that fhirload does not carry google/fhir's dependencies:
//
//	cd transform/oracle && go test ./...
package oracle

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fhirload/fhirload/internal/benchkit"
	"github.com/fhirload/fhirload/registry"
	"github.com/fhirload/fhirload/transform"
	"github.com/google/fhir/go/fhirversion"
	"github.com/google/fhir/go/jsonformat"
)

func readLines(t testing.TB, name string) [][]byte {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(name, ".gz") {
		if r, err = gzip.NewReader(f); err != nil {
			t.Fatal(err)
		}
	}
	var out [][]byte
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 8<<20)
	for sc.Scan() {
		if len(sc.Bytes()) > 0 {
			out = append(out, bytes.Clone(sc.Bytes()))
		}
	}
	return out
}

func corpus(t testing.TB) map[string][][]byte {
	sets := map[string][][]byte{}
	all, _ := filepath.Glob("../../testdata/shared/fhir-all/*.ndjson.gz")
	for _, f := range append([]string{"../../testdata/sample/Patient.ndjson.gz", "../../testdata/sample/Observation.ndjson.gz",
		"../../testdata/shared/fhir/pathling/Patient.ndjson", "../../testdata/shared/fhir/pathling/Observation.ndjson.gz"}, all...) {
		lines := readLines(t, f)
		if len(lines) > 1500 {
			lines = lines[:1500]
		}
		sets[filepath.Base(f)] = lines
	}
	// The entries of the Synthea Bundles, one line each.
	bundles, _ := filepath.Glob("../../testdata/shared/synthea-bundles/*.json.gz")
	for _, f := range bundles {
		r, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		zr, err := gzip.NewReader(r)
		if err != nil {
			t.Fatal(err)
		}
		d := transform.NewBundleDecoder(zr, transform.BundleOptions{})
		for {
			e, err := d.Next()
			if err == io.EOF {
				break
			}
			if err != nil || e.Err != nil {
				t.Fatalf("%s: %v %v", f, err, e.Err)
			}
			sets["bundle-entries"] = append(sets["bundle-entries"], transform.AppendCompact(nil, e.Resource))
		}
		r.Close()
	}
	// A population of every R4 resource type, generated from the registry's definitions.
	var gen bytes.Buffer
	if _, err := benchkit.GenerateMixed(&gen, benchkit.MixedOptions{Patients: 2, PerPatient: 2, Types: registry.R4().ResourceTypes(), Seed: 11}); err != nil {
		t.Fatal(err)
	}
	for _, l := range bytes.Split(bytes.TrimSpace(gen.Bytes()), []byte("\n")) {
		sets["generated"] = append(sets["generated"], l)
	}
	files, _ := filepath.Glob("../../testdata/shared/fhir/examples/*.json")
	for _, f := range files {
		raw, _ := os.ReadFile(f)
		var b bytes.Buffer
		if err := json.Compact(&b, raw); err != nil {
			t.Fatal(err)
		}
		sets["examples"] = append(sets["examples"], b.Bytes())
	}
	return sets
}

type oracle struct{ u *jsonformat.Unmarshaller }

func newOracle(t testing.TB) oracle {
	u, err := jsonformat.NewUnmarshaller("UTC", fhirversion.R4)
	if err != nil {
		t.Fatal(err)
	}
	return oracle{u}
}

func (o oracle) accepts(line []byte) (bool, error) {
	_, err := o.u.Unmarshal(line)
	return err == nil, err
}

// mutations are edits of valid resources; each either keeps or breaks validity.
var mutations = []struct {
	name     string
	old, new string
}{
	{"feb30", `"effectiveDateTime":"20`, `"effectiveDateTime":"2021-02-30T00:00:00Z","x":"`},
	{"bad status", `"status":"final"`, `"status":"finished"`},
	{"drop status", `"status":"final",`, ``},
	{"unknown element", `"status":"final"`, `"status":"final","statusX":"final"`},
	{"two values", `"valueQuantity":{`, `"valueString":"x","valueQuantity":{`},
	{"value as string", `"value":`, `"value":"1"`},
	{"bad gender", `"gender":"male"`, `"gender":"M"`},
	{"bad gender female", `"gender":"female"`, `"gender":"F"`},
	{"birthDate datetime", `"birthDate":"19`, `"birthDate":"1990-01-01T00:00:00Z","_x":"`},
	{"long id", `"id":"`, `"id":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa`},
	{"id underscore", `"id":"`, `"id":"a_`},
	{"empty string", `"display":"`, `"display":"","x":"`},
	{"array for single", `"code":{`, `"code":[{`},
	{"name use bad", `"use":"official"`, `"use":"formal"`},
	{"issued no zone", `"issued":"`, `"issued":"2020-01-01T00:00:00","x":"`},
	{"decimal literal", `"value":`, `"value":1.50E+3,"x":`},
	{"extra valid extension", `"status":"final"`, `"status":"final","extension":[{"url":"http://x","valueString":"y"}]`},
	{"null value", `"status":"final"`, `"status":null`},
	{"duplicate key", `"status":"final"`, `"status":"final","status":"final"`},
	// Other types (Synthea population, generated population).
	{"encounter status", `"status":"finished"`, `"status":"done"`},
	{"claim use", `"use":"claim"`, `"use":"bill"`},
	{"drop encounter class", `"class":{`, `"classX":{`},
	{"onset as instant", `"onsetDateTime":`, `"onsetInstant":`},
	{"two onsets", `"onsetDateTime":`, `"onsetString":"x","onsetDateTime":`},
	{"date for dateTime", `"authoredOn":"20`, `"authoredOn":"2020-02-30T00:00:00Z","x":"`},
	{"sequence zero", `"sequence":1,`, `"sequence":0,`},
	{"negative integer", `"sequence":1,`, `"sequence":-1,`},
	{"decimal for integer", `"sequence":1,`, `"sequence":1.5,`},
	{"total as string", `"total":{"value":`, `"total":{"value":"1","x":`},
	{"unknown backbone element", `"diagnosis":[{`, `"diagnosis":[{"foo":1,`},
	{"currency", `"currency":"USD"`, `"currency":"usd"`},
	{"bad clinical status", `"code":"active"`, `"code":"on"`},
	{"contained bad", `"status":"completed"`, `"status":"completed","contained":[{"resourceType":"Encounter","id":"c"}]`},
	{"contained ok", `"status":"completed"`, `"status":"completed","contained":[{"resourceType":"Location","id":"c","name":"x"}]`},
	{"wrong reference type", `"provider":{"reference":"urn:uuid:`, `"provider":{"reference":"Patient/p1","display":"urn:uuid:`},
	{"empty array", `"identifier":[`, `"identifier":[],"x":[`},
	// The specification's rules beyond structure: invariants, narrative, extensions,
	// declared profiles (issue 20).
	{"obs-6 value and absent reason", `"valueQuantity":{`, `"dataAbsentReason":{"text":"x"},"valueQuantity":{`},
	{"qty-3 code without system", `"system":"http://unitsofmeasure.org",`, ``},
	{"per-1 start after end", `"start":"2`, `"start":"3`},
	{"ele-1 element with only an id", `"status":"final",`, `"status":"final","focus":[{"id":"f"}],`},
	{"txt-1 script in the narrative", `<div xmlns=\"http://www.w3.org/1999/xhtml\">`, `<div xmlns=\"http://www.w3.org/1999/xhtml\"><script>x</script>`},
	{"core extension of the wrong type", `patient-mothersMaidenName","valueString":"`, `patient-mothersMaidenName","valueCode":"`},
	{"declared profile not met", `{"resourceType":"Observation",`, `{"resourceType":"Observation","meta":{"profile":["http://hl7.org/fhir/StructureDefinition/heartrate"]},`},
}

// explained lists the known disagreements (mutation name → why). Every other case —
// the shared data, the official examples and all other mutations — agrees.
var explained = map[string]string{
	"duplicate key": "google/fhir decodes with encoding/json into a map, so a duplicate key silently keeps " +
		"the last value; we reject it as ambiguous (the JSON is not one resource).",
	"null value": "google/fhir treats \"status\":null as present (it does not report the null and its " +
		"required-field check passes); FHIR JSON forbids null outside primitive arrays and we reject it.",
	"currency": "google/fhir does not check codes of code systems outside the package (ISO 4217 here); the " +
		"required binding of Money.currency to ISO 4217 lets us check their form (three upper-case letters), so " +
		"\"usd\" is rejected.",
	"contained bad": "google/fhir does not check required elements inside contained resources (it accepts a " +
		"contained Encounter without status and class); we validate a contained resource as a full resource.",
	"bad clinical status": "google/fhir does not check required bindings on CodeableConcept elements " +
		"(Condition.clinicalStatus, AllergyIntolerance.clinicalStatus); we require a coding from the value set.",
	// google/fhir/go's jsonformat checks structure, cardinality and primitive formats; it
	// evaluates no FHIRPath invariant, does not read narratives, extension definitions
	// or declared profiles. We do (issue 20), so on these we are stricter.
	"contained ok": "dom-3: the mutation adds a contained Location that nothing in the resource refers to; " +
		"the specification requires a contained resource to be referenced (google/fhir evaluates no invariant).",
	"obs-6 value and absent reason": "obs-6: an Observation with a value must not have a dataAbsentReason " +
		"(google/fhir evaluates no invariant).",
	"qty-3 code without system": "qty-3: a Quantity with a unit code must name its code system (google/fhir " +
		"evaluates no invariant).",
	"per-1 start after end": "per-1: a Period's start may not be after its end (year 3011 before 2011; google/fhir " +
		"evaluates no invariant).",
	"ele-1 element with only an id": "ele-1: every element must have a value or children other than its id; " +
		"focus [{\"id\":\"f\"}] has neither (google/fhir evaluates no invariant).",
	"txt-1 script in the narrative": "txt-1: a narrative may hold only basic XHTML formatting, no <script> " +
		"(google/fhir does not parse the narrative's XHTML).",
	"core extension of the wrong type": "the core extension patient-mothersMaidenName is defined with a string " +
		"value; valueCode breaks its definition (google/fhir does not read extension definitions).",
	"declared profile not met": "the Observation declares the core heartrate profile but is not a heart rate " +
		"(its code lacks LOINC 8867-4; blood pressures also lack a value): we check declared profiles, " +
		"google/fhir does not.",
}

func TestDifferential(t *testing.T) {
	tr, err := transform.New(transform.Options{Profile: "base"})
	if err != nil {
		t.Fatal(err)
	}
	o := newOracle(t)
	var disagreements []string
	check := func(label string, line []byte) {
		ours := tr.Validate(line) == nil
		theirs, terr := o.accepts(line)
		if ours != theirs {
			disagreements = append(disagreements, label)
			if testing.Verbose() {
				t.Logf("%s: ours=%v google=%v (%v) ourErr=%v", label, ours, theirs, terr, tr.Validate(line))
			}
		}
	}
	applied := map[string]int{}
	for set, lines := range corpus(t) {
		for i, l := range lines {
			check(set+"/"+"orig", l)
			if i%10 != 0 && set != "generated" && set != "examples" {
				continue
			}
			for _, m := range mutations {
				if bytes.Contains(l, []byte(m.old)) {
					applied[m.name]++
					check(m.name, bytes.Replace(l, []byte(m.old), []byte(m.new), 1))
				}
			}
		}
	}
	for _, m := range mutations {
		if applied[m.name] == 0 {
			t.Errorf("mutation %q applies to no line of the corpus", m.name)
		}
	}
	counts := map[string]int{}
	for _, d := range disagreements {
		counts[d]++
	}
	for name, n := range counts {
		why, ok := explained[name]
		if !ok {
			t.Errorf("unexplained disagreement %q (%d lines)", name, n)
			continue
		}
		t.Logf("disagreement %q (%d lines): %s", name, n, why)
	}
}
