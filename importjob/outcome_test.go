package importjob

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fhirload/fhirload/pipeline"
)

// TestOutcomes: how the records of a job's output settle the lines of a
// batch. The batch has one staged object of 4 lines: a.ndjson lines 1, 2,
// 3 and b.ndjson line 7.
func TestOutcomes(t *testing.T) {
	const in = "s3://stage/run/part-000001.ndjson"
	ok := func(n int, status string) string {
		return `{"inputFile":"` + in + `","lineNumber":` + string(rune('0'+n)) + `,"resourceType":"Patient","id":"p","versionId":"1","status":"` + status + `"}`
	}
	rejected := func(n int) string {
		return `{"inputFile":"` + in + `","lineNumber":` + string(rune('0'+n)) + `,"line":"{\"resourceType\":\"Patient\",\"id\":\"p` + string(rune('0'+n)) +
			`\"}","status":"422 Unprocessable Entity","operationOutcome":{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"duplicate"}]}}`
	}
	unreadable := func(n int) string {
		return `{"inputFile":"` + in + `","lineNumber":` + string(rune('0'+n)) + `,"operationOutcome":{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"exception"}]}}`
	}
	type want struct {
		status  pipeline.Status
		created bool
		http    int
		msg     string // part of the message of a failure
	}
	loaded, updated := want{status: pipeline.Loaded, created: true}, want{status: pipeline.Loaded}
	dup := want{status: pipeline.Failed, http: 422, msg: "rejected the line (HTTP 422, issue duplicate)"}
	none := want{status: pipeline.Failed, msg: "reported no outcome"}
	cases := []struct {
		name             string
		success, failure []string
		imported, failed int64 // the job's counters
		a1, a2, a3, b7   want
		unmatched        int64
	}{
		{"each line reported", []string{ok(1, "201 Created"), ok(2, "200 OK"), ok(4, "201 Created")}, []string{rejected(3)}, 3, 1,
			loaded, updated, dup, loaded, 0},
		{"a line without a record is not loaded", []string{ok(1, "201 Created"), ok(4, "201 Created")}, []string{rejected(3)}, 3, 1,
			loaded, none, dup, loaded, 0},
		{"the object unreadable from line 2", []string{ok(1, "201 Created")}, []string{unreadable(2)}, 1, 0,
			loaded, want{status: pipeline.Failed, msg: "could not read the staged object"}, want{status: pipeline.Failed, msg: "from line 2 on"},
			want{status: pipeline.Failed, msg: "could not read"}, 0},
		{"no SUCCESS records: the counters decide", nil, []string{rejected(3)}, 3, 1, updated, updated, dup, updated, 0},
		{"no SUCCESS records, counters off: not loaded", nil, []string{rejected(3)}, 2, 1, none, none, dup, none, 0},
		{"records of other files are counted, not applied", []string{ok(1, "201 Created"), strings.Replace(ok(2, "201 Created"), "part-000001", "part-000009", 1),
			ok(9, "201 Created")}, nil, 1, 0, loaded, none, none, none, 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			b := &batchRecord{Key: "k", Prefix: "s3://stage/run/", Lines: 4, Parts: []partRecord{{Name: "part-000001.ndjson", Lines: 4}},
				Sources: []string{"file:///a.ndjson", "file:///b.ndjson"}}
			var idx []byte
			for _, r := range []struct{ line, src uint32 }{{1, 0}, {2, 0}, {3, 0}, {7, 1}} {
				var rec [idxRecord]byte
				binary.LittleEndian.PutUint32(rec[8:12], r.line)
				binary.LittleEndian.PutUint32(rec[12:16], r.src)
				idx = append(idx, rec[:]...)
			}
			if err := os.WriteFile(filepath.Join(dir, "part-000001.idx"), idx, 0o600); err != nil {
				t.Fatal(err)
			}
			o := newTestOutcomes(t, b, &jobAttempt{JobID: "j1", Imported: c.imported, Failed: c.failed})
			pi := &partIndex{dir: dir, parts: b.Parts, n: -1}
			parts := map[string]int{in: 0}
			for _, group := range []struct {
				recs    []string
				failure bool
			}{{c.success, false}, {c.failure, true}} {
				for _, l := range group.recs {
					var r outputRecord
					if err := json.Unmarshal([]byte(l), &r); err != nil {
						t.Fatal(err)
					}
					if err := o.record(&r, group.failure, parts, pi); err != nil {
						t.Fatal(err)
					}
				}
			}
			if err := o.spillW.Flush(); err != nil {
				t.Fatal(err)
			}
			for _, l := range []struct {
				src  string
				line uint32
				want want
			}{{"file:///a.ndjson", 1, c.a1}, {"file:///a.ndjson", 2, c.a2}, {"file:///a.ndjson", 3, c.a3}, {"file:///b.ndjson", 7, c.b7}} {
				got, err := o.outcome(l.src, l.line)
				if err != nil {
					t.Fatal(err)
				}
				if got.Status != l.want.status || got.Created != l.want.created || got.HTTPStatus != l.want.http ||
					!strings.Contains(got.Message, l.want.msg) || (got.Status == pipeline.Failed && got.Reason != "import-rejected") {
					t.Errorf("%s:%d: %+v, want %+v", l.src, l.line, got, l.want)
				}
			}
			if o.unmatched != c.unmatched {
				t.Errorf("%d unmatched records, want %d", o.unmatched, c.unmatched)
			}
		})
	}
}

