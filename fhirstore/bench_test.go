package fhirstore

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/healthlake"
	hltypes "github.com/aws/aws-sdk-go-v2/service/healthlake/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/fhirload/fhirload/internal/benchkit"
	"github.com/fhirload/fhirload/internal/testlines"
	"github.com/fhirload/fhirload/internal/testutil"
)

// benchObservations returns n Observations made from the sample by giving
// copies new ids, spread over the sample's patients.
func benchObservations(b *testing.B, n int) [][]byte {
	b.Helper()
	src := readNDJSON(b, "Observation.ndjson.gz")
	out := make([][]byte, 0, n)
	for i := 0; len(out) < n; i++ {
		o := src[i%len(src)]
		o = bytes.Replace(o, []byte(`"subject":{"reference":"urn:uuid:`), []byte(`"subject":{"reference":"Patient/`), 1)
		// Ids in the sample are UUIDs: swap the first 8 hex digits for a counter.
		id := bytes.Index(o, []byte(`"id":"`)) + 6
		o = bytes.Clone(o)
		copy(o[id:id+8], fmt.Appendf(nil, "%08x", i))
		out = append(out, o)
	}
	return out
}

// BenchmarkBatchPut measures writes through batch Bundles of 100 PUT entries
// into the file-backed store, over loopback HTTP with SigV4, from 4 clients:
// every entry creates a resource, as a first load does. It reports
// resources/s.
func BenchmarkBatchPut(b *testing.B) { benchBatchPut(b, b.N*100) }

// BenchmarkBatchPutAgain is BenchmarkBatchPut where every entry updates a
// resource with the same content (a rerun of the same input).
func BenchmarkBatchPutAgain(b *testing.B) { benchBatchPut(b, 10000) }

// BenchmarkBatchPutIndexed is BenchmarkBatchPut into a store where the
// search parameters the first release indexed for Observations are active
// (searched once before the load): identifier, code, category, patient
// (subject) and date, as HealthLake's document searches them. This is the
// write cost to compare with the first release's BenchmarkBatchPut.
func BenchmarkBatchPutIndexed(b *testing.B) {
	benchBatchPut(b, b.N*100, "Observation?identifier=x&code=x&category=x&patient=x&date=2020")
}

func benchBatchPut(b *testing.B, n int, searches ...string) {
	e := newEnv(b, Options{})
	for _, q := range searches {
		if r := e.do("GET", q, nil); r.status != http.StatusOK {
			b.Fatalf("%s: %d %s", q, r.status, r.body)
		}
	}
	obs := benchObservations(b, n)
	var bundles [][]byte
	for chunk := range slices.Chunk(obs, 100) {
		bundles = append(bundles, batchOfPuts(b, "Observation", chunk))
	}
	if n < b.N*100 {
		for _, body := range bundles {
			if err := postBatch(e, body); err != nil {
				b.Fatal(err)
			}
		}
	}
	const clients = 4
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime()
	var wg sync.WaitGroup
	work := make(chan []byte)
	for range clients {
		wg.Go(func() {
			for body := range work {
				if err := postBatch(e, body); err != nil {
					b.Error(err)
				}
			}
		})
	}
	for i := 0; i < b.N; i++ {
		work <- bundles[i%len(bundles)]
	}
	close(work)
	wg.Wait()
	b.ReportMetric(float64(b.N*100)/time.Since(start).Seconds(), "resources/s")
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N*100), "cpu-µs/resource")
}

// BenchmarkMixedLoad is BenchmarkBatchPut for a population of many
// resource types (internal/benchkit GenerateMixed: every R4 type the
// generator writes per patient by default, and the shared ones), every
// search parameter of every type indexed at write time, none activated:
// the load rate of a first `fhirload run` into the embedded store, on the
// server side. It reports resources/s and CPU µs per resource (client
// included).
func BenchmarkMixedLoad(b *testing.B) {
	per := len(mixedPopulation(b, benchkit.MixedOptions{Patients: 1, Seed: 7}))
	lines := mixedPopulation(b, benchkit.MixedOptions{Patients: max(1, b.N*100/per+1), Seed: 7})
	lines = lines[:min(len(lines), b.N*100)]
	var bundles [][]byte
	for chunk := range slices.Chunk(lines, 100) {
		var body bytes.Buffer
		body.WriteString(`{"resourceType":"Bundle","type":"batch","entry":[`)
		for i, r := range chunk {
			var h struct{ ResourceType, ID string }
			if err := json.Unmarshal(r, &h); err != nil {
				b.Fatal(err)
			}
			if i > 0 {
				body.WriteByte(',')
			}
			fmt.Fprintf(&body, `{"resource":%s,"request":{"method":"PUT","url":"%s/%s"}}`, r, h.ResourceType, h.ID)
		}
		body.WriteString("]}")
		bundles = append(bundles, body.Bytes())
	}
	e := newEnv(b, Options{})
	const clients = 4
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime()
	var wg sync.WaitGroup
	work := make(chan []byte)
	for range clients {
		wg.Go(func() {
			for body := range work {
				if err := postBatch(e, body); err != nil {
					b.Error(err)
				}
			}
		})
	}
	for _, body := range bundles {
		work <- body
	}
	close(work)
	wg.Wait()
	b.ReportMetric(float64(len(lines))/time.Since(start).Seconds(), "resources/s")
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(len(lines)), "cpu-µs/resource")
}

