package transform

import (
	"archive/tar"
	"compress/gzip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fhirload/fhirload/registry"
)

// examplePackage packs testdata/example-package (a small US-Core-like package written
// for these tests: a Patient profile, a simple and a complex extension, value sets and a
// code system) into a .tgz in the standard FHIR package form, and returns its path.
func examplePackage(t testing.TB) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "example.tgz")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	zw := gzip.NewWriter(f)
	tw := tar.NewWriter(zw)
	root := "testdata/example-package"
	err = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		raw, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		name, _ := filepath.Rel(root, p)
		if err := tw.WriteHeader(&tar.Header{Name: filepath.ToSlash(name), Mode: 0o644, Size: int64(len(raw)), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err = tw.Write(raw)
		return err
	})
	if err == nil {
		err = tw.Close()
	}
	if err == nil {
		err = zw.Close()
	}
	if err == nil {
		err = f.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	return out
}

const (
	exPatient  = "http://example.org/fhir/StructureDefinition/example-patient"
	exBirthSex = "http://example.org/fhir/StructureDefinition/example-birthsex"
	exRace     = "http://example.org/fhir/StructureDefinition/example-race"
)

// TestProfilePackage: a profile from a package (a Patient profile requiring identifier
// and gender, binding gender to a value set of the package, slicing its extensions) and
// the package's extensions (with a required binding on a nested value).
func TestProfilePackage(t *testing.T) {
	pkg := examplePackage(t)
	valid := `{"resourceType":"Patient","id":"p1","meta":{"profile":["` + exPatient + `"]},` +
		`"extension":[{"url":"` + exBirthSex + `","valueCode":"M"},{"url":"` + exRace + `","extension":[{"url":"ombCategory","valueCoding":{"system":"urn:oid:2.16.840.1.113883.6.238","code":"2106-3"}},{"url":"text","valueString":"Secret1"}]}],` +
		`"identifier":[{"system":"http://example.org/mrn","value":"Secret2"}],"name":[{"family":"Secret1","given":["Secret2"]}],"gender":"male","birthDate":"1970-01-01"}`
	loc := func(l string) string { return l }
	cases := []ruleCase{
		{"valid", valid, "", ""},
		{"not declared: only the core rules", `{"resourceType":"Patient","name":[{"family":"Secret1","given":["Secret2"]}],"gender":"other"}`, "", ""},
		{"no identifier", edit(t, valid, `"identifier":[{"system":"http://example.org/mrn","value":"Secret2"}],`, ``), exPatient, loc("Patient")},
		{"identifier without a system", edit(t, valid, `"system":"http://example.org/mrn",`, ``), exPatient, loc("Patient.identifier")},
		{"no gender", edit(t, valid, `,"gender":"male"`, ``), exPatient, loc("Patient")},
		{"gender outside the profile's value set", edit(t, valid, `"gender":"male"`, `"gender":"other"`), exPatient, loc("Patient.gender")},
		{"profile invariant expat-1", edit(t, valid, `"gender":"male"`, `"gender":"male","active":true,"deceasedBoolean":true`), exPatient, loc("Patient")},
		{"reference target narrowed", edit(t, valid, `"gender":"male"`, `"gender":"male","generalPractitioner":[{"reference":"Organization/o1"}]`), exPatient, loc("Patient.generalPractitioner")},
		{"extension slice max", edit(t, valid, `{"url":"`+exBirthSex+`","valueCode":"M"}`, `{"url":"`+exBirthSex+`","valueCode":"M"},{"url":"`+exBirthSex+`","valueCode":"F"}`), "ext:" + exBirthSex, loc("Patient.extension[0]")},
		{"extension value outside its value set", edit(t, valid, `"valueCode":"M"`, `"valueCode":"X"`), "ext:" + exBirthSex, loc("Patient.extension[0].value.ofType(code)")},
		{"extension value type", edit(t, valid, `"valueCode":"M"`, `"valueString":"M"`), "ext:" + exBirthSex, loc("Patient.extension[0].value.ofType(string)")},
		{"extension context", `{"resourceType":"Observation","status":"final","code":{"text":"Secret1"},"extension":[{"url":"` + exBirthSex + `","valueCode":"M"}]}`, "ext:" + exBirthSex, loc("Observation.extension")},
		{"nested extension required", edit(t, valid, `,{"url":"text","valueString":"Secret1"}`, ``), "ext:" + exRace, loc("Patient.extension[1]")},
		{"nested extension value outside its value set", edit(t, valid, `"code":"2106-3"`, `"code":"9999-9"`), "ext:" + exRace, loc("Patient.extension[1].extension[0].value.ofType(Coding)")},
	}
	checkRules(t, Options{ProfilePackages: []string{pkg}}, cases, "Secret1", "Secret2")

	// The package's extensions are known: strict mode accepts them.
	tr := mustNew(t, Options{ProfilePackages: []string{pkg}, Extensions: ExtensionsStrict})
	if _, _, err := tr.NewStream("x").Next([]byte(valid)); err != nil {
		t.Fatalf("strict with the package: %v", err)
	}
	// Without the package, the profile is unknown and the line valid.
	res, _, err := mustNew(t, Options{}).NewStream("x").Next([]byte(valid))
	if err != nil || len(res.UnknownProfiles) != 1 || res.UnknownProfiles[0] != exPatient || len(res.UnknownExtensions) != 2 {
		t.Fatalf("without the package: %q %q %v", res.UnknownProfiles, res.UnknownExtensions, err)
	}
}

// TestProfilePackageErrors: a package that cannot be read stops New with an error
// naming the file.
func TestProfilePackageErrors(t *testing.T) {
	dir := t.TempDir()
	notGzip := filepath.Join(dir, "not.tgz")
	if err := os.WriteFile(notGzip, []byte("plain text"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{filepath.Join(dir, "missing.tgz"), notGzip} {
		_, err := New(Options{ProfilePackages: []string{f}})
		if err == nil || !strings.Contains(err.Error(), f) {
			t.Errorf("%s: error %v", f, err)
		}
	}
}

// TestPackageValueSets: what the loader expands, and what it leaves unchecked.
func TestPackageValueSets(t *testing.T) {
	p, err := loadPackage(examplePackage(t), registryR4())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, vs := range p.valueSets {
		got[vs.URL] = strings.Join(codesOf(vs.Codes), " ")
		if !vs.Complete {
			got[vs.URL] = "incomplete"
		}
	}
	want := map[string]string{
		"http://example.org/fhir/ValueSet/example-gender":        "male female unknown",
		"http://example.org/fhir/ValueSet/example-birthsex":      "F M UNK",
		"http://example.org/fhir/ValueSet/example-race-category": "1002-5 2028-9 2054-5 2076-8 2106-3 UNK ASKU",
		"http://example.org/fhir/ValueSet/example-filtered":      "incomplete",
	}
	for url, w := range want {
		if got[url] != w {
			t.Errorf("%s: %q, want %q", url, got[url], w)
		}
	}
	if len(p.profiles) != 1 || len(p.extensions) != 2 {
		t.Errorf("%d profiles, %d extensions", len(p.profiles), len(p.extensions))
	}
}

func registryR4() *registry.Registry { return registry.R4() }

func codesOf(cs []registry.Code) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Code)
	}
	return out
}
