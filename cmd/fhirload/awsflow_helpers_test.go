package main

// Helpers of the S3/SQS and replay end-to-end tests (s3_test.go,
// watch_test.go, replay_test.go): a moto "world" (bucket, queues), fhirload
// processes run from the built binary, and `fhirload serve` as the store the
// tests count in (the binary keeps race-instrumented SQLite out of the test
// process, which makes 16k-resource checks take seconds, not minutes).

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
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
	"github.com/fhirload/fhirload/internal/testlines"
	"github.com/fhirload/fhirload/internal/testutil"

	_ "modernc.org/sqlite" // read-only inspection of a store's versions
)

// flowEnv is the environment of a fhirload process talking to moto: test
// credentials from the standard chain, and checksums only when required
// (emulators do not all speak the newer ones).
var flowEnv = []string{
	"AWS_ACCESS_KEY_ID=testing", "AWS_SECRET_ACCESS_KEY=testing", "AWS_SESSION_TOKEN=",
	"AWS_REGION=us-east-1", "AWS_EC2_METADATA_DISABLED=true", "AWS_PROFILE=",
	"AWS_REQUEST_CHECKSUM_CALCULATION=when_required", "AWS_RESPONSE_CHECKSUM_VALIDATION=when_required",
}

// flowWorkspace is newWorkspace with info logs: a failing test then shows
// what the worker did with each object.
func flowWorkspace(t *testing.T, target, extra string) workspace {
	t.Helper()
	w := newWorkspace(t, target, extra)
	w.edit(t, "log: {level: warn}", "log: {level: info}")
	return w
}

// edit replaces old by new in the workspace's pipeline.yaml.
func (w workspace) edit(t *testing.T, old, new string) {
	t.Helper()
	b, err := os.ReadFile(w.config)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(old)) {
		t.Fatalf("pipeline.yaml has no %q", old)
	}
	if err := os.WriteFile(w.config, bytes.Replace(b, []byte(old), []byte(new), 1), 0o600); err != nil {
		t.Fatal(err)
	}
}

// motoWorld is one test's bucket in moto, with clients.
type motoWorld struct {
	ep     string
	s3     *s3.Client
	sqs    *sqs.Client
	bucket string
}

func newMotoWorld(t *testing.T) *motoWorld {
	t.Helper()
	for _, kv := range flowEnv { // for the commands run in-process
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	return newMotoWorldForProcesses(t)
}

// newMotoWorldForProcesses is newMotoWorld for a test that runs fhirload
// only as processes (with flowEnv): it leaves this process's environment
// alone, so the test may run in parallel.
func newMotoWorldForProcesses(t *testing.T) *motoWorld {
	t.Helper()
	ep := testutil.Moto(t)
	m := &motoWorld{ep: ep, s3: testutil.S3(ep), sqs: testutil.SQS(ep)}
	m.bucket = testutil.Bucket(t, m.s3)
	return m
}

// awsYAML is the pipeline.yaml section that points fhirload at moto.
func (m *motoWorld) awsYAML() string {
	return fmt.Sprintf("aws: {endpoint_url: %q, s3_path_style: true}\n", m.ep)
}

// queue creates a queue; with notify, the bucket's ObjectCreated events go
// to it (moto also sends an s3:TestEvent then).
func (m *motoWorld) queue(t *testing.T, name string, notify bool) string {
	t.Helper()
	ctx := context.Background()
	q, err := m.sqs.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(name + "-" + m.bucket)})
	if err != nil {
		t.Fatal(err)
	}
	if !notify {
		return *q.QueueUrl
	}
	a, err := m.sqs.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: q.QueueUrl,
		AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameQueueArn}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.s3.PutBucketNotificationConfiguration(ctx, &s3.PutBucketNotificationConfigurationInput{
		Bucket: aws.String(m.bucket),
		NotificationConfiguration: &s3types.NotificationConfiguration{QueueConfigurations: []s3types.QueueConfiguration{{
			QueueArn: aws.String(a.Attributes["QueueArn"]), Events: []s3types.Event{"s3:ObjectCreated:*"}}}},
	}); err != nil {
		t.Fatal(err)
	}
	return *q.QueueUrl
}

