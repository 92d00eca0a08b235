package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/fhirload/fhirload/deadletter"
	"github.com/fhirload/fhirload/pipeline"
)

// Issue 14, defect 1: an object that cannot be opened or read to its end is
// never skipped in silence. The rule, the same for local files and S3
// objects: it is dead-lettered as one object-level entry (reason
// unreadable-object, the error text, no line), counted as one line, and the
// run exits 2; `replay` reads it again once it is readable. Objects announced
// on SQS are released for redelivery instead (the queue's redrive policy
// parks a message that keeps failing).

// nobody is the unprivileged user the reported scenario ran as.
const nobodyUID, nobodyGID = 65534, 65534

// TestUnreadableFileAsUnprivilegedUser is the report: run as an unprivileged
// user over a folder holding a readable file and one it may not read.
// (Tests run as root here, where permissions stop nothing: the process
// drops to nobody for real.)
func TestUnreadableFileAsUnprivilegedUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to start a process as another user") // CI and this machine run as root
	}
	dir, err := os.MkdirTemp("", "fhirload-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	must(t, os.Chmod(dir, 0o755))
	in := filepath.Join(dir, "in")
	must(t, os.Mkdir(in, 0o755))
	must(t, os.WriteFile(filepath.Join(in, "a.ndjson"), []byte(patientLine("a1")+"\n"), 0o644))
	secret := filepath.Join(in, "secret.ndjson")
	must(t, os.WriteFile(secret, []byte(patientLine("s1")+"\n"+patientLine("s2")+"\n"), 0o600)) // root's, 0600
	work := filepath.Join(dir, "work")
	must(t, os.Mkdir(work, 0o777))
	must(t, os.Chmod(work, 0o777))
	cfg := filepath.Join(work, "pipeline.yaml")
	must(t, os.WriteFile(cfg, []byte(fmt.Sprintf("target: {data: %q}\ndeadletter: {url: \"file://%s\"}\nlog: {level: warn}\n",
		filepath.Join(work, "store"), filepath.Join(work, "dl"))), 0o644))
	// The binary where nobody may run it.
	bin := filepath.Join(dir, "fhirload")
	data, err := os.ReadFile(fhirloadBinary(t))
	must(t, err)
	must(t, os.WriteFile(bin, data, 0o755))

	asNobody := func(args ...string) (int, string) {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Dir = work
		cmd.Env = []string{"HOME=" + work, "PATH=/usr/bin:/bin"}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobodyUID, Gid: nobodyGID}}
		out, _ := cmd.CombinedOutput()
		return cmd.ProcessState.ExitCode(), string(out)
	}
	report := filepath.Join(work, "report.json")
	code, out := asNobody("run", "--config", cfg, "--report", report, in)
	if code != 2 {
		t.Fatalf("exit %d, want 2\n%s", code, out)
	}
	rep := readReport(t, report)
	if rep.Objects != 2 || rep.Lines != 2 || rep.Loaded != 1 || rep.DeadLettered != 1 || rep.UnreadableObjects != 1 || !rep.Reconciles() {
		t.Fatalf("report %+v", rep)
	}
	w := workspace{dir: work, config: cfg}
	entries := w.deadLetters(t)
	if len(entries) != 1 {
		t.Fatalf("dead letters %+v", entries)
	}
	e := entries[0]
	if e.Reason != deadletter.ReasonUnreadableObject || e.Stage != deadletter.StageRead || e.Source.URI != "file://"+secret ||
		!strings.Contains(e.Message, "permission denied") || e.Line != "" || e.Source.Line != 1 {
		t.Fatalf("entry %+v", e)
	}

	// Readable now: replay reads it, and its entry is retired.
	must(t, os.Chmod(secret, 0o644))
	code, out = asNobody("replay", "--config", cfg, "--report", report)
	if code != 0 {
		t.Fatalf("replay exit %d\n%s", code, out)
	}
	if rep := readReport(t, report); rep.Loaded != 2 || rep.Lines != 2 {
		t.Fatalf("replay report %+v", rep)
	}
	if left := w.deadLetters(t); len(left) != 0 {
		t.Fatalf("dead letters left %+v", left)
	}
	st := w.store(t)
	if n := st.count("Patient"); n != 3 {
		t.Fatalf("%d Patients in the store, want 3", n)
	}
}

