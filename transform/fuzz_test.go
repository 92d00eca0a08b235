package transform

import (
	"bytes"
	"encoding/json"
	"io"
	"strings"
	"testing"

	"github.com/fhirload/fhirload/internal/testlines"
)

// FuzzTransform: parse + validate never panics, errors are *Error with a known reason,
// accepted output validates again.
func FuzzTransform(f *testing.F) {
	for _, c := range loadCorpus(f) {
		f.Add(c.body)
	}
	for _, l := range testlines.All(f, "../testdata/sample/Patient.ndjson.gz")[:3] {
		f.Add(l)
	}
	for _, l := range testlines.All(f, "../testdata/sample/Observation.ndjson.gz")[:10] {
		f.Add(l)
	}
	// Lines that reach the invariants, the narrative, extension and profile checks.
	for _, l := range []string{
		declare(syntheaBP, profBP), declare(syntheaWeight, profWeight, "http://example.org/p"),
		narrativeLine(xdiv + `<p onclick="x">a<b>b</b></p><img src="#i"/></div>`),
		`{"resourceType":"Patient","extension":[{"url":"` + extGeo + `","extension":[{"url":"latitude","valueDecimal":1}]}],"_birthDate":{"extension":[{"url":"` + extBirthTime + `","valueDateTime":"2020"}]}}`,
		obsHead + `,"contained":[{"resourceType":"Specimen","id":"s1"}],"specimen":{"reference":"#s1"},"effectivePeriod":{"start":"2020","end":"2019"}}`,
	} {
		f.Add([]byte(l))
	}
	keep := mustNew(f, Options{Profile: ProfileBase})
	derive := mustNew(f, Options{IDs: IDsDerive, Extensions: ExtensionsStrict})
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
	obs := testlines.All(f, "../testdata/shared/flat/observations.csv")
	pats := testlines.All(f, "../testdata/shared/flat/patients.csv")
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

// FuzzBundleDecoder: decoding any document never panics or loops; every entry resource
// it yields is syntactically valid JSON, and the decoder stops after an error.
func FuzzBundleDecoder(f *testing.F) {
	f.Add([]byte(`{"resourceType":"Bundle","type":"batch","entry":[{"fullUrl":"urn:uuid:x","resource":{"resourceType":"Patient","id":"p"}},{"request":{"method":"DELETE"}}]}`))
	f.Add([]byte("{\n \"resourceType\": \"Bundle\",\n \"entry\": [ {\"resource\": {\"a\": [1, -2.5e3, true, null, \"\\u00e9\"]}} ]\n}"))
	f.Add([]byte(`{"resourceType":"Bundle","entry":[{"resource":[]}, 3, {"resource":{}}]}`))
	f.Fuzz(func(t *testing.T, doc []byte) {
		d := NewBundleDecoder(bytes.NewReader(doc), BundleOptions{MaxEntryBytes: 256})
		for i := 0; i < len(doc)+2; i++ {
			e, err := d.Next()
			if err != nil {
				if err != io.EOF {
					asError(t, err)
				}
				if _, again := d.Next(); again != err {
					t.Fatalf("error not sticky: %v then %v", err, again)
				}
				return
			}
			if e.Err == nil && !json.Valid(e.Resource) {
				t.Fatalf("entry %d: resource is not valid JSON: %q", e.Index, e.Resource)
			}
		}
		t.Fatal("more entries than bytes")
	})
}

// FuzzScanID: the pre-pass scan never panics and agrees with the validator on the
// resourceType and id of every line the validator accepts.
func FuzzScanID(f *testing.F) {
	f.Add([]byte(`{"resourceType":"Patient","id":"p1"}`))
	f.Add([]byte(`{"meta":{"id":"x"},"id":"p","resourceType":"Observation","status":"final","code":{"text":"c"}}`))
	tr := mustNew(f, Options{Profile: ProfileBase})
	f.Fuzz(func(t *testing.T, line []byte) {
		typ, id, ok := ScanID(line)
		res, _, err := tr.NewStream("fuzz").Next(line)
		if err != nil || res.IDDerived {
			return
		}
		if !ok || string(typ) != res.Type || string(id) != res.ID {
			t.Fatalf("ScanID %q %q %v, validator %s/%s", typ, id, ok, res.Type, res.ID)
		}
	})
}
