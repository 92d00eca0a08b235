package transform

import (
	"slices"
	"strings"
	"testing"

	"github.com/fhirload/fhirload/internal/testlines"
)

const (
	profBP         = "http://hl7.org/fhir/StructureDefinition/bp"
	profVitals     = "http://hl7.org/fhir/StructureDefinition/vitalsigns"
	profWeight     = "http://hl7.org/fhir/StructureDefinition/bodyweight"
	profPanel      = "http://hl7.org/fhir/StructureDefinition/vitalspanel"
	profHeartRate  = "http://hl7.org/fhir/StructureDefinition/heartrate"
	syntheaBP      = `{"resourceType":"Observation","id":"e0a76743-403e-4d73-b5ca-d1bc25ef1a74",META"status":"final","category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs","display":"vital-signs"}]}],"code":{"coding":[{"system":"http://loinc.org","code":"85354-9","display":"Blood Pressure"}],"text":"Blood Pressure"},"subject":{"reference":"urn:uuid:6c5d9ca9-54d7-42f5-bfae-a7c19cd217f2"},"encounter":{"reference":"urn:uuid:7518242e-0b07-41d2-8c40-8acd1e3a7bb9"},"effectiveDateTime":"2011-02-02T16:30:49-05:00","issued":"2011-02-02T16:30:49.825-05:00","component":[{"code":{"coding":[{"system":"http://loinc.org","code":"8462-4","display":"Diastolic Blood Pressure"}],"text":"Diastolic Blood Pressure"},"valueQuantity":{"value":80,"unit":"mm[Hg]","system":"http://unitsofmeasure.org","code":"mm[Hg]"}},{"code":{"coding":[{"system":"http://loinc.org","code":"8480-6","display":"Systolic Blood Pressure"}],"text":"Systolic Blood Pressure"},"valueQuantity":{"value":135,"unit":"mm[Hg]","system":"http://unitsofmeasure.org","code":"mm[Hg]"}}]}`
	syntheaWeight  = `{"resourceType":"Observation","id":"9adbb438-7615-4955-a178-d7850ca09589",META"status":"final","category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs","display":"vital-signs"}]}],"code":{"coding":[{"system":"http://loinc.org","code":"29463-7","display":"Body Weight"}],"text":"Body Weight"},"subject":{"reference":"Patient/p1"},"effectiveDateTime":"2011-02-02T16:30:49-05:00","issued":"2011-02-02T16:30:49.825-05:00","valueQuantity":{"value":98.7,"unit":"kg","system":"http://unitsofmeasure.org","code":"kg"}}`
	vitalsCategory = `"category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs","display":"vital-signs"}]}]`
)

// declare puts a meta.profile into a line template.
func declare(line string, profiles ...string) string {
	meta := ""
	if len(profiles) > 0 {
		meta = `"meta":{"profile":["` + strings.Join(profiles, `","`) + `"]},`
	}
	return strings.Replace(line, "META", meta, 1)
}

// edit applies replacements (old, new, …) to a line; each must apply.
func edit(t *testing.T, line string, pairs ...string) string {
	t.Helper()
	for i := 0; i < len(pairs); i += 2 {
		if !strings.Contains(line, pairs[i]) {
			t.Fatalf("edit: %q not in the line", pairs[i])
		}
		line = strings.Replace(line, pairs[i], pairs[i+1], 1)
	}
	return line
}

