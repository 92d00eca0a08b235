package deadletter

import (
	"context"
	"fmt"
	"testing"

	"github.com/fhirload/fhirload/internal/testutil"
)

// benchLine is a typical Synthea Observation line (about 1.5 KB).
var benchLine = fmt.Sprintf(`{"resourceType":"Observation","id":"%s","status":"final","category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs"}]}],"code":{"coding":[{"system":"http://loinc.org","code":"8302-2","display":"Body Height"}]},"subject":{"reference":"urn:uuid:%s"},"encounter":{"reference":"urn:uuid:%s"},"effectiveDateTime":"2019-02-17T06:37:17-05:00","issued":"2019-02-17T06:37:17.621-05:00","valueQuantity":{"value":187.5,"unit":"cm","system":"http://unitsofmeasure.org","code":"cm"},"note":[{"text":"%0900d"}]}`,
	"0a1b2c3d-0000-4000-8000-000000000001", "0a1b2c3d-0000-4000-8000-000000000002", "0a1b2c3d-0000-4000-8000-000000000003", 0)

func benchAppend(b *testing.B, url string, opts Options) {
	ctx := context.Background()
	s, err := Open(ctx, url, opts)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	e := entry("retries-exhausted", "s3://bucket/in/Observation.ndjson.gz", 1, "run", t0)
	e.Line = benchLine
	b.SetBytes(int64(len(benchLine)))
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		e.ID, e.Source.Line = "", int64(i+1)
		if err := s.Append(ctx, e); err != nil {
			b.Fatal(err)
		}
		if i%100 == 99 {
			if err := s.Sync(ctx); err != nil {
				b.Fatal(err)
			}
		}
	}
	if err := s.Sync(ctx); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "entries/s")
}

// BenchmarkAppend measures local appends with a Sync (write + fsync) every
// 100 entries, the pipeline's pattern for an object with many bad lines.
func BenchmarkAppend(b *testing.B) {
	benchAppend(b, b.TempDir(), Options{})
}

// BenchmarkAppendS3 is BenchmarkAppend against moto (one PutObject per
// Sync); it measures the emulator as much as the store.
func BenchmarkAppendS3(b *testing.B) {
	c := testutil.S3(testutil.Moto(b))
	benchAppend(b, "s3://"+testutil.Bucket(b, c)+"/dl", Options{S3: c})
}

// BenchmarkList measures folding a local store of 16,415 entries (the whole
// Synthea set dead-lettered) with 10% of them retired.
func BenchmarkList(b *testing.B) {
	ctx := context.Background()
	dir := b.TempDir()
	s, err := Open(ctx, dir, Options{})
	if err != nil {
		b.Fatal(err)
	}
	const n = 16415
	var retire []string
	for i := range n {
		e := entry("retries-exhausted", "Observation.ndjson", int64(i+1), "run", t0)
		e.Line, e.ID = benchLine, fmt.Sprintf("id-%06d", i)
		if err := s.Append(ctx, e); err != nil {
			b.Fatal(err)
		}
		if i%10 == 0 {
			retire = append(retire, e.ID)
		}
	}
	if err := s.Retire(ctx, retire...); err != nil {
		b.Fatal(err)
	}
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	r, err := Open(ctx, dir, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	b.ResetTimer()
	for b.Loop() {
		es, err := r.List(ctx, Filter{Reason: "retries-exhausted"})
		if err != nil {
			b.Fatal(err)
		}
		if len(es) != n-len(retire) {
			b.Fatalf("%d live, want %d", len(es), n-len(retire))
		}
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "entries/s")
}

// BenchmarkGet measures one Get in a local store of 16,415 entries.
func BenchmarkGet(b *testing.B) {
	ctx := context.Background()
	s, err := Open(ctx, b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	for i := range 16415 {
		e := entry("retries-exhausted", "Observation.ndjson", int64(i+1), "run", t0)
		e.Line = benchLine
		if err := s.Append(ctx, e); err != nil {
			b.Fatal(err)
		}
	}
	es, err := s.List(ctx, Filter{})
	if err != nil {
		b.Fatal(err)
	}
	id := es[len(es)/2].ID
	for b.Loop() {
		if _, err := s.Get(ctx, id); err != nil {
			b.Fatal(err)
		}
	}
}
