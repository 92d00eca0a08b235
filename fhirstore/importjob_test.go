package fhirstore

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/healthlake"
	hltypes "github.com/aws/aws-sdk-go-v2/service/healthlake/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/fhirload/fhirload/internal/testutil"
)

// importWorld is moto with a bucket, and a server whose import jobs use it.
type importWorld struct {
	s3     *s3.Client
	bucket string
}

func newImportWorld(t *testing.T) *importWorld {
	t.Helper()
	t.Setenv("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")
	t.Setenv("AWS_RESPONSE_CHECKSUM_VALIDATION", "when_required")
	c := testutil.S3(testutil.Moto(t))
	return &importWorld{s3: c, bucket: testutil.Bucket(t, c)}
}

func (w *importWorld) put(t *testing.T, key string, body []byte) {
	t.Helper()
	if _, err := w.s3.PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String(w.bucket), Key: aws.String(key),
		Body: bytes.NewReader(body)}); err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
}

func (w *importWorld) get(t *testing.T, key string) []byte {
	t.Helper()
	out, err := w.s3.GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(w.bucket), Key: aws.String(key)})
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// keys lists the object keys under prefix.
func (w *importWorld) keys(t *testing.T, prefix string) []string {
	t.Helper()
	return testutil.Keys(t, w.s3, w.bucket, prefix)
}

