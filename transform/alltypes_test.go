package transform

import (
	"compress/gzip"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/fhirload/fhirload/internal/testlines"
)

// fhirAll returns the lines of testdata/shared/fhir-all (17 types, 38,970 lines), read
// once per test binary.
var fhirAll = sync.OnceValues(func() (map[string][][]byte, error) {
	files, err := filepath.Glob("../testdata/shared/fhir-all/*.ndjson.gz")
	if err != nil || len(files) == 0 {
		return nil, errors.New("no testdata/shared/fhir-all files")
	}
	out := map[string][][]byte{}
	for _, f := range files {
		if out[filepath.Base(f)], err = testlines.Read(f); err != nil {
			return nil, err
		}
	}
	return out, nil
})

func allLines(t testing.TB) map[string][][]byte {
	t.Helper()
	m, err := fhirAll()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// bundleFiles returns the three Synthea transaction Bundles (pretty-printed, gzip).
func bundleFiles(t testing.TB) []string {
	t.Helper()
	files, err := filepath.Glob("../testdata/shared/synthea-bundles/*.json.gz")
	if err != nil || len(files) != 3 {
		t.Fatalf("want 3 Synthea bundles, got %d (%v)", len(files), err)
	}
	return files
}

func openGzip(t testing.TB, name string) io.Reader {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	return zr
}

// TestAcceptsEveryType: every line of the Synthea population (17 types) and every entry
// of the three Synthea Bundles is valid under the seed profile, and the output of every
// fifth line validates again. The base profile differs from seed only on Patient: it
// gets the Patients, the Bundles and every seventh other line in short mode, every line
// otherwise. Under -race (tenfold slower, and nothing concurrent here) the non-Patient
// lines are sampled: every eighth.
func TestAcceptsEveryType(t *testing.T) {
	lines := allLines(t)
	total := 0
	for _, prof := range []string{ProfileSeed, ProfileBase} {
		tr := mustNew(t, Options{Profile: prof})
		for name, ls := range lines {
			st := tr.NewStream(name)
			for i, l := range ls {
				if prof == ProfileBase && name != "Patient.ndjson.gz" && i%7 != 0 && testing.Short() {
					continue
				}
				if raceEnabled && name != "Patient.ndjson.gz" && i%8 != 0 {
					continue
				}
				res, _, err := st.Next(l)
				if err != nil {
					t.Fatalf("%s %s:%d: %v", prof, name, i+1, err)
				}
				if prof == ProfileSeed {
					total++
					if i%5 == 0 {
						if err := tr.Validate(res.Body); err != nil {
							t.Fatalf("%s:%d: output invalid: %v", name, i+1, err)
						}
					}
				}
			}
		}
		for _, f := range bundleFiles(t) {
			st := tr.NewStream(f)
			d := NewBundleDecoder(openGzip(t, f), BundleOptions{})
			n := 0
			for {
				e, err := d.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatalf("%s: %v", f, err)
				}
				if _, err := st.NextEntry(e); err != nil {
					t.Fatalf("%s %s entry %d: %v", prof, filepath.Base(f), e.Index, err)
				}
				n++
			}
			if n < 100 {
				t.Fatalf("%s: only %d entries", f, n)
			}
		}
	}
	if total != 38970 && !raceEnabled {
		t.Fatalf("%d lines, want 38,970", total)
	}
}