// cpuTime is the CPU time (user and system) the process has used: on a
// shared machine a steadier measure of cost than the wall clock.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func postBatch(e *testEnv, body []byte) error {
	req, _ := http.NewRequest("POST", e.base, bytes.NewReader(body))
	req.Header.Set("Content-Type", contentTypeFHIR)
	signRequest(req, body, testKeyID, testSecret, testRegion, "", time.Now())
	res, err := e.ts.Client().Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(res.Body)
	if res.StatusCode != 200 || bytes.Contains(buf.Bytes(), []byte(`"status":"4`)) {
		return fmt.Errorf("batch: %d %.300s", res.StatusCode, buf.Bytes())
	}
	return nil
}

// BenchmarkSearchPatientCode measures a patient+code search over 100,000
// Observations (the sample, copied) and reports p50 and p99 latency.
func BenchmarkSearchPatientCode(b *testing.B) {
	e := newEnv(b, Options{})
	obs := benchObservations(b, 100000)
	for chunk := range slices.Chunk(obs, 100) {
		if err := postBatch(e, batchOfPuts(b, "Observation", chunk)); err != nil {
			b.Fatal(err)
		}
	}
	sample := parseSampleObs(b, readNDJSON(b, "Observation.ndjson.gz"))
	var queries []string
	for _, o := range sample[:200] {
		queries = append(queries, "Observation?patient="+o.Patient[len("urn:uuid:"):]+"&code="+url.QueryEscape(o.Codes[0]))
	}
	// The first search by a parameter builds its index rows (once per store
	// and parameter, ~10 s here): not what this measures.
	timedSearch(b, e, queries[0], `"entry"`)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		lat = append(lat, timedSearch(b, e, queries[i%len(queries)], `"entry"`))
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}

// BenchmarkSearchIncludeSort measures a patient-scoped first page of
// Observations sorted newest first with their Patient included
// (Observation?patient=X&_sort=-date,code&_include=Observation:subject&_count=20)
// over 100,000 Observations (the sample's 16,315, copied) and reports p50,
// p90 and p99 latency over loopback HTTP with SigV4, and the process's CPU
// per search (client included). The sort reads every match's sort keys,
// so a search costs in proportion to the patient's Observations:
//
//   - synthea-density: each copy of the sample gets Patients of its own
//     (700 Patients, the 600 of the full copies searched): 163
//     Observations per Patient on average, 1,379 for the heaviest, as in
//     the sample;
//   - 100-patients: the copies share the sample's 100 Patients: 1,000 on
//     average, about 8,450 for the heaviest.
func BenchmarkSearchIncludeSort(b *testing.B) {
	for _, shared := range []bool{false, true} {
		name := "synthea-density"
		if shared {
			name = "100-patients"
		}
		b.Run(name, func(b *testing.B) { benchSearchIncludeSort(b, shared) })
	}
}

