package oracle

import (
	"testing"

	"github.com/fhirload/fhirload/transform"
)

func benchLines(b *testing.B) [][]byte {
	lines := readLines(b, "../../testdata/sample/Observation.ndjson.gz")
	return lines[:2000]
}

// BenchmarkObservationFhirload validates sample Observations with transform (same as
// transform's BenchmarkValidateObservation, in this run for a side-by-side number).
func BenchmarkObservationFhirload(b *testing.B) {
	lines := benchLines(b)
	tr, err := transform.New(transform.Options{Profile: "base"})
	if err != nil {
		b.Fatal(err)
	}
	st := tr.NewStream("bench")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, _, err := st.Next(lines[i%len(lines)]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "obs/s")
}

// BenchmarkObservationGoogleFHIR validates the same lines with google/fhir/go.
func BenchmarkObservationGoogleFHIR(b *testing.B) {
	lines := benchLines(b)
	o := newOracle(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if ok, err := o.accepts(lines[i%len(lines)]); !ok {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "obs/s")
}

func eobLines(b *testing.B) [][]byte {
	lines := readLines(b, "../../testdata/shared/fhir-all/ExplanationOfBenefit.ndjson.gz")
	return lines[:1000]
}

// BenchmarkExplanationOfBenefitFhirload validates Synthea EOBs (5 KB each) with transform.
func BenchmarkExplanationOfBenefitFhirload(b *testing.B) {
	lines := eobLines(b)
	tr, err := transform.New(transform.Options{Profile: "base"})
	if err != nil {
		b.Fatal(err)
	}
	st := tr.NewStream("bench")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, _, err := st.Next(lines[i%len(lines)]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lines/s")
}

// BenchmarkExplanationOfBenefitGoogleFHIR validates the same lines with google/fhir/go.
func BenchmarkExplanationOfBenefitGoogleFHIR(b *testing.B) {
	lines := eobLines(b)
	o := newOracle(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if ok, err := o.accepts(lines[i%len(lines)]); !ok {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lines/s")
}