func newTestOutcomes(t *testing.T, b *batchRecord, j *jobAttempt) *outcomes {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "spill")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	o := &outcomes{batch: b, job: j, src: map[string]uint32{}, failed: map[uint64]spillRef{},
		reported: make([]bitset, len(b.Sources)), created: make([]bitset, len(b.Sources)), spill: f, spillW: bufio.NewWriter(f)}
	for i, s := range b.Sources {
		o.src[s] = uint32(i)
	}
	return o
}

// TestRejectedLineNamesItsResource: a line rejected before the server
// parsed it (no resourceType in the record) is named from the line.
func TestRejectedLineNamesItsResource(t *testing.T) {
	b := &batchRecord{Key: "k", Prefix: "s3://s/r/", Lines: 1, Parts: []partRecord{{Name: "part-000001.ndjson", Lines: 1}}, Sources: []string{"x"}}
	dir := t.TempDir()
	var rec [idxRecord]byte
	binary.LittleEndian.PutUint32(rec[8:12], 5)
	if err := os.WriteFile(filepath.Join(dir, "part-000001.idx"), rec[:], 0o600); err != nil {
		t.Fatal(err)
	}
	o := newTestOutcomes(t, b, &jobAttempt{JobID: "j"})
	r := outputRecord{InputFile: "s3://s/r/part-000001.ndjson", LineNumber: 1, Status: "503 Service Unavailable"}
	line := `{"resourceType":"Observation","id":"o-1","status":"final"}`
	r.Line = &line
	if err := o.record(&r, true, map[string]int{r.InputFile: 0}, &partIndex{dir: dir, parts: b.Parts, n: -1}); err != nil {
		t.Fatal(err)
	}
	_ = o.spillW.Flush()
	got, err := o.outcome("x", 5)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != pipeline.Failed || got.HTTPStatus != 503 || got.ResourceType != "Observation" || got.ResourceID != "o-1" {
		t.Fatalf("%+v", got)
	}
}

// TestFingerprintIgnoresOrder: the fingerprint of a batch is the same
// whatever the order and grouping its lines arrive in, and differs when a
// line, its source or its line number differ.
func TestFingerprintIgnoresOrder(t *testing.T) {
	type line struct {
		src  string
		no   int64
		body string
	}
	lines := []line{{"a", 1, `{"id":"1"}`}, {"a", 2, `{"id":"2"}`}, {"b", 1, `{"id":"1"}`}, {"b", 2, `{"id":"1"}`}, {"c", 9, `{}`}}
	fp := func(ls []line, groups int) fingerprint {
		var total fingerprint
		var scratch [32]byte
		for g := range groups {
			var part fingerprint
			for i := g; i < len(ls); i += groups {
				part.addDigest(lineDigest(scratch[:], ls[i].src, ls[i].no, []byte(ls[i].body)))
			}
			total.merge(part)
		}
		return total
	}
	want := fp(lines, 1)
	rng := rand.New(rand.NewPCG(1, 2))
	for range 20 {
		sh := append([]line(nil), lines...)
		rng.Shuffle(len(sh), func(i, j int) { sh[i], sh[j] = sh[j], sh[i] })
		if got := fp(sh, 1+rng.IntN(3)); got != want {
			t.Fatalf("order changed the fingerprint: %v, want %v", got, want)
		}
	}
	for i, change := range []func([]line){
		func(l []line) { l[0].body = `{"id":"x"}` },
		func(l []line) { l[1].src = "z" },
		func(l []line) { l[2].no = 3 },
		func(l []line) { l[4] = l[3] }, // a line twice, another missing
	} {
		ch := append([]line(nil), lines...)
		change(ch)
		if fp(ch, 1) == want {
			t.Errorf("change %d kept the fingerprint", i)
		}
	}
	if batchKey("t1", want) == batchKey("t2", want) {
		t.Error("the batch key ignores the target")
	}
}

// TestOneLine: a resource with line breaks between its tokens (a Bundle
// entry pretty-printed) is staged on one line, the same JSON.
func TestOneLine(t *testing.T) {
	in := "{\r\n  \"resourceType\": \"Patient\",\n  \"id\": \"p1\",\n  \"name\": [{\"text\": \"a\\nb\"}]\n}"
	got := oneLine([]byte(in), indexNewline([]byte(in)))
	if strings.ContainsAny(string(got), "\r\n") {
		t.Fatalf("still several lines: %q", got)
	}
	var a, b any
	if json.Unmarshal([]byte(in), &a) != nil || json.Unmarshal(got, &b) != nil {
		t.Fatal("not JSON")
	}
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	if string(ja) != string(jb) {
		t.Errorf("the resource changed: %s, want %s", jb, ja)
	}
}

// TestHTTPStatusAndIssueCode: the short, content-free parts of a failure
// record that go into the dead letter's message.
func TestHTTPStatusAndIssueCode(t *testing.T) {
	for in, want := range map[string]int{"503 Service Unavailable": 503, "201 Created": 201, "": 0, "oops": 0} {
		if got := httpStatus(in); got != want {
			t.Errorf("httpStatus(%q) = %d, want %d", in, got, want)
		}
	}
	for in, want := range map[string]string{
		`{"issue":[{"code":"duplicate","diagnostics":"x"}]}`: "duplicate",
		`{"issue":[{"code":"Jane Doe"}]}`:                    "",
		`{"issue":[]}`:                                       "",
		`not json`:                                           "",
	} {
		if got := issueCode(json.RawMessage(in)); got != want {
			t.Errorf("issueCode(%s) = %q, want %q", in, got, want)
		}
	}
}
