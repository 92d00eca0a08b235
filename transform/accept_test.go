package transform

import (
	"bytes"
	"testing"

	"github.com/fhirload/fhirload/internal/testlines"
)

func TestAcceptsSharedData(t *testing.T) {
	sets := []struct {
		name     string
		files    []string
		profiles []string
	}{
		{"sample", []string{"../testdata/sample/Patient.ndjson.gz", "../testdata/sample/Observation.ndjson.gz"}, []string{ProfileBase, ProfileSeed}},
		{"pathling", []string{"../testdata/shared/fhir/pathling/Patient.ndjson", "../testdata/shared/fhir/pathling/Observation.ndjson.gz"}, []string{ProfileBase, ProfileSeed}},
	}
	for _, set := range sets {
		for _, prof := range set.profiles {
			for _, ids := range []string{IDsKeep, IDsDerive} {
				tr := mustNew(t, Options{Profile: prof, IDs: ids})
				for _, f := range set.files {
					st := tr.NewStream(f)
					lines := testlines.All(t, f)
					for i, line := range lines {
						if raceEnabled && i%8 != 0 {
							continue // see raceEnabled
						}
						res, skip, err := st.Next(line)
						if err != nil || skip {
							t.Fatalf("%s %s ids=%s %s:%d: %v (skip %v)", set.name, prof, ids, f, i+1, err, skip)
						}
						if err := tr.Validate(res.Body); err != nil {
							t.Fatalf("%s:%d: output does not validate: %v", f, i+1, err)
						}
					}
				}
			}
		}
	}
}

func TestAcceptsOfficialExamples(t *testing.T) {
	tr := mustNew(t, Options{Profile: ProfileBase})
	for name, line := range examples(t) {
		t.Run(name, func(t *testing.T) {
			if err := tr.Validate(line); err != nil {
				t.Fatal(err)
			}
			res, _, err := tr.NewStream(name).Next(line)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(res.Body, line) {
				t.Errorf("body changed although it has no urn:uuid reference")
			}
		})
	}
}

func TestSeedProfile(t *testing.T) {
	base := mustNew(t, Options{Profile: ProfileBase})
	seed := mustNew(t, Options{}) // seed is the default
	tests := []struct {
		name, body, loc string
	}{
		{"no name", `{"resourceType":"Patient","id":"a"}`, "Patient.name"},
		{"no family", `{"resourceType":"Patient","id":"a","name":[{"given":["x"]}]}`, "Patient.name[0].family"},
		{"no given", `{"resourceType":"Patient","id":"a","name":[{"family":"x"}]}`, "Patient.name[0].given"},
		{"second name incomplete", `{"resourceType":"Patient","id":"a","name":[{"family":"x","given":["y"]},{"text":"z"}]}`, "Patient.name[1].family"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := base.Validate([]byte(tt.body)); err != nil {
				t.Fatalf("base rejects: %v", err)
			}
			e := asError(t, seed.Validate([]byte(tt.body)))
			if e.Reason != ReasonInvalid || e.Location != tt.loc {
				t.Fatalf("seed: got %s %q, want invalid %q", e.Reason, e.Location, tt.loc)
			}
		})
	}
	ok := `{"resourceType":"Patient","id":"a","name":[{"family":"x","given":["y"]}],"contact":[{"name":{"text":"only text"}}]}`
	if err := seed.Validate([]byte(ok)); err != nil {
		t.Fatalf("seed must not constrain contact names: %v", err)
	}
}
