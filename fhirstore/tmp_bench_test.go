package fhirstore

import (
	"context"
	"slices"
	"testing"
	"time"
)

func BenchmarkTmpStore(b *testing.B) {
	st, err := openStore(context.Background(), b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer st.close()
	obs := benchObservations(b, 20000)
	var parsedAll []*parsed
	for _, o := range obs {
		p, e := parseResource(o)
		if e != nil {
			b.Fatal(e)
		}
		parsedAll = append(parsedAll, p)
	}
	b.ResetTimer()
	var lock time.Duration
	t0 := time.Now()
	n := 0
	for i := 0; i < b.N; i++ {
		for chunk := range slices.Chunk(parsedAll, 100) {
			s := time.Now()
			err := st.write(context.Background(), func(t *wtx) error {
				for _, p := range chunk {
					if _, _, err := t.put(p, p.id, putOptions{dupCheck: true}, time.Now(), nil); err != nil {
						return err
					}
				}
				return nil
			})
			lock += time.Since(s)
			if err != nil {
				b.Fatal(err)
			}
			n += len(chunk)
		}
	}
	b.ReportMetric(float64(n)/time.Since(t0).Seconds(), "res/s")
	b.ReportMetric(float64(n)/lock.Seconds(), "locked-res/s")
}

func BenchmarkTmpParse(b *testing.B) {
	obs := benchObservations(b, 2000)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, e := parseResource(obs[i%len(obs)]); e != nil {
			b.Fatal(e)
		}
	}
}