// TestCoreProfiles: a resource that declares a core profile is checked against it and
// the profiles it derives from (bp → vitalsigns): required elements and slices, fixed
// and pattern values, narrowed types, required bindings and the profiles' invariants.
// Each rejection names the profile's URL and the element.
func TestCoreProfiles(t *testing.T) {
	bp := declare(syntheaBP, profBP)
	weight := declare(syntheaWeight, profWeight)
	cases := []ruleCase{
		{"bp valid (Synthea)", bp, "", ""},
		{"bp valid with a version suffix", declare(syntheaBP, profBP+"|4.0.1"), "", ""},
		{"bodyweight valid", weight, "", ""},
		{"no profile declared: not checked", declare(edit(t, syntheaBP, `"code":"8480-6"`, `"code":"1234-5"`)), "", ""},

		{"bp without the systolic component", edit(t, bp, `"code":"8480-6"`, `"code":"8310-5"`), profBP, "Observation"},
		{"bp with another code", edit(t, bp, `"code":"85354-9"`, `"code":"8302-2"`), profBP, "Observation.code"},
		{"bp code from another system", edit(t, bp, `{"system":"http://loinc.org","code":"85354-9"`, `{"system":"http://snomed.info/sct","code":"85354-9"`), profBP, "Observation.code"},
		{"bp with one component", edit(t, bp, `,{"code":{"coding":[{"system":"http://loinc.org","code":"8480-6","display":"Systolic Blood Pressure"}],"text":"Systolic Blood Pressure"},"valueQuantity":{"value":135,"unit":"mm[Hg]","system":"http://unitsofmeasure.org","code":"mm[Hg]"}}`, ``), profBP, "Observation"},
		{"vitalsigns: no vital-signs category", edit(t, bp, `"code":"vital-signs"`, `"code":"laboratory"`), profBP, "Observation"},
		{"vitalsigns: no subject", edit(t, weight, `"subject":{"reference":"Patient/p1"},`, ``), profWeight, "Observation"},
		{"vitalsigns: subject not a Patient", edit(t, weight, `"subject":{"reference":"Patient/p1"}`, `"subject":{"reference":"Group/g1"}`), profWeight, "Observation.subject"},
		{"vitalsigns: unit outside ucum-vitals-common", edit(t, bp, `"code":"mm[Hg]"}}]}`, `"code":"mmHg"}}]}`), profBP, "Observation.component[1].value.ofType(Quantity)"},
		{"vs-1 effective without a day", edit(t, weight, `"effectiveDateTime":"2011-02-02T16:30:49-05:00"`, `"effectiveDateTime":"2011"`), profWeight, "Observation.effective.ofType(dateTime)"},
		{"vs-2 no value, component or member", edit(t, weight, `,"valueQuantity":{"value":98.7,"unit":"kg","system":"http://unitsofmeasure.org","code":"kg"}`, ``), profWeight, "Observation"},
		{"vs-3 component without a value", edit(t, bp, `,"valueQuantity":{"value":80,"unit":"mm[Hg]","system":"http://unitsofmeasure.org","code":"mm[Hg]"}`, ``), profBP, "Observation.component[0]"},
		{"bodyweight with the heart rate code", edit(t, weight, `"code":"29463-7"`, `"code":"8867-4"`), profWeight, "Observation.code"},
		{"heartrate valid", declare(edit(t, syntheaWeight, `"code":"29463-7"`, `"code":"8867-4"`, `"unit":"kg"`, `"unit":"/min"`, `"code":"kg"`, `"code":"/min"`), profHeartRate), "", ""},
		{"vitalspanel with a value", declare(edit(t, syntheaWeight, `"code":"29463-7"`, `"code":"85353-1"`, `"subject"`, `"hasMember":[{"reference":"Observation/o2"}],"subject"`), profPanel), profPanel, "Observation.value.ofType(Quantity)"},
		{"vitalspanel without members", declare(edit(t, syntheaWeight, `"code":"29463-7"`, `"code":"85353-1"`, `,"valueQuantity":{"value":98.7,"unit":"kg","system":"http://unitsofmeasure.org","code":"kg"}`, ``), profPanel), profPanel, "Observation"},
		{"declaring the core Observation definition", declare(syntheaWeight, "http://hl7.org/fhir/StructureDefinition/Observation"), "", ""},
		{"a Patient declaring the core Observation definition", `{"resourceType":"Patient","meta":{"profile":["http://hl7.org/fhir/StructureDefinition/Observation"]},"name":[{"family":"Secret1","given":["Secret2"]}]}`, "http://hl7.org/fhir/StructureDefinition/Observation", "Patient.meta.profile"},
		{"a Patient declaring an Observation profile", `{"resourceType":"Patient","meta":{"profile":["` + profBP + `"]},"name":[{"family":"Secret1","given":["Secret2"]}]}`, profBP, "Patient.meta.profile"},
		{"a contained resource's profile", `{"resourceType":"DiagnosticReport","status":"final","code":{"text":"Secret1"},"contained":[` + edit(t, weight, `"code":"29463-7"`, `"code":"8867-4"`) + `],"result":[{"reference":"#9adbb438-7615-4955-a178-d7850ca09589"}]}`, profWeight, "DiagnosticReport.contained.code"},
	}
	checkRules(t, Options{}, cases, "Secret1", "Secret2", "98.7", "135")
}

