package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/healthlake"
	hltypes "github.com/aws/aws-sdk-go-v2/service/healthlake/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/fhirload/fhirload/internal/testlines"
	"github.com/fhirload/fhirload/internal/testutil"
)

// healthlakeServe is `fhirload serve` (SigV4, the test key pair of
// flowEnv) whose import jobs reach moto through the standard AWS SDK
// configuration: AWS_ENDPOINT_URL_S3, nothing else.
type healthlakeServe struct {
	p         *flProc
	addr, dir string
	endpoint  string // http://addr
}

func startHealthlakeServe(t *testing.T, m *motoWorld, addr, dir string, extra ...string) *healthlakeServe {
	t.Helper()
	args := append([]string{"serve", "--addr", addr, "--data", dir}, extra...)
	env := append(append([]string{}, flowEnv...), "AWS_ENDPOINT_URL_S3="+m.ep)
	p := startProcess(t, fhirloadBinary(t), filepath.Dir(dir), env, args...)
	waitListening(t, p, addr)
	return &healthlakeServe{p: p, addr: addr, dir: dir, endpoint: "http://" + addr}
}

// awsCLI runs `aws healthlake ARGS… --endpoint-url` against s and decodes
// its JSON output into out.
func (s *healthlakeServe) awsCLI(t *testing.T, out any, args ...string) {
	t.Helper()
	cmd := exec.Command("aws", append(append([]string{"healthlake"}, args...), "--endpoint-url", s.endpoint, "--region", "us-east-1", "--output", "json")...)
	for _, kv := range append(cmd.Environ(), flowEnv...) {
		// The CLI takes an empty AWS_PROFILE for a profile named "".
		if k, v, _ := strings.Cut(kv, "="); (k != "AWS_PROFILE" && k != "AWS_SESSION_TOKEN") || v != "" {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "AWS_DEFAULT_REGION=us-east-1", "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null", "AWS_MAX_ATTEMPTS=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		t.Fatalf("aws healthlake %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatalf("aws healthlake %s: output %s: %v", args[0], b, err)
	}
}

// cliJob is the ImportJobProperties describe-fhir-import-job prints (the
// fields used here).
type cliJob struct {
	JobID             string `json:"JobId"`
	JobStatus         string
	Message           string
	JobProgressReport struct {
		TotalNumberOfResourcesScanned           int64
		TotalNumberOfResourcesImported          int64
		TotalNumberOfResourcesWithCustomerError int64
	}
}

// ndjsonOf joins resources into an NDJSON file.
func ndjsonOf(lines [][]byte) []byte {
	var b bytes.Buffer
	for _, l := range lines {
		b.Write(l)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// sampleLines reads a gzip NDJSON file of testdata/sample.
func sampleLines(t *testing.T, name string) [][]byte {
	t.Helper()
	return testlines.All(t, filepath.Join("..", "..", "testdata", "sample", name))
}

// get reads an object of the bucket.
func (m *motoWorld) get(t *testing.T, key string) []byte {
	t.Helper()
	o, err := m.s3.GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(m.bucket), Key: aws.String(key)})
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	defer o.Body.Close()
	b, err := io.ReadAll(o.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// outputRecords reads an import job's output NDJSON object.
func (m *motoWorld) outputRecords(t *testing.T, key string) []map[string]any {
	t.Helper()
	b := m.get(t, key)
	var out []map[string]any
	for l := range bytes.SplitSeq(bytes.TrimSpace(b), []byte("\n")) {
		var r map[string]any
		if err := json.Unmarshal(l, &r); err != nil {
			t.Fatalf("%s: %v", key, err)
		}
		out = append(out, r)
	}
	return out
}

// TestAWSCLIImportJob: the aws CLI (v1, botocore: an independent client),
// pointed at `fhirload serve` with --endpoint-url only, lists the data
// store, starts an import job from an S3 prefix on moto, and describes it
// until COMPLETED; the store then holds exactly the imported resources and
// the job's output is under the output URI. Then, on a server with
// --chaos-import-reject, a second job's rejected lines are exactly its
// FAILURE records, and the rest is in the store.
func TestAWSCLIImportJob(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the aws CLI several times (~1 s each); run without -short")
	}
	if _, err := exec.LookPath("aws"); err != nil {
		t.Fatal("the aws CLI is required: it is the independent client the control plane is tested with")
	}
	m := newMotoWorld(t)
	pats := sampleLines(t, "Patient.ndjson.gz")[:20]
	obs := sampleLines(t, "Observation.ndjson.gz")[:300]
	m.put(t, "import/Patient.ndjson", ndjsonOf(pats))
	m.put(t, "import/Observation.ndjson.gz", gzipBytes(t, ndjsonOf(obs)))

	port, err := testutil.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	dir := filepath.Join(t.TempDir(), "serve")
	s := startHealthlakeServe(t, m, addr, dir)

	var list struct {
		DatastorePropertiesList []struct {
			DatastoreID       string `json:"DatastoreId"`
			DatastoreStatus   string
			DatastoreEndpoint string
		}
	}
	s.awsCLI(t, &list, "list-fhir-datastores")
	if len(list.DatastorePropertiesList) != 1 || list.DatastorePropertiesList[0].DatastoreID != "local" ||
		list.DatastorePropertiesList[0].DatastoreStatus != "ACTIVE" || list.DatastorePropertiesList[0].DatastoreEndpoint != s.endpoint+"/datastore/local/r4/" {
		t.Fatalf("list-fhir-datastores: %+v", list)
	}

	job := s.cliImport(t, m, "import/", "out/")
	p := s.cliWait(t, job)
	if p.JobStatus != "COMPLETED" || p.JobProgressReport.TotalNumberOfResourcesImported != 320 {
		t.Fatalf("import job: %+v", p)
	}
	pv, ov := storeVersions(t, dir, "Patient"), storeVersions(t, dir, "Observation")
	if len(pv) != 20 || len(ov) != 300 {
		t.Errorf("store holds %d Patients and %d Observations, want 20 and 300", len(pv), len(ov))
	}
	for _, l := range append(append([][]byte{}, pats...), obs...) {
		var r struct{ ResourceType, ID string }
		_ = json.Unmarshal(l, &r)
		vs := pv
		if r.ResourceType == "Observation" {
			vs = ov
		}
		if vs[r.ID] != 1 {
			t.Errorf("%s/%s at version %d, want 1", r.ResourceType, r.ID, vs[r.ID])
		}
	}
	folder := "out/local-FHIR_IMPORT-" + job + "/"
	if n := len(m.outputRecords(t, folder+"SUCCESS/Observation.ndjson.gz.ndjson")); n != 300 {
		t.Errorf("%d Observation success records, want 300", n)
	}
	if n := len(m.outputRecords(t, folder+"SUCCESS/Patient.ndjson")); n != 20 {
		t.Errorf("%d Patient success records, want 20", n)
	}
	var manifest struct {
		Imported int64 `json:"numberOfResourcesImportedSuccessfully"`
	}
	if err := json.Unmarshal(m.get(t, folder+"manifest.json"), &manifest); err != nil || manifest.Imported != 320 {
		t.Errorf("manifest.json: %v, %d imported", err, manifest.Imported)
	}
	s.p.stop(t)

	// --chaos-import-reject: the rejected lines are the FAILURE records,
	// the others are in the store.
	s = startHealthlakeServe(t, m, addr, dir, "--chaos-import-reject", "0.1", "--chaos-seed", "7")
	more := sampleLines(t, "Observation.ndjson.gz")[300:700]
	m.put(t, "chaos/obs.ndjson", ndjsonOf(more))
	hl := s.sdk()
	job = s.sdkImport(t, hl, m, "chaos/")
	cp := s.sdkWait(t, hl, job)
	fails := m.outputRecords(t, "out/local-FHIR_IMPORT-"+job+"/FAILURE/obs.ndjson")
	succ := m.outputRecords(t, "out/local-FHIR_IMPORT-"+job+"/SUCCESS/obs.ndjson")
	if cp.JobStatus != hltypes.JobStatusCompletedWithErrors || len(fails) == 0 ||
		int64(len(fails)) != aws.ToInt64(cp.JobProgressReport.TotalNumberOfResourcesWithCustomerError) || len(fails)+len(succ) != 400 {
		t.Fatalf("chaos job: %s %+v, %d failure and %d success records", cp.JobStatus, *cp.JobProgressReport, len(fails), len(succ))
	}
	ov = storeVersions(t, dir, "Observation")
	for _, f := range fails {
		line := int(f["lineNumber"].(float64))
		if f["line"] != string(more[line-1]) || f["operationOutcome"] == nil {
			t.Errorf("failure record for line %d does not carry the line and an OperationOutcome: %v", line, f)
		}
		var r struct{ ID string }
		_ = json.Unmarshal(more[line-1], &r)
		if _, ok := ov[r.ID]; ok {
			t.Errorf("rejected line %d (Observation/%s) is in the store", line, r.ID)
		}
	}
	if len(ov) != 300+len(succ) {
		t.Errorf("store holds %d Observations, want %d", len(ov), 300+len(succ))
	}
}

func (s *healthlakeServe) cliImport(t *testing.T, m *motoWorld, in, out string) string {
	t.Helper()
	var started struct {
		JobID     string `json:"JobId"`
		JobStatus string
	}
	s.awsCLI(t, &started, "start-fhir-import-job", "--datastore-id", "local",
		"--input-data-config", "S3Uri=s3://"+m.bucket+"/"+in,
		"--job-output-data-config", "S3Configuration={S3Uri=s3://"+m.bucket+"/"+out+",KmsKeyId=alias/aws/s3}",
		"--data-access-role-arn", "arn:aws:iam::123456789012:role/HealthLakeImport")
	if started.JobStatus != "SUBMITTED" || started.JobID == "" {
		t.Fatalf("start-fhir-import-job: %+v", started)
	}
	return started.JobID
}

func (s *healthlakeServe) cliWait(t *testing.T, job string) cliJob {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var d struct{ ImportJobProperties cliJob }
		s.awsCLI(t, &d, "describe-fhir-import-job", "--datastore-id", "local", "--job-id", job)
		switch p := d.ImportJobProperties; p.JobStatus {
		case "COMPLETED", "COMPLETED_WITH_ERRORS", "FAILED":
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s did not end", job)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// sdk is the AWS SDK's HealthLake client for s.
func (s *healthlakeServe) sdk() *healthlake.Client {
	return healthlake.New(healthlake.Options{Region: "us-east-1", BaseEndpoint: aws.String(s.endpoint),
		Credentials: credentials.NewStaticCredentialsProvider("testing", "testing", ""), HTTPClient: &http.Client{Timeout: 30 * time.Second}})
}

// sdkImport starts an import job of s3://bucket/{in} into local, output
// under out/, and returns its id.
func (s *healthlakeServe) sdkImport(t *testing.T, hl *healthlake.Client, m *motoWorld, in string) string {
	t.Helper()
	res, err := hl.StartFHIRImportJob(context.Background(), &healthlake.StartFHIRImportJobInput{
		DatastoreId:     aws.String("local"),
		InputDataConfig: &hltypes.InputDataConfigMemberS3Uri{Value: "s3://" + m.bucket + "/" + in},
		JobOutputDataConfig: &hltypes.OutputDataConfigMemberS3Configuration{Value: hltypes.S3Configuration{
			S3Uri: aws.String("s3://" + m.bucket + "/out/"), KmsKeyId: aws.String("alias/aws/s3")}},
		DataAccessRoleArn: aws.String("arn:aws:iam::123456789012:role/HealthLakeImport"),
	})
	if err != nil {
		t.Fatal(err)
	}
	return aws.ToString(res.JobId)
}

// sdkWait polls the job until it ends.
func (s *healthlakeServe) sdkWait(t *testing.T, hl *healthlake.Client, job string) *hltypes.ImportJobProperties {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		d, err := hl.DescribeFHIRImportJob(context.Background(), &healthlake.DescribeFHIRImportJobInput{DatastoreId: aws.String("local"), JobId: aws.String(job)})
		if err != nil {
			t.Fatal(err)
		}
		switch p := d.ImportJobProperties; p.JobStatus {
		case hltypes.JobStatusCompleted, hltypes.JobStatusCompletedWithErrors, hltypes.JobStatusFailed:
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s did not end", job)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestServeResumesImportAfterKill: `fhirload serve` SIGKILLed while an
// import job is IN_PROGRESS resumes it when started again on the same data
// folder and completes it: every line imported once (version 1) and
// reported once in the job's output.
func TestServeResumesImportAfterKill(t *testing.T) {
	if testing.Short() {
		t.Skip("imports 8,000 resources twice over; run without -short")
	}
	m := newMotoWorld(t)
	obs := sampleLines(t, "Observation.ndjson.gz")[:8000]
	for i := range 4 {
		m.put(t, fmt.Sprintf("kill/part-%d.ndjson", i), ndjsonOf(obs[i*2000:(i+1)*2000]))
	}
	port, err := testutil.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	dir := filepath.Join(t.TempDir(), "serve")
	s := startHealthlakeServe(t, m, addr, dir)
	hl := s.sdk()
	ctx := context.Background()
	job := s.sdkImport(t, hl, m, "kill/")
	describe := func() *hltypes.ImportJobProperties {
		d, err := hl.DescribeFHIRImportJob(ctx, &healthlake.DescribeFHIRImportJobInput{DatastoreId: aws.String("local"), JobId: aws.String(job)})
		if err != nil {
			t.Fatal(err)
		}
		return d.ImportJobProperties
	}
	// Kill once the job has imported something, and not all.
	for {
		p := describe()
		if n := aws.ToInt64(p.JobProgressReport.TotalNumberOfResourcesImported); p.JobStatus == hltypes.JobStatusInProgress && n > 0 {
			t.Logf("killing serve with %d of 8000 imported", n)
			break
		}
		if p.JobStatus != hltypes.JobStatusSubmitted && p.JobStatus != hltypes.JobStatusInProgress {
			t.Fatalf("the job ended (%s) before the kill: make the input larger", p.JobStatus)
		}
		time.Sleep(5 * time.Millisecond)
	}
	s.p.kill(t)

	s = startHealthlakeServe(t, m, addr, dir)
	p := s.sdkWait(t, hl, job)
	if p.JobStatus != hltypes.JobStatusCompleted || aws.ToInt64(p.JobProgressReport.TotalNumberOfResourcesImported) != 8000 ||
		aws.ToInt64(p.JobProgressReport.TotalNumberOfResourcesScanned) != 8000 {
		t.Fatalf("resumed job: %s %q %+v", p.JobStatus, aws.ToString(p.Message), *p.JobProgressReport)
	}
	ov := storeVersions(t, dir, "Observation")
	if len(ov) != 8000 {
		t.Errorf("store holds %d Observations, want 8000", len(ov))
	}
	for id, v := range ov {
		if v != 1 {
			t.Errorf("Observation/%s at version %d: imported twice", id, v)
		}
	}
	for i := range 4 {
		recs := m.outputRecords(t, fmt.Sprintf("out/local-FHIR_IMPORT-%s/SUCCESS/part-%d.ndjson", job, i))
		seen := map[float64]bool{}
		for _, r := range recs {
			seen[r["lineNumber"].(float64)] = true
		}
		if len(recs) != 2000 || len(seen) != 2000 {
			t.Errorf("part-%d: %d success records over %d lines, want 2000 once each", i, len(recs), len(seen))
		}
	}
}
