package importjob

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/fhirload/fhirload/internal/testutil"
	"github.com/fhirload/fhirload/pipeline"
)

// benchItems are n sample Observations (~1 KB each), reused cyclically
// under new lines.
func benchItems(b *testing.B, n int) []pipeline.Item {
	b.Helper()
	base := observations(b, 2000)
	items := make([]pipeline.Item, n)
	for i := range items {
		items[i] = base[i%len(base)]
		items[i].Line, items[i].Token = int64(i+1), uint64(i+1)
	}
	return items
}

// BenchmarkSinkStage: Write throughput, staging to S3 (moto) in objects of
// 8 MiB, 4 uploads at a time, from 2 writers; 20,000 resources per op.
// Reports resources/s and MB/s.
func BenchmarkSinkStage(b *testing.B) {
	b.Setenv("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")
	b.Setenv("AWS_RESPONSE_CHECKSUM_VALIDATION", "when_required")
	c := testutil.S3(testutil.Moto(b))
	bucket := testutil.Bucket(b, c)
	items := benchItems(b, 20000)
	var bytesPerOp int64
	for _, it := range items {
		bytesPerOp += int64(len(it.Body)) + 1
	}
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		s, err := Open(context.Background(), Options{HealthLake: nopHealthLake{}, S3: c, DatastoreID: "local", Target: "bench",
			StagingURL: "s3://" + bucket + "/stage", OutputURL: "s3://" + bucket + "/out", RoleARN: "arn:aws:iam::123456789012:role/R",
			KMSKeyID: "k", StateDir: filepath.Join(b.TempDir(), "state"), ObjectBytes: 8 << 20, RunID: fmt.Sprint("run-", i)})
		if err != nil {
			b.Fatal(err)
		}
		done := make(chan error, 2)
		for w := range 2 {
			go func() {
				for j := w * 100; j < len(items); j += 200 {
					if _, err := s.Write(context.Background(), items[j:min(j+100, len(items))]); err != nil {
						done <- err
						return
					}
				}
				done <- nil
			}()
		}
		for range 2 {
			if err := <-done; err != nil {
				b.Fatal(err)
			}
		}
		if err := s.stage.finish(context.Background()); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		_ = s.Close() // deletes the staging
		b.StartTimer()
	}
	secs := time.Since(start).Seconds()
	b.ReportMetric(float64(b.N*len(items))/secs, "resources/s")
	b.ReportMetric(float64(int64(b.N)*bytesPerOp)/secs/1e6, "MB/s")
}

// BenchmarkSettle: reading a finished job's output (one SUCCESS object of
// 20,000 records on moto, as fhirload serve writes them) and settling
// every item from it. Reports resources/s.
func BenchmarkSettle(b *testing.B) {
	b.Setenv("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")
	b.Setenv("AWS_RESPONSE_CHECKSUM_VALIDATION", "when_required")
	c := testutil.S3(testutil.Moto(b))
	bucket := testutil.Bucket(b, c)
	const n = 20000
	state := filepath.Join(b.TempDir(), "state")
	s, err := Open(context.Background(), Options{HealthLake: nopHealthLake{}, S3: c, DatastoreID: "local", Target: "bench",
		StagingURL: "s3://" + bucket + "/stage", OutputURL: "s3://" + bucket + "/out/", RoleARN: "arn:aws:iam::123456789012:role/R",
		KMSKeyID: "k", StateDir: state, ObjectBytes: 1 << 30, RunID: "run-1"})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	items := benchItems(b, n)
	if _, err := s.Write(context.Background(), items); err != nil {
		b.Fatal(err)
	}
	if err := s.stage.finish(context.Background()); err != nil {
		b.Fatal(err)
	}
	batch, err := s.adopt(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	job := &jobAttempt{JobID: "job1", Status: "COMPLETED", Imported: n}
	in := batch.Prefix + batch.Parts[0].Name
	var out bytes.Buffer
	for i, it := range items {
		fmt.Fprintf(&out, `{"inputFile":%q,"lineNumber":%d,"resourceType":"Observation","id":%q,"versionId":"1","status":"201 Created"}`+"\n", in, i+1, it.ID)
	}
	folder := "out/local-FHIR_IMPORT-job1/"
	for key, body := range map[string][]byte{folder + "manifest.json": []byte("{}"), folder + "SUCCESS/part-000001.ndjson": out.Bytes()} {
		if _, err := c.PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(key), Body: bytes.NewReader(body)}); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		o, err := s.readOutcomes(context.Background(), batch, job, os.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		loaded := 0
		if _, err := s.settleAll(o, func(_ uint64, out pipeline.Outcome) {
			if out.Status == pipeline.Loaded {
				loaded++
			}
		}); err != nil {
			b.Fatal(err)
		}
		o.close()
		if loaded != n {
			b.Fatalf("%d loaded, want %d", loaded, n)
		}
	}
	b.ReportMetric(float64(b.N*n)/time.Since(start).Seconds(), "resources/s")
}

// nopHealthLake is a control plane the staging benchmarks never call.
type nopHealthLake struct{ HealthLake }
