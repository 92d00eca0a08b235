package deadletter

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/fhirload/fhirload/internal/testutil"
)

// benchLine is a typical Synthea Observation line (about 1.5 KB).
var benchLine = fmt.Sprintf(`{"resourceType":"Observation","id":"%s","status":"final","category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs"}]}],"code":{"coding":[{"system":"http://loinc.org","code":"8302-2","display":"Body Height"}]},"subject":{"reference":"urn:uuid:%s"},"encounter":{"reference":"urn:uuid:%s"},"effectiveDateTime":"2019-02-17T06:37:17-05:00","issued":"2019-02-17T06:37:17.621-05:00","valueQuantity":{"value":187.5,"unit":"cm","system":"http://unitsofmeasure.org","code":"cm"},"note":[{"text":"%0900d"}]}`,
	"0a1b2c3d-0000-4000-8000-000000000001", "0a1b2c3d-0000-4000-8000-000000000002", "0a1b2c3d-0000-4000-8000-000000000003", 0)

// benchPut measures Put of perPut entries at a time by writers concurrent
// callers sharing one store: the runner's batch workers dead-lettering at
// once. Every Put is durable on return (local: written and fsynced).
func benchPut(b *testing.B, url string, opts Options, writers, perPut int) {
	ctx := context.Background()
	s, err := Open(ctx, url, opts)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	// Count the group commits (one write + fsync, or one PutObject, each).
	st := s.(*store)
	var commits atomic.Int64
	write := st.c.write
	st.c.write = func(g []*batch) error {
		commits.Add(1)
		return write(g)
	}
	b.SetBytes(int64(len(benchLine) * perPut))
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	for range writers {
		wg.Go(func() {
			batch := make([]Entry, perPut)
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					return
				}
				for j := range batch {
					e := entry("retries-exhausted", "s3://bucket/in/Observation.ndjson.gz", i*int64(perPut)+int64(j), "run", t0)
					e.Line = benchLine
					batch[j] = e
				}
				if err := s.Put(ctx, batch...); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.ReportMetric(float64(b.N*perPut)/b.Elapsed().Seconds(), "entries/s")
	b.ReportMetric(float64(b.N*perPut)/float64(commits.Load()), "entries/commit")
}

// BenchmarkPut measures local Puts (write + fsync, shared by the writers
// waiting at that moment) of 1 and of 100 entries, by 1 and 16 writers.
func BenchmarkPut(b *testing.B) {
	for _, perPut := range []int{1, 100} {
		for _, writers := range []int{1, 16} {
			b.Run(fmt.Sprintf("entries=%d/writers=%d", perPut, writers), func(b *testing.B) {
				benchPut(b, b.TempDir(), Options{}, writers, perPut)
			})
		}
	}
}

// BenchmarkPutS3 is BenchmarkPut against moto: one PutObject per group
// commit. It measures the emulator as much as the store.
func BenchmarkPutS3(b *testing.B) {
	c := testutil.S3(testutil.Moto(b))
	bucket := testutil.Bucket(b, c)
	for _, perPut := range []int{1, 100} {
		for _, writers := range []int{1, 16} {
			b.Run(fmt.Sprintf("entries=%d/writers=%d", perPut, writers), func(b *testing.B) {
				benchPut(b, fmt.Sprintf("s3://%s/dl-%d-%d", bucket, perPut, writers), Options{S3: c}, writers, perPut)
			})
		}
	}
}

// putAll stores entries 500 at a time (benchmark setup).
func putAll(b *testing.B, s Store, es []Entry) {
	for start := 0; start < len(es); start += 500 {
		if err := s.Put(context.Background(), es[start:min(start+500, len(es))]...); err != nil {
			b.Fatal(err)
		}
	}
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
	es := make([]Entry, n)
	for i := range n {
		e := entry("retries-exhausted", "Observation.ndjson", int64(i+1), "run", t0)
		e.Line, e.ID = benchLine, fmt.Sprintf("id-%06d", i)
		es[i] = e
		if i%10 == 0 {
			retire = append(retire, e.ID)
		}
	}
	putAll(b, s, es)
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
	es := make([]Entry, 16415)
	for i := range es {
		es[i] = entry("retries-exhausted", "Observation.ndjson", int64(i+1), "run", t0)
		es[i].Line = benchLine
	}
	putAll(b, s, es)
	es, err = s.List(ctx, Filter{})
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