func benchSearchIncludeSort(b *testing.B, sharedPatients bool) {
	// The copies of a Patient share its identifiers.
	e := newEnv(b, Options{UniqueIdentifiers: []string{}})
	src := readNDJSON(b, "Observation.ndjson.gz")
	obs := benchObservations(b, 100000)
	copies := (len(obs) + len(src) - 1) / len(src)
	if sharedPatients {
		copies = 1
	} else {
		// Copy k of the sample refers to Patients whose ids start with k
		// in hex.
		ref := []byte(`"subject":{"reference":"Patient/`)
		for i, o := range obs {
			at := bytes.Index(o, ref) + len(ref)
			copy(o[at:at+2], fmt.Appendf(nil, "%02x", i/len(src)))
		}
	}
	var patients [][]byte
	var queries []string
	for k := range copies {
		for _, p := range readNDJSON(b, "Patient.ndjson.gz") {
			at := bytes.Index(p, []byte(`"id":"`)) + 6
			if !sharedPatients {
				copy(p[at:at+2], fmt.Appendf(nil, "%02x", k))
			}
			patients = append(patients, p)
			if (k+1)*len(src) > len(obs) {
				continue // the last copy is partial: not every Patient has Observations
			}
			id := p[at : at+bytes.IndexByte(p[at:], '"')]
			queries = append(queries, "Observation?patient="+string(id)+"&_sort=-date,code&_include=Observation:subject&_count=20")
		}
	}
	for chunk := range slices.Chunk(patients, 100) {
		if err := postBatch(e, batchOfPuts(b, "Patient", chunk)); err != nil {
			b.Fatal(err)
		}
	}
	for chunk := range slices.Chunk(obs, 100) {
		if err := postBatch(e, batchOfPuts(b, "Observation", chunk)); err != nil {
			b.Fatal(err)
		}
	}
	// The first search activates the index keys of patient, date and code
	// (built once per store from every stored Observation): reported as
	// activate-ms; then each query runs once before the timer starts.
	var activate time.Duration
	for i, q := range queries {
		t0 := time.Now()
		if r := e.do("GET", q, nil); r.status != http.StatusOK {
			b.Fatalf("%s: %d %s", q, r.status, r.body)
		}
		if i == 0 {
			activate = time.Since(t0)
		}
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	cpu0 := cpuTime()
	for i := 0; i < b.N; i++ {
		lat = append(lat, timedSearch(b, e, queries[i%len(queries)], `"mode":"include"`))
	}
	b.StopTimer()
	cpu := cpuTime() - cpu0
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*9/10].Microseconds())/1000, "p90-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cpu-ms/op")
	b.ReportMetric(float64(activate.Microseconds())/1000, "activate-ms")
}

// BenchmarkImport measures the bulk path of import jobs: NDJSON lines
// (the Observations of BenchmarkBatchPut) parsed, checked and written into
// the file-backed store in chunks, with their output records, without S3
// or HTTP. Every line creates a resource, as a first load does. It reports
// resources/s.
func BenchmarkImport(b *testing.B) {
	e := newEnv(b, Options{})
	obs := benchObservations(b, b.N*100)
	var nd bytes.Buffer
	for _, o := range obs {
		nd.Write(o)
		nd.WriteByte('\n')
	}
	st, done, _ := e.srv.reg.acquire(DefaultDatastoreID)
	defer done()
	im := &importer{jr: e.srv.jobs, st: st, job: jobRecord{id: "bench"}, spec: jobSpec{Input: "s3://bench/in/"}}
	f := &jobFile{key: "in/obs.ndjson"}
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime()
	if _, err := im.readFrom(context.Background(), f, bytes.NewReader(nd.Bytes()), 1, &liveFile{}, func(err error) error { return err }); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(len(obs))/time.Since(start).Seconds(), "resources/s")
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(len(obs)), "cpu-µs/resource")
}

// BenchmarkImportJob measures an import job end to end: the Observations
// of BenchmarkBatchPut in 4 NDJSON objects on moto (put before the timer
// starts), StartFHIRImportJob through the AWS SDK, and DescribeFHIRImportJob
// polled every 20 ms until COMPLETED; the store, S3 reads through moto and
// the output written back to it are all in the time. It reports
// resources/s.
func BenchmarkImportJob(b *testing.B) {
	b.Setenv("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")
	b.Setenv("AWS_RESPONSE_CHECKSUM_VALIDATION", "when_required")
	c := testutil.S3(testutil.Moto(b))
	bucket := testutil.Bucket(b, c)
	obs := benchObservations(b, b.N*100)
	for part := range 4 {
		var nd bytes.Buffer
		for _, o := range obs[part*len(obs)/4 : (part+1)*len(obs)/4] {
			nd.Write(o)
			nd.WriteByte('\n')
		}
		if _, err := c.PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String(bucket),
			Key: aws.String(fmt.Sprintf("bench/part-%d.ndjson", part)), Body: bytes.NewReader(nd.Bytes())}); err != nil {
			b.Fatal(err)
		}
	}
	ls := startLive(b, Options{S3: c})
	hl := hlClient(ls.addr, fullKey)
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime()
	res, err := hl.StartFHIRImportJob(context.Background(), &healthlake.StartFHIRImportJobInput{
		DatastoreId:     aws.String("local"),
		InputDataConfig: &hltypes.InputDataConfigMemberS3Uri{Value: "s3://" + bucket + "/bench/"},
		JobOutputDataConfig: &hltypes.OutputDataConfigMemberS3Configuration{Value: hltypes.S3Configuration{
			S3Uri: aws.String("s3://" + bucket + "/out/"), KmsKeyId: aws.String("alias/aws/s3")}},
		DataAccessRoleArn: aws.String("arn:aws:iam::123456789012:role/HealthLakeImport"),
	})
	if err != nil {
		b.Fatal(err)
	}
	for {
		d, err := hl.DescribeFHIRImportJob(context.Background(), &healthlake.DescribeFHIRImportJobInput{DatastoreId: aws.String("local"), JobId: res.JobId})
		if err != nil {
			b.Fatal(err)
		}
		if s := d.ImportJobProperties.JobStatus; s != hltypes.JobStatusSubmitted && s != hltypes.JobStatusInProgress {
			if s != hltypes.JobStatusCompleted {
				b.Fatalf("job %s: %s", s, aws.ToString(d.ImportJobProperties.Message))
			}
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.ReportMetric(float64(len(obs))/time.Since(start).Seconds(), "resources/s")
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(len(obs)), "cpu-µs/resource")
}

