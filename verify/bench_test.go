package verify

import "testing"

// BenchmarkCompare compares sample Observations with their stored form
// (meta first, as fhirload serve returns them).
func BenchmarkCompare(b *testing.B) {
	var want, got [][]byte
	var bytes int64
	eachLine(b, "../testdata/sample/Observation.ndjson.gz", 1000, func(line []byte) {
		w := append([]byte(nil), line...)
		want = append(want, w)
		got = append(got, serveShape(b, w))
		bytes += int64(len(w))
	})
	var c Comparer
	b.SetBytes(bytes / int64(len(want)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		k := i % len(want)
		if d := c.Compare("Observation", want[k], got[k]); !d.Equal() {
			b.Fatal(d.Paths)
		}
	}
}