// TestUnknownProfiles: a declared profile we do not have is listed, once, and the line
// is valid if it is otherwise.
func TestUnknownProfiles(t *testing.T) {
	const usCore = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-observation-lab"
	tr := mustNew(t, Options{})
	res, _, err := tr.NewStream("x").Next([]byte(declare(syntheaWeight, usCore, profWeight, usCore+"|3.1.1")))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.UnknownProfiles, []string{usCore}) {
		t.Fatalf("UnknownProfiles = %q", res.UnknownProfiles)
	}
	res, _, err = tr.NewStream("x").Next([]byte(declare(syntheaWeight, profWeight)))
	if err != nil || res.UnknownProfiles != nil {
		t.Fatalf("%q, %v", res.UnknownProfiles, err)
	}
}

// vitalProfiles maps the LOINC codes of Synthea's vital signs to the core profiles that
// define them; other vital signs declare the generic vitalsigns profile.
var vitalProfiles = map[string]string{
	"85354-9": profBP, "29463-7": profWeight, "8867-4": profHeartRate,
	"8302-2": "http://hl7.org/fhir/StructureDefinition/bodyheight", "39156-5": "http://hl7.org/fhir/StructureDefinition/bmi",
	"8310-5": "http://hl7.org/fhir/StructureDefinition/bodytemp", "9279-1": "http://hl7.org/fhir/StructureDefinition/resprate",
	"9843-4": "http://hl7.org/fhir/StructureDefinition/headcircum",
}

// declaredVitals returns the sample's vital-sign Observations, each declaring the core
// profile of its code (vitalsigns when no narrower one exists), and how many declare a
// narrower one.
func declaredVitals(t testing.TB) ([][]byte, int) {
	t.Helper()
	var out [][]byte
	narrow := 0
	for _, l := range testlines.All(t, "../testdata/sample/Observation.ndjson.gz") {
		s := string(l)
		if !strings.Contains(s, `"code":"vital-signs"`) {
			continue
		}
		prof := profVitals
		for code, p := range vitalProfiles {
			if strings.Contains(s, `"code":{"coding":[{"system":"http://loinc.org","code":"`+code+`"`) {
				prof, narrow = p, narrow+1
				break
			}
		}
		out = append(out, []byte(strings.Replace(s, `"resourceType":"Observation",`, `"resourceType":"Observation","meta":{"profile":["`+prof+`"]},`, 1)))
	}
	return out, narrow
}

// TestSyntheaVitalSignsConform: every vital sign of the sample (7,317) conforms to the
// core profile of its kind (bp, bodyweight, bodyheight, bmi, heartrate, resprate,
// bodytemp, headcircum, else vitalsigns) once it declares it.
func TestSyntheaVitalSignsConform(t *testing.T) {
	lines, narrow := declaredVitals(t)
	if len(lines) != 7317 || narrow != 5933 {
		t.Fatalf("%d vital signs, %d with a narrower profile", len(lines), narrow)
	}
	st := mustNew(t, Options{}).NewStream("vitals")
	for i, l := range lines {
		if (testing.Short() || raceEnabled) && i%10 != 0 {
			continue
		}
		res, _, err := st.Next(l)
		if err != nil {
			t.Fatalf("%v\n%s", err, l)
		}
		if res.UnknownProfiles != nil {
			t.Fatalf("unknown profiles %q", res.UnknownProfiles)
		}
	}
}