// TestFileReplacedBetweenListingAndOpen: a file that is a folder by the
// time it is read (a real EISDIR from the kernel, not a canned error), and
// one that is gone, each end as one object-level dead letter.
func TestFileReplacedBetweenListingAndOpen(t *testing.T) {
	w := newWorkspace(t, "", "")
	in := filepath.Join(w.dir, "in")
	must(t, os.Mkdir(in, 0o700))
	for _, n := range []string{"a.ndjson", "b.ndjson", "c.ndjson"} {
		must(t, os.WriteFile(filepath.Join(in, n), []byte(patientLine(strings.TrimSuffix(n, ".ndjson"))+"\n"), 0o600))
	}
	// List first, as `run` does, then change the files under the listing.
	src, err := pipeline.OpenSources(context.Background(), pipeline.SourceEnv{Config: pipeline.Defaults()}, []string{in})
	must(t, err)
	must(t, os.Remove(filepath.Join(in, "b.ndjson")))
	must(t, os.Mkdir(filepath.Join(in, "b.ndjson"), 0o700))
	must(t, os.Remove(filepath.Join(in, "c.ndjson")))

	cfg, err := pipeline.LoadConfig(w.config)
	must(t, err)
	e, err := newEnv(cfg, os.Stderr)
	must(t, err)
	defer e.close()
	dl, wr, err := e.loadStages(context.Background(), nil)
	must(t, err)
	r := pipeline.NewRunner(pipeline.Deps{Config: cfg, Command: "run", RunID: "t", Sink: pipeline.LoaderSink{W: wr}, DeadLetters: dl})
	rep := r.Run(context.Background(), src)
	if !rep.Reconciles() || rep.Lines != 3 || rep.Loaded != 1 || rep.UnreadableObjects != 1 || rep.MissingObjects != 1 || rep.ExitCode() != 2 {
		t.Fatalf("report %+v", rep)
	}
	got := map[string]string{}
	for _, en := range w.deadLetters(t) {
		got[filepath.Base(en.Source.URI)] = string(en.Reason) + ": " + en.Message
	}
	if !strings.HasPrefix(got["b.ndjson"], "unreadable-object: ") || !strings.Contains(got["b.ndjson"], "is a directory") ||
		!strings.HasPrefix(got["c.ndjson"], "missing-object: ") || len(got) != 2 {
		t.Fatalf("dead letters %v", got)
	}
}

