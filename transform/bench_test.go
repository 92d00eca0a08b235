package transform

import (
	"testing"
)

func benchLines(b *testing.B, opts Options, file string) {
	lines := readLines(b, file)
	if len(lines) > 2000 {
		lines = lines[:2000]
	}
	tr := mustNew(b, opts)
	st := tr.NewStream(file)
	var bytes int64
	for _, l := range lines {
		bytes += int64(len(l))
	}
	b.SetBytes(bytes / int64(len(lines)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, _, err := st.Next(lines[i%len(lines)]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lines/s")
}

// BenchmarkValidateObservation measures Next (parse, validate, rewrite references,
// copy out) over the sample Observations, one core.
func BenchmarkValidateObservation(b *testing.B) {
	benchLines(b, Options{}, "../testdata/sample/Observation.ndjson.gz")
}

// BenchmarkValidateObservationDerive is the same with ids: derive (two UUIDv5 per line).
func BenchmarkValidateObservationDerive(b *testing.B) {
	benchLines(b, Options{IDs: IDsDerive}, "../testdata/sample/Observation.ndjson.gz")
}

// BenchmarkValidatePatient measures Next over the sample Patients.
func BenchmarkValidatePatient(b *testing.B) {
	benchLines(b, Options{}, "../testdata/sample/Patient.ndjson.gz")
}

// BenchmarkMapCSV measures mapping + validating Synthea CSV observation rows.
func BenchmarkMapCSV(b *testing.B) {
	lines := readLines(b, "../testdata/shared/flat/observations.csv")
	tr := mustNew(b, Options{Format: FormatCSV, IDs: IDsDerive, Mapping: "../mappings/synthea-csv.yaml"})
	st := tr.NewStream("observations.csv")
	if _, skip, _ := st.Next(lines[0]); !skip {
		b.Fatal("header not skipped")
	}
	rows := lines[1:]
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		st.Next(rows[i%len(rows)])
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}