// BenchmarkAdmission measures what a request costs before the store sees
// it: signed PUTs of a 110 KB body, from 4 clients, to an unknown resource
// type, so that the server admits the request (header checks, budget,
// deadline, reading and hashing the body, the signature) and then refuses
// the route with 400. It reports the process's CPU µs per request (client
// signing included).
func BenchmarkAdmission(b *testing.B) {
	e := newEnv(b, Options{})
	body := []byte(`{"resourceType":"Patient","x":"` + strings.Repeat("a", 110<<10) + `"}`)
	var wg sync.WaitGroup
	work := make(chan struct{})
	b.ResetTimer()
	cpu0 := cpuTime()
	for range 4 {
		wg.Go(func() {
			for range work {
				req, _ := http.NewRequest("PUT", e.base+"Bogus/1", bytes.NewReader(body))
				req.Header.Set("Content-Type", contentTypeFHIR)
				signRequest(req, body, testKeyID, testSecret, testRegion, "", time.Now())
				res, err := e.ts.Client().Do(req)
				if err != nil {
					b.Error(err)
					continue
				}
				_, _ = io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode != http.StatusBadRequest {
					b.Errorf("status %d, want 400", res.StatusCode)
				}
			}
		})
	}
	for i := 0; i < b.N; i++ {
		work <- struct{}{}
	}
	close(work)
	wg.Wait()
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/request")
}

// syntheaLines returns the lines of a type of the shared Synthea population
// (testdata/shared/fhir-all), as in the files (urn:uuid: references).
func syntheaLines(tb testing.TB, typ string) [][]byte {
	tb.Helper()
	return testlines.All(tb, "../testdata/shared/fhir-all/"+typ+".ndjson.gz")
}

// BenchmarkIndex measures what indexing costs per resource: parsing a
// resource of the shared Synthea population into a FHIRPath tree and
// evaluating every search parameter of its type on it (parseResource on a
// compact body, as Bundle entries arrive). It reports the index rows
// computed per resource.
func BenchmarkIndex(b *testing.B) {
	for _, typ := range []string{"Patient", "Observation", "Encounter", "Claim", "ExplanationOfBenefit", "Immunization", "Condition", "MedicationRequest"} {
		b.Run(typ, func(b *testing.B) {
			lines := syntheaLines(b, typ)
			for i, l := range lines {
				lines[i] = compactValid(l)
			}
			var bytes, rows int
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				l := lines[i%len(lines)]
				p, e := parseResource(l, true)
				if e != nil {
					b.Fatal(e)
				}
				bytes += len(l)
				rows += len(p.rows)
			}
			b.ReportMetric(float64(rows)/float64(b.N), "rows/resource")
			b.SetBytes(int64(bytes / b.N))
		})
	}
}

// timedSearch sends one signed search and returns its latency; the answer
// must be 200 and contain want.
func timedSearch(b *testing.B, e *testEnv, query, want string) time.Duration {
	b.Helper()
	t0 := time.Now()
	req, _ := http.NewRequest("GET", e.base+query, nil)
	signRequest(req, nil, testKeyID, testSecret, testRegion, "", time.Now())
	res, err := e.ts.Client().Do(req)
	if err != nil {
		b.Fatal(err)
	}
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || !bytes.Contains(buf.Bytes(), []byte(want)) {
		b.Fatalf("search: %d %.300s", res.StatusCode, buf.Bytes())
	}
	return time.Since(t0)
}