func (m *motoWorld) put(t *testing.T, key string, body []byte) {
	t.Helper()
	// A bytes.Reader is seekable: PutObject over plain HTTP needs that.
	if _, err := m.s3.PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String(m.bucket),
		Key: aws.String(key), Body: bytes.NewReader(body)}); err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
}

func (m *motoWorld) send(t *testing.T, queue, body string) {
	t.Helper()
	if _, err := m.sqs.SendMessage(context.Background(), &sqs.SendMessageInput{QueueUrl: aws.String(queue),
		MessageBody: aws.String(body)}); err != nil {
		t.Fatal(err)
	}
}

func (m *motoWorld) head(t *testing.T, key string) *s3.HeadObjectOutput {
	t.Helper()
	h, err := m.s3.HeadObject(context.Background(), &s3.HeadObjectInput{Bucket: aws.String(m.bucket), Key: aws.String(key)})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// createdEvent is the native S3 notification of key as it now is (ETag and
// size from HeadObject), the same message S3 sends for a PutObject.
func (m *motoWorld) createdEvent(t *testing.T, key string) string {
	t.Helper()
	h := m.head(t, key)
	rec := map[string]any{"eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
		"eventName": "ObjectCreated:Put",
		"s3": map[string]any{"bucket": map[string]any{"name": m.bucket},
			"object": map[string]any{"key": key, "size": aws.ToInt64(h.ContentLength), "eTag": strings.Trim(aws.ToString(h.ETag), `"`)}}}
	b, _ := json.Marshal(map[string]any{"Records": []any{rec}})
	return string(b)
}

// depth returns the queue's visible and in-flight message counts.
func (m *motoWorld) depth(t *testing.T, queue string) (visible, inFlight string) {
	t.Helper()
	a, err := m.sqs.GetQueueAttributes(context.Background(), &sqs.GetQueueAttributesInput{QueueUrl: aws.String(queue),
		AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameApproximateNumberOfMessages,
			sqstypes.QueueAttributeNameApproximateNumberOfMessagesNotVisible}})
	if err != nil {
		t.Fatal(err)
	}
	return a.Attributes["ApproximateNumberOfMessages"], a.Attributes["ApproximateNumberOfMessagesNotVisible"]
}

// waitDrained waits until the queue holds nothing visible and nothing in
// flight: every message was deleted (acknowledged).
func (m *motoWorld) waitDrained(t *testing.T, queue string, limit time.Duration, procs ...*flProc) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		v, f := m.depth(t, queue)
		if v == "0" && f == "0" {
			return
		}
		if time.Now().After(deadline) {
			var logs strings.Builder
			for _, p := range procs {
				logs.WriteString(p.log())
			}
			t.Fatalf("queue not drained within %v: %s visible, %s in flight\n%s", limit, v, f, logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// flProc is a fhirload process started from the built binary. Its stderr
// goes to a file, so it can be read while the process runs.
type flProc struct {
	cmd     *exec.Cmd
	done    chan struct{}
	errPath string
}

// startFhirload starts the binary in dir; the process is killed at the end
// of the test if still running.
func startFhirload(t *testing.T, dir string, args ...string) *flProc {
	t.Helper()
	return startProcess(t, fhirloadBinary(t), dir, flowEnv, args...)
}

// startProcess starts bin in dir with env added to the environment; its
// stderr and stdout go to a file in dir that can be read while it runs.
func startProcess(t *testing.T, bin, dir string, env []string, args ...string) *flProc {
	t.Helper()
	f, err := os.CreateTemp(dir, "stderr-*.log")
	if err != nil {
		t.Fatal(err)
	}
	p := &flProc{cmd: exec.Command(bin, args...), done: make(chan struct{}), errPath: f.Name()}
	p.cmd.Dir = dir
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if err := p.cmd.Start(); err != nil {
		f.Close()
		t.Fatal(err)
	}
	go func() {
		_ = p.cmd.Wait()
		f.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		if t.Failed() && !p.exited() {
			// A failed test leaves its processes' goroutine stacks in the
			// test log: the way to see where a stall sits.
			p.quit()
			t.Logf("%v at the test's failure:\n%s", p.cmd.Args[1:], p.log())
		}
		_ = p.cmd.Process.Kill()
		<-p.done
	})
	return p
}

// quit sends SIGQUIT (the Go runtime prints every goroutine's stack and
// exits) and waits for it, briefly.
func (p *flProc) quit() {
	_ = p.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
	}
}