// TestS3UnreadableObjects: S3 objects refused to GetObject (a bucket policy
// denying the prefix: AccessDenied; an archived object: InvalidObjectState)
// are dead-lettered like local ones, and replay reads them once readable.
func TestS3UnreadableObjects(t *testing.T) {
	m := newMotoWorld(t)
	ctx := context.Background()
	m.put(t, "in/ok.ndjson", []byte(patientLine("ok1")+"\n"))
	m.put(t, "in/deny/x.ndjson", []byte(patientLine("x1")+"\n"))
	if _, err := m.s3.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(m.bucket), Key: aws.String("in/cold.ndjson"),
		Body: strings.NewReader(patientLine("c1") + "\n"), StorageClass: s3types.StorageClassGlacier}); err != nil {
		t.Fatal(err)
	}
	policy := fmt.Sprintf(`{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::%s/in/deny/*"}]}`, m.bucket)
	if _, err := m.s3.PutBucketPolicy(ctx, &s3.PutBucketPolicyInput{Bucket: aws.String(m.bucket), Policy: aws.String(policy)}); err != nil {
		t.Fatal(err)
	}
	w := newWorkspace(t, "", m.awsYAML())
	code, rep, stderr := w.run(t, "run", "s3://"+m.bucket+"/in/")
	if code != 2 || rep == nil || rep.Loaded != 1 || rep.UnreadableObjects != 2 || rep.DeadLettered != 2 {
		t.Fatalf("exit %d report %+v\n%s", code, rep, stderr)
	}
	msgs := map[string]string{}
	for _, e := range w.deadLetters(t) {
		if e.Reason != deadletter.ReasonUnreadableObject {
			t.Fatalf("entry %+v", e)
		}
		msgs[e.Source.URI] = e.Message
	}
	if !strings.Contains(msgs["s3://"+m.bucket+"/in/deny/x.ndjson"], "403") ||
		!strings.Contains(msgs["s3://"+m.bucket+"/in/cold.ndjson"], "InvalidObjectState") {
		t.Fatalf("messages %v", msgs)
	}
	// Fixed: the policy lifted, the object restored (rewritten in STANDARD).
	if _, err := m.s3.DeleteBucketPolicy(ctx, &s3.DeleteBucketPolicyInput{Bucket: aws.String(m.bucket)}); err != nil {
		t.Fatal(err)
	}
	m.put(t, "in/cold.ndjson", []byte(patientLine("c1")+"\n"))
	code, rep, stderr = w.run(t, "replay")
	if code != 0 || rep.Loaded != 2 {
		t.Fatalf("replay exit %d report %+v\n%s", code, rep, stderr)
	}
	if st := w.store(t); st.count("Patient") != 3 {
		t.Fatalf("%d Patients", st.count("Patient"))
	}
}

// TestWatchReleasesUnreadableObjects: an announced object that cannot be
// read is not dead-lettered by the worker: its message is released for
// redelivery, and the queue's redrive policy moves it to the queue's own DLQ
// after maxReceiveCount, like any poison message. Nothing is deleted.
func TestWatchReleasesUnreadableObjects(t *testing.T) {
	m := newMotoWorld(t)
	ctx := context.Background()
	dlq := m.queue(t, "dlq", false)
	a, err := m.sqs.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: aws.String(dlq), AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameQueueArn}})
	must(t, err)
	q := m.queue(t, "drop", true)
	if _, err := m.sqs.SetQueueAttributes(ctx, &sqs.SetQueueAttributesInput{QueueUrl: aws.String(q), Attributes: map[string]string{
		"RedrivePolicy": fmt.Sprintf(`{"deadLetterTargetArn":%q,"maxReceiveCount":"2"}`, a.Attributes["QueueArn"])}}); err != nil {
		t.Fatal(err)
	}
	policy := fmt.Sprintf(`{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::%s/deny/*"}]}`, m.bucket)
	if _, err := m.s3.PutBucketPolicy(ctx, &s3.PutBucketPolicyInput{Bucket: aws.String(m.bucket), Policy: aws.String(policy)}); err != nil {
		t.Fatal(err)
	}
	w := flowWorkspace(t, "", m.awsYAML()+watchYAML(q, 30*time.Second))
	report := filepath.Join(w.dir, "watch-report.json")
	p := startFhirload(t, w.dir, "watch", "--config", w.config, "--metrics-addr", metricsAddr(t), "--report", report)
	m.put(t, "deny/x.ndjson", []byte(patientLine("x1")+"\n"))
	waitFor(t, time.Minute, func() bool {
		v, f := m.depth(t, dlq)
		return p.exited() || v == "1" || f == "1"
	})
	m.waitDrained(t, q, time.Minute, p)
	if code := p.stop(t); code != 143 {
		t.Fatalf("watch exit %d\n%s", code, p.log())
	}
	rep := readReport(t, report)
	if rep.ReleasedObjects < 2 || rep.DeadLettered != 0 || rep.Lines != 0 || !rep.Reconciles() {
		t.Fatalf("report %+v\n%s", rep, p.log())
	}
	if n := len(w.deadLetters(t)); n != 0 {
		t.Fatalf("%d dead letters, want none", n)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
