package transform

import (
	"strings"
	"testing"
)

// FuzzTransform: parse + validate never panics, errors are *Error with a known reason,
// accepted output validates again.
func FuzzTransform(f *testing.F) {
	for _, c := range loadCorpus(f) {
		f.Add(c.body)
	}
	for _, l := range readLines(f, "../testdata/sample/Patient.ndjson.gz")[:3] {
		f.Add(l)
	}
	for _, l := range readLines(f, "../testdata/sample/Observation.ndjson.gz")[:10] {
		f.Add(l)
	}
	keep := mustNew(f, Options{Profile: ProfileBase})
	derive := mustNew(f, Options{IDs: IDsDerive})
	f.Fuzz(func(t *testing.T, line []byte) {
		for _, tr := range []*Transformer{keep, derive} {
			res, skip, err := tr.NewStream("fuzz").Next(line)
			if skip {
				t.Fatal("fhir lines are never skipped")
			}
			if err != nil {
				e := asError(t, err)
				if e.Reason != ReasonParse && e.Reason != ReasonInvalid {
					t.Fatalf("reason %q", e.Reason)
				}
				continue
			}
			if err := tr.Validate(res.Body); err != nil {
				t.Fatalf("accepted line's output is invalid: %v", err)
			}
		}
	})
}

// FuzzMapCSV: mapping CSV rows never panics; a mapped resource validates.
func FuzzMapCSV(f *testing.F) {
	obs := readLines(f, "../testdata/shared/flat/observations.csv")
	pats := readLines(f, "../testdata/shared/flat/patients.csv")
	for _, l := range obs[1:20] {
		f.Add("observations.csv", l)
	}
	for _, l := range pats[1:5] {
		f.Add("patients.csv", l)
	}
	f.Add("observations.csv", []byte(`"a,b",c,"d""e"`))
	tr := mustNew(f, Options{Format: FormatCSV, IDs: IDsDerive, Mapping: syntheaMapping})
	f.Fuzz(func(t *testing.T, file string, row []byte) {
		header := obs[0]
		if strings.Contains(file, "patients") {
			header = pats[0]
		}
		res, err := tr.Replay(file, header, row)
		if err != nil {
			asError(t, err)
			return
		}
		if err := tr.Validate(res.Body); err != nil {
			t.Fatalf("mapped resource invalid: %v", err)
		}
	})
}