func (p *flProc) log() string {
	b, _ := os.ReadFile(p.errPath)
	return string(b)
}

func (p *flProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// wait waits (bounded) for the process to exit and returns its exit code.
func (p *flProc) wait(t *testing.T, limit time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(limit):
		p.quit()
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Fatalf("%v did not exit within %v\n%s", p.cmd.Args[1:], limit, p.log())
	}
	return p.cmd.ProcessState.ExitCode()
}

// stop sends SIGTERM and returns the exit code.
func (p *flProc) stop(t *testing.T) int {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	return p.wait(t, time.Minute)
}

// kill SIGKILLs the process: no handler runs, nothing is flushed.
func (p *flProc) kill(t *testing.T) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// runFhirload runs the binary to its end and returns its exit code and output.
func runFhirload(t *testing.T, dir string, args ...string) (int, string) {
	t.Helper()
	p := startFhirload(t, dir, args...)
	code := p.wait(t, 3*time.Minute)
	return code, p.log()
}

// servedStore is `fhirload serve --auth none` on a data folder.
type servedStore struct {
	*storeClient
	p         *flProc
	addr, dir string
}

// serveStore starts `fhirload serve` on dir (extra flags, e.g. --chaos-500 1)
// and waits until it answers.
func serveStore(t *testing.T, dir string, extra ...string) *servedStore {
	t.Helper()
	port, err := testutil.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return serveStoreAt(t, fmt.Sprintf("127.0.0.1:%d", port), dir, extra...)
}