func gz(t *testing.T, b []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// startImport starts an import job of s3://bucket/in into datastore and
// returns its id.
func (w *importWorld) startImport(t *testing.T, hl *healthlake.Client, datastore, in, out string) string {
	t.Helper()
	res, err := hl.StartFHIRImportJob(context.Background(), &healthlake.StartFHIRImportJobInput{
		JobName:         aws.String("nightly-" + strings.ReplaceAll(in, "/", "-")),
		DatastoreId:     aws.String(datastore),
		InputDataConfig: &hltypes.InputDataConfigMemberS3Uri{Value: "s3://" + w.bucket + "/" + in},
		JobOutputDataConfig: &hltypes.OutputDataConfigMemberS3Configuration{Value: hltypes.S3Configuration{
			S3Uri: aws.String("s3://" + w.bucket + "/" + out), KmsKeyId: aws.String("arn:aws:kms:us-east-1:123456789012:key/abcd-1234")}},
		DataAccessRoleArn: aws.String("arn:aws:iam::123456789012:role/HealthLakeImport"),
	})
	if err != nil {
		t.Fatalf("start import job: %v", err)
	}
	if res.JobStatus != hltypes.JobStatusSubmitted || aws.ToString(res.DatastoreId) != datastore || len(aws.ToString(res.JobId)) != 32 {
		t.Errorf("start: %+v", res)
	}
	return aws.ToString(res.JobId)
}

// waitJob polls DescribeFHIRImportJob until the job has ended.
func waitJob(t *testing.T, hl *healthlake.Client, datastore, job string) *hltypes.ImportJobProperties {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, err := hl.DescribeFHIRImportJob(context.Background(), &healthlake.DescribeFHIRImportJobInput{DatastoreId: aws.String(datastore), JobId: aws.String(job)})
		if err != nil {
			t.Fatalf("describe job: %v", err)
		}
		p := out.ImportJobProperties
		switch p.JobStatus {
		case hltypes.JobStatusCompleted, hltypes.JobStatusCompletedWithErrors, hltypes.JobStatusFailed:
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("import job still %s", p.JobStatus)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// record is an output record of an import job.
type record struct {
	InputFile        string
	LineNumber       int64
	ResourceType     string `json:"resourceType"`
	ID               string `json:"id"`
	Line             *string
	Status           string
	VersionID        string
	OperationOutcome *struct {
		Issue []struct {
			Code    string
			Details struct{ Text string }
		}
	}
}

func records(t *testing.T, b []byte) []record {
	t.Helper()
	var out []record
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var r record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("output record %q: %v", sc.Text(), err)
		}
		out = append(out, r)
	}
	return out
}

// storeIDs reads type → id → version of the live resources of a data store.
func storeIDs(t *testing.T, srv *Server, datastore string) map[string]map[string]int64 {
	t.Helper()
	st, done, ok := srv.reg.acquire(datastore)
	if !ok {
		t.Fatalf("data store %s not active", datastore)
	}
	defer done()
	rows, err := st.r.Query(`SELECT type, id, version FROM resources WHERE deleted = 0`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]map[string]int64{}
	for rows.Next() {
		var typ, id string
		var v int64
		if err := rows.Scan(&typ, &id, &v); err != nil {
			t.Fatal(err)
		}
		if out[typ] == nil {
			out[typ] = map[string]int64{}
		}
		out[typ][id] = v
	}
	return out
}

// patientLine is a valid Patient with id and an MRN.
func patientLine(id, mrn string) string {
	return `{"resourceType":"Patient","id":"` + id + `","identifier":[{"system":"urn:test:mrn","value":"` + mrn + `"}],"name":[{"family":"Doe"}]}`
}

// TestImportJob: the AWS SDK starts an import job over a prefix holding a
// plain and a gzip NDJSON file (and a folder marker), DescribeFHIRImportJob
// reports it COMPLETED_WITH_ERRORS with its counters, and then:
//   - the store holds exactly the importable lines' resources, each at
//     version 1 (a line without id gets one);
//   - every line the data plane would refuse (malformed JSON, unknown type,
//     bad id, duplicate identifier, a line too long) is a FAILURE record
//     with the line as sent, its file and line number, and an
//     OperationOutcome; the job does not fail for them;
//   - every imported line is a SUCCESS record with its file and line;
//   - manifest.json has HealthLake's fields and the counts.
func TestImportJob(t *testing.T) {
	w := newImportWorld(t)
	obs := readNDJSON(t, "Observation.ndjson.gz")[:50]
	var obsFile bytes.Buffer
	for _, o := range obs {
		obsFile.Write(o)
		obsFile.WriteString("\n")
	}
	malformed := `{"resourceType":"Patient","id":"p9",`
	badID := `{"resourceType":"Patient","id":"bad$id"}`
	unknown := `{"resourceType":"Bogus","id":"b1"}`
	dup := patientLine("p4", "MRN-1") // p1's identifier
	noID := `{"resourceType":"Patient","name":[{"family":"Roe"}]}`
	long := `{"resourceType":"Patient","id":"p5","x":"` + strings.Repeat("a", maxImportLine) + `"}`
	lines := []string{"\xef\xbb\xbf" + patientLine("p1", "MRN-1"), patientLine("p2", "MRN-2"), patientLine("p3", "MRN-3"),
		"", malformed, badID, unknown, dup, noID, long}
	patients := strings.Join(lines, "\n") + "\r\n"
	w.put(t, "in/patients.ndjson", []byte(patients))
	w.put(t, "in/sub/", nil)
	w.put(t, "in/sub/observations.ndjson.gz", gz(t, obsFile.Bytes()))

	ls := startLive(t, Options{S3: w.s3})
	hl := hlClient(ls.addr, fullKey)
	job := w.startImport(t, hl, "local", "in/", "out/")
	p := waitJob(t, hl, "local", job)
	if p.JobStatus != hltypes.JobStatusCompletedWithErrors {
		t.Fatalf("job %s: %s", p.JobStatus, aws.ToString(p.Message))
	}
	r := p.JobProgressReport
	if aws.ToInt64(r.TotalNumberOfScannedFiles) != 2 || aws.ToInt64(r.TotalNumberOfImportedFiles) != 2 ||
		aws.ToInt64(r.TotalNumberOfResourcesScanned) != 59 || aws.ToInt64(r.TotalNumberOfResourcesImported) != 54 ||
		aws.ToInt64(r.TotalNumberOfResourcesWithCustomerError) != 5 || aws.ToInt64(r.TotalNumberOfFilesReadWithCustomerError) != 0 {
		t.Errorf("progress report: %+v", *r)
	}
	if p.EndTime == nil || p.SubmitTime == nil || aws.ToString(p.JobName) != "nightly-in-" ||
		aws.ToString(p.DataAccessRoleArn) != "arn:aws:iam::123456789012:role/HealthLakeImport" {
		t.Errorf("job properties: %+v", *p)
	}

	// The store: exactly the importable lines, each at version 1.
	ids := storeIDs(t, ls.srv, "local")
	if len(ids["Observation"]) != 50 || len(ids["Patient"]) != 4 || len(ids) != 2 {
		t.Errorf("store holds %d Observations, %d Patients, %d types; want 50, 4, 2", len(ids["Observation"]), len(ids["Patient"]), len(ids))
	}
	for typ, m := range ids {
		for id, v := range m {
			if v != 1 {
				t.Errorf("%s/%s at version %d", typ, id, v)
			}
		}
	}

	folder := "out/local-FHIR_IMPORT-" + job + "/"
	keys := w.keys(t, folder)
	want := []string{folder + "FAILURE/patients.ndjson", folder + "SUCCESS/patients.ndjson",
		folder + "SUCCESS/sub/observations.ndjson.gz.ndjson", folder + "manifest.json"}
	if !slices.Equal(keys, want) {
		t.Errorf("output objects:\n%v\nwant\n%v", keys, want)
	}
	patURI := "s3://" + w.bucket + "/in/patients.ndjson"
	fails := records(t, w.get(t, folder+"FAILURE/patients.ndjson"))
	wantFail := map[int64]string{5: "invalid", 6: "invalid", 7: "invalid", 8: "duplicate", 10: "invalid"}
	if len(fails) != len(wantFail) {
		t.Fatalf("%d failure records, want %d", len(fails), len(wantFail))
	}
	for _, f := range fails {
		code, ok := wantFail[f.LineNumber]
		if !ok || f.InputFile != patURI || f.OperationOutcome == nil || f.OperationOutcome.Issue[0].Code != code || f.Line == nil {
			t.Errorf("failure record %+v: want file %s, a line of %v with issue %s and the line", f, patURI, wantFail, code)
			continue
		}
		if sent := lines[f.LineNumber-1]; f.LineNumber != 10 && *f.Line != sent {
			t.Errorf("line %d: record carries %q, the file %q", f.LineNumber, *f.Line, sent)
		}
	}
	succ := records(t, w.get(t, folder+"SUCCESS/patients.ndjson"))
	var got []int64
	for _, s := range succ {
		got = append(got, s.LineNumber)
		if s.InputFile != patURI || s.ResourceType != "Patient" || s.ID == "" || s.Status != "201 Created" {
			t.Errorf("success record %+v", s)
		}
		if _, ok := ids["Patient"][s.ID]; !ok {
			t.Errorf("success record names %s, not in the store", s.ID)
		}
	}
	if !slices.Equal(got, []int64{1, 2, 3, 9}) {
		t.Errorf("success lines %v, want 1 2 3 9", got)
	}
	if n := len(records(t, w.get(t, folder+"SUCCESS/sub/observations.ndjson.gz.ndjson"))); n != 50 {
		t.Errorf("%d observation success records, want 50", n)
	}

	var m struct {
		InputDataConfig struct {
			S3URI string `json:"s3Uri"`
		}
		OutputDataConfig struct {
			S3URI         string `json:"s3Uri"`
			EncryptionKey string `json:"encryptionKeyID"`
		}
		SuccessOutput struct {
			SuccessOutputS3URI string `json:"successOutputS3Uri"`
		}
		FailureOutput struct {
			FailureOutputS3URI string `json:"failureOutputS3Uri"`
		}
		Scanned       int64 `json:"numberOfResourcesScanned"`
		Imported      int64 `json:"numberOfResourcesImportedSuccessfully"`
		CustomerError int64 `json:"numberOfResourcesWithCustomerError"`
		ScannedFiles  int   `json:"numberOfScannedFiles"`
		Files         []struct{ InputFile string }
	}
	if err := json.Unmarshal(w.get(t, folder+"manifest.json"), &m); err != nil {
		t.Fatal(err)
	}
	outURI := "s3://" + w.bucket + "/" + folder
	if m.InputDataConfig.S3URI != "s3://"+w.bucket+"/in/" || m.OutputDataConfig.S3URI != outURI || m.SuccessOutput.SuccessOutputS3URI != outURI+"SUCCESS/" ||
		m.FailureOutput.FailureOutputS3URI != outURI+"FAILURE/" || m.Scanned != 59 || m.Imported != 54 || m.CustomerError != 5 || m.ScannedFiles != 2 || len(m.Files) != 2 {
		t.Errorf("manifest: %+v", m)
	}

	// ListFHIRImportJobs lists it; a filter on another status does not.
	list, err := hl.ListFHIRImportJobs(context.Background(), &healthlake.ListFHIRImportJobsInput{DatastoreId: aws.String("local")})
	if err != nil || len(list.ImportJobPropertiesList) != 1 || aws.ToString(list.ImportJobPropertiesList[0].JobId) != job {
		t.Errorf("list: %v %+v", err, list)
	}
	list, err = hl.ListFHIRImportJobs(context.Background(), &healthlake.ListFHIRImportJobsInput{DatastoreId: aws.String("local"), JobStatus: hltypes.JobStatusFailed})
	if err != nil || len(list.ImportJobPropertiesList) != 0 {
		t.Errorf("list FAILED: %v %+v", err, list)
	}
}

// TestImportChaosReject: with ChaosImportReject, exactly the lines the seed
// picks are FAILURE records (with an OperationOutcome) and absent from the
// store; the same seed picks the same lines.
func TestImportChaosReject(t *testing.T) {
	w := newImportWorld(t)
	obs := readNDJSON(t, "Observation.ndjson.gz")[:400]
	var file bytes.Buffer
	for _, o := range obs {
		file.Write(o)
		file.WriteString("\n")
	}
	w.put(t, "chaos/obs.ndjson", file.Bytes())
	ls := startLive(t, Options{S3: w.s3, ChaosImportReject: 0.1, ChaosSeed: 42})
	hl := hlClient(ls.addr, fullKey)
	job := w.startImport(t, hl, "local", "chaos/", "out/")
	p := waitJob(t, hl, "local", job)
	uri := "s3://" + w.bucket + "/chaos/obs.ndjson"
	var want []int64
	for i := range obs {
		if chaosReject(0.1, 42, "chaos/obs.ndjson", int64(i+1)) {
			want = append(want, int64(i+1))
		}
	}
	if len(want) < 20 || len(want) > 60 {
		t.Fatalf("the seed rejects %d of 400 lines at p=0.1", len(want))
	}
	if p.JobStatus != hltypes.JobStatusCompletedWithErrors || aws.ToInt64(p.JobProgressReport.TotalNumberOfResourcesWithCustomerError) != int64(len(want)) {
		t.Fatalf("job %s, %d customer errors; want COMPLETED_WITH_ERRORS, %d", p.JobStatus, aws.ToInt64(p.JobProgressReport.TotalNumberOfResourcesWithCustomerError), len(want))
	}
	var got []int64
	for _, f := range records(t, w.get(t, "out/local-FHIR_IMPORT-"+job+"/FAILURE/obs.ndjson")) {
		got = append(got, f.LineNumber)
		if f.InputFile != uri || f.OperationOutcome == nil || !strings.Contains(f.OperationOutcome.Issue[0].Details.Text, "chaos-import-reject") ||
			f.Line == nil || *f.Line != string(obs[f.LineNumber-1]) {
			t.Errorf("failure record %+v", f)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("rejected lines %v, want %v", got, want)
	}
	if n := len(storeIDs(t, ls.srv, "local")["Observation"]); n != 400-len(want) {
		t.Errorf("store holds %d Observations, want %d", n, 400-len(want))
	}
}

// copyDir copies the files of a data directory (a crash's snapshot: what
// was on disk at that moment).
func copyDir(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		dst := filepath.Join(to, rel)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o700)
		}
		if strings.HasSuffix(p, "-shm") || strings.HasSuffix(p, ".lock") {
			return nil // rebuilt on open; a lock does not survive a crash
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestImportResumesAfterCrash: a server that crashes in the middle of a job
// (its data directory as it was on disk just after a chunk committed) is
// started again on that directory, resumes the job where it stopped and
// completes it: every line is imported once (each resource at version 1)
// and is in the output once.
func TestImportResumesAfterCrash(t *testing.T) {
	w := newImportWorld(t)
	obs := readNDJSON(t, "Observation.ndjson.gz")[:300]
	for i, part := range [][][]byte{obs[:150], obs[150:]} {
		var file bytes.Buffer
		for _, o := range part {
			file.Write(o)
			file.WriteString("\n")
		}
		file.WriteString(`{"resourceType":"Observation","id":"bad id"}` + "\n")
		w.put(t, fmt.Sprintf("crash/part-%d.ndjson", i), file.Bytes())
	}
	dir, crashDir := t.TempDir(), t.TempDir()
	crashed := make(chan struct{})
	crash := func(job string, file int, next int64) bool {
		// The second chunk of the second file: the first file is done.
		if file == 1 && next > 100 {
			select {
			case <-crashed:
			default:
				copyDir(t, dir, crashDir)
				close(crashed)
			}
			return true // and this server never goes on
		}
		return false
	}
	ls := startLive(t, Options{Dir: dir, S3: w.s3, importChunkLines: 50, afterChunk: crash})
	job := w.startImport(t, hlClient(ls.addr, fullKey), "local", "crash/", "out/")
	select {
	case <-crashed:
	case <-time.After(60 * time.Second):
		t.Fatal("the job never reached the crash point")
	}
	ls.stop(t)

	ls = startLive(t, Options{Dir: crashDir, S3: w.s3, importChunkLines: 50})
	hl := hlClient(ls.addr, fullKey)
	p := waitJob(t, hl, "local", job)
	r := p.JobProgressReport
	if p.JobStatus != hltypes.JobStatusCompletedWithErrors || aws.ToInt64(r.TotalNumberOfResourcesImported) != 300 ||
		aws.ToInt64(r.TotalNumberOfResourcesWithCustomerError) != 2 || aws.ToInt64(r.TotalNumberOfResourcesScanned) != 302 {
		t.Fatalf("resumed job: %s %+v", p.JobStatus, *r)
	}
	ids := storeIDs(t, ls.srv, "local")["Observation"]
	if len(ids) != 300 {
		t.Errorf("store holds %d Observations, want 300", len(ids))
	}
	for id, v := range ids {
		if v != 1 {
			t.Errorf("Observation/%s at version %d: written twice", id, v)
		}
	}
	folder := "out/local-FHIR_IMPORT-" + job + "/"
	for i := range 2 {
		var lines []int64
		for _, s := range records(t, w.get(t, fmt.Sprintf("%sSUCCESS/part-%d.ndjson", folder, i))) {
			lines = append(lines, s.LineNumber)
		}
		for _, f := range records(t, w.get(t, fmt.Sprintf("%sFAILURE/part-%d.ndjson", folder, i))) {
			lines = append(lines, f.LineNumber)
		}
		slices.Sort(lines)
		for k, n := range lines {
			if n != int64(k+1) {
				t.Errorf("part-%d: output lines %v…: want each of 1..151 once", i, lines[max(0, k-2):min(len(lines), k+3)])
				break
			}
		}
		if len(lines) != 151 {
			t.Errorf("part-%d: %d output records, want 151", i, len(lines))
		}
	}
}

// TestImportJobFailures: what fails a job (its message says why) and what
// only fails a file (a record in FAILURE, the job COMPLETED_WITH_ERRORS).
func TestImportJobFailures(t *testing.T) {
	w := newImportWorld(t)
	good := patientLine("g1", "MRN-G1") + "\n"
	w.put(t, "ok/a.ndjson", []byte(good))
	corrupt := gz(t, []byte(strings.Repeat(good, 200)))
	corrupt[len(corrupt)-6] ^= 0xff // the CRC: every line decodes, the end does not check
	w.put(t, "corrupt/a.ndjson.gz", corrupt)
	ls := startLive(t, Options{S3: w.s3})
	hl := hlClient(ls.addr, fullKey)
	for _, c := range []struct {
		name, in, out string
		status        hltypes.JobStatus
		message       string
	}{
		{"no input files", "nothing-here/", "out/", hltypes.JobStatusFailed, "No input files found"},
		{"missing output bucket", "ok/", "", hltypes.JobStatusFailed, "cannot be written"},
		{"corrupt gzip", "corrupt/", "out/", hltypes.JobStatusCompletedWithErrors, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			out := c.out
			if out == "" { // another bucket, that does not exist
				res, err := hl.StartFHIRImportJob(context.Background(), &healthlake.StartFHIRImportJobInput{
					DatastoreId:     aws.String("local"),
					InputDataConfig: &hltypes.InputDataConfigMemberS3Uri{Value: "s3://" + w.bucket + "/" + c.in},
					JobOutputDataConfig: &hltypes.OutputDataConfigMemberS3Configuration{Value: hltypes.S3Configuration{
						S3Uri: aws.String("s3://no-such-bucket-fhirload/out/"), KmsKeyId: aws.String("alias/aws/s3")}},
					DataAccessRoleArn: aws.String("arn:aws:iam::123456789012:role/HealthLakeImport"),
				})
				if err != nil {
					t.Fatal(err)
				}
				p := waitJob(t, hl, "local", aws.ToString(res.JobId))
				if p.JobStatus != c.status || !strings.Contains(aws.ToString(p.Message), c.message) {
					t.Errorf("job %s %q, want %s %q", p.JobStatus, aws.ToString(p.Message), c.status, c.message)
				}
				return
			}
			job := w.startImport(t, hl, "local", c.in, out)
			p := waitJob(t, hl, "local", job)
			if p.JobStatus != c.status || !strings.Contains(aws.ToString(p.Message), c.message) {
				t.Errorf("job %s %q, want %s %q", p.JobStatus, aws.ToString(p.Message), c.status, c.message)
			}
			if c.name == "corrupt gzip" {
				if n := aws.ToInt64(p.JobProgressReport.TotalNumberOfFilesReadWithCustomerError); n != 1 {
					t.Errorf("%d files read with errors, want 1", n)
				}
				fails := records(t, w.get(t, "out/local-FHIR_IMPORT-"+job+"/FAILURE/a.ndjson.gz.ndjson"))
				if len(fails) != 1 || fails[0].Line != nil || !strings.Contains(fails[0].OperationOutcome.Issue[0].Details.Text, "gzip checksum") {
					t.Errorf("failure records of the corrupt file: %+v", fails)
				}
			}
		})
	}
}

// cuttingS3 is moto behind a fault: the first cuts GetObject bodies break
// off after 100 KB with a connection error.
type cuttingS3 struct {
	S3API
	mu   sync.Mutex
	cuts int
}

func (c *cuttingS3) GetObject(ctx context.Context, in *s3.GetObjectInput, opts ...func(*s3.Options)) (*s3.GetObjectOutput, error) {
	out, err := c.S3API.GetObject(ctx, in, opts...)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err == nil && c.cuts > 0 {
		c.cuts--
		out.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(io.LimitReader(out.Body, 100<<10), errReader{errors.New("read tcp: connection reset by peer")}), out.Body}
	}
	return out, err
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

// TestImportRetriesBrokenStream: an S3 stream that breaks off before the
// object's end is opened again and read on from the last committed chunk;
// after too many breaks the file gets a failure record for the rest.
func TestImportRetriesBrokenStream(t *testing.T) {
	w := newImportWorld(t)
	obs := readNDJSON(t, "Observation.ndjson.gz")[:1000]
	var file bytes.Buffer
	for _, o := range obs {
		file.Write(o)
		file.WriteString("\n")
	}
	w.put(t, "cut/obs.ndjson", file.Bytes())
	for _, c := range []struct {
		name   string
		cuts   int
		status hltypes.JobStatus
	}{
		{"two breaks: retried", 2, hltypes.JobStatusCompleted},
		{"three breaks: the rest of the file fails", 3, hltypes.JobStatusCompletedWithErrors},
	} {
		t.Run(c.name, func(t *testing.T) {
			ls := startLive(t, Options{S3: &cuttingS3{S3API: w.s3, cuts: c.cuts}, importChunkLines: 50})
			hl := hlClient(ls.addr, fullKey)
			job := w.startImport(t, hl, "local", "cut/", "out/")
			p := waitJob(t, hl, "local", job)
			imported := aws.ToInt64(p.JobProgressReport.TotalNumberOfResourcesImported)
			if p.JobStatus != c.status {
				t.Fatalf("job %s, %d imported", p.JobStatus, imported)
			}
			n := len(storeIDs(t, ls.srv, "local")["Observation"])
			succ := records(t, w.get(t, "out/local-FHIR_IMPORT-"+job+"/SUCCESS/obs.ndjson"))
			if int64(n) != imported || len(succ) != n {
				t.Errorf("store %d, imported %d, success records %d: want equal", n, imported, len(succ))
			}
			for i, s := range succ {
				if s.LineNumber != int64(i+1) {
					t.Fatalf("success record %d is line %d: lines must be reported once, in order", i, s.LineNumber)
				}
			}
			if c.status == hltypes.JobStatusCompleted {
				if n != 1000 {
					t.Errorf("%d imported, want 1000", n)
				}
				return
			}
			fails := records(t, w.get(t, "out/local-FHIR_IMPORT-"+job+"/FAILURE/obs.ndjson"))
			if n >= 1000 || len(fails) != 1 || fails[0].LineNumber != int64(n+1) || !strings.Contains(fails[0].OperationOutcome.Issue[0].Details.Text, "connection reset") ||
				aws.ToInt64(p.JobProgressReport.TotalNumberOfFilesReadWithCustomerError) != 1 {
				t.Errorf("after %d imported lines: failure records %+v", n, fails)
			}
		})
	}
}