// serveStoreAt is serveStore on a given address (a restarted server).
func serveStoreAt(t *testing.T, addr, dir string, extra ...string) *servedStore {
	t.Helper()
	args := append([]string{"serve", "--auth", "none", "--addr", addr, "--data", dir}, extra...)
	p := startFhirload(t, filepath.Dir(dir), args...)
	base := "http://" + addr + "/datastore/local/r4/"
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(base + "Patient?_summary=count")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode < 300 || len(extra) > 0 { // a chaos server answers 500 by design
				break
			}
		}
		if p.exited() || time.Now().After(deadline) {
			t.Fatalf("fhirload serve did not start\n%s", p.log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return &servedStore{storeClient: &storeClient{t: t, base: base}, p: p, addr: addr, dir: dir}
}

// close stops the server (it finishes its writes first).
func (s *servedStore) close(t *testing.T) {
	t.Helper()
	if code := s.p.stop(t); code != 0 && code != 143 {
		t.Fatalf("fhirload serve exit %d\n%s", code, s.p.log())
	}
}

// versions pages through all resources of typ with the FHIR search API and
// returns id -> meta.versionId (see storeVersions for a quicker way).
func (s *storeClient) versions(typ string) map[string]string {
	s.t.Helper()
	out := map[string]string{}
	next := s.base + typ + "?_count=100"
	for next != "" {
		resp, err := http.Get(next)
		if err != nil {
			s.t.Fatal(err)
		}
		var b struct {
			Link []struct{ Relation, URL string }
			// Only ids and versions are decoded.
			Entry []struct {
				Resource struct {
					ID   string
					Meta struct{ VersionID string }
				}
			}
		}
		err = json.NewDecoder(resp.Body).Decode(&b)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 {
			s.t.Fatalf("search %s: HTTP %d %v", typ, resp.StatusCode, err)
		}
		next = ""
		for _, l := range b.Link {
			if l.Relation == "next" {
				next = l.URL
			}
		}
		for _, e := range b.Entry {
			out[e.Resource.ID] = e.Resource.Meta.VersionID
		}
	}
	return out
}

// storeVersions reads id -> version of the live resources of typ straight
// from the SQLite file of a store's data folder, read-only. (Paging the FHIR
// search API through 16k resources takes seconds in an instrumented test.)
func storeVersions(t *testing.T, dir, typ string) map[string]int {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "fhirstore.db")+"?mode=ro&_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query("SELECT id, version FROM resources WHERE type = ? AND deleted = 0", typ)
	if err != nil {
		t.Fatalf("store %s: %v", dir, err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var id string
		var v int
		if err := rows.Scan(&id, &v); err != nil {
			t.Fatal(err)
		}
		out[id] = v
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// storeBodies returns every live resource of a store's data folder, by
// "Type/id", read from its SQLite file (read-only).
func storeBodies(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "fhirstore.db")+"?mode=ro&_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query("SELECT type, id, body FROM resources WHERE deleted = 0")
	if err != nil {
		t.Fatalf("store %s: %v", dir, err)
	}
	defer rows.Close()
	out := map[string][]byte{}
	for rows.Next() {
		var typ, id string
		var body []byte
		if err := rows.Scan(&typ, &id, &body); err != nil {
			t.Fatal(err)
		}
		out[typ+"/"+id] = body
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// versionHistogram counts the live resources of typ by version.
func versionHistogram(t *testing.T, dir, typ string) map[int]int {
	t.Helper()
	h := map[int]int{}
	for _, v := range storeVersions(t, dir, typ) {
		h[v]++
	}
	return h
}

// wantAllVersion1 checks that the store holds exactly n resources of typ,
// each written once.
func wantAllVersion1(t *testing.T, dir, typ string, n int) {
	t.Helper()
	if got := versionHistogram(t, dir, typ); len(got) != 1 || got[1] != n {
		t.Errorf("%s by version %v, want %d at version 1", typ, got, n)
	}
}

// sampleData is the shared Synthea sample, decompressed.
type sampleData struct {
	patients, observations [][]byte // one resource per line, without newline
}

// absPath makes a test data path usable from a process run in a workspace.
func absPath(t *testing.T, p string) string {
	t.Helper()
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func loadSample(t *testing.T) sampleData {
	t.Helper()
	return sampleData{patients: testlines.All(t, samplePatients), observations: testlines.All(t, sampleObservations)}
}

func joinLines(lines [][]byte) []byte {
	return append(bytes.Join(lines, []byte("\n")), '\n')
}

func gzipBytes(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// deadLetters lists the workspace's dead-letter store through
// `fhirload deadletter ls --json` (in-process: it is quick).
func (w workspace) deadLetters(t *testing.T, extra ...string) []deadletter.Entry {
	t.Helper()
	var out, errb bytes.Buffer
	args := append([]string{"deadletter", "ls", "--config", w.config, "--json"}, extra...)
	if code := realMain(args, &out, &errb); code != 0 {
		t.Fatalf("deadletter ls: exit %d\n%s", code, errb.String())
	}
	var entries []deadletter.Entry
	dec := json.NewDecoder(&out)
	for {
		var e deadletter.Entry
		if err := dec.Decode(&e); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("deadletter ls --json: %v", err)
		}
		entries = append(entries, e)
	}
	return entries
}

// deadLetterCounts is the per-reason table at the top of `fhirload
// deadletter ls` (run from the binary: stores of 16k entries are listed in a
// fraction of the time an instrumented decode takes), with "total".
func (w workspace) deadLetterCounts(t *testing.T) map[string]int {
	t.Helper()
	code, out := runFhirload(t, w.dir, "deadletter", "ls", "--config", w.config)
	if code != 0 {
		t.Fatalf("deadletter ls: exit %d\n%s", code, tail(out))
	}
	counts := map[string]int{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 || f[0] == "REASON" {
			continue
		}
		n, err := strconv.Atoi(f[1])
		if err != nil {
			t.Fatalf("deadletter ls: %q", sc.Text())
		}
		counts[f[0]] = n
		if f[0] == "total" {
			return counts
		}
	}
	t.Fatalf("deadletter ls printed no total:\n%s", tail(out))
	return nil
}

// reasons counts entries by reason.
func reasons(entries []deadletter.Entry) map[string]int {
	m := map[string]int{}
	for _, e := range entries {
		m[string(e.Reason)]++
	}
	return m
}
