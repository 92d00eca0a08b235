package verify_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/fhirload/fhirload/ingest"
	"github.com/fhirload/fhirload/pipeline"
	"github.com/fhirload/fhirload/verify"
)

// memTarget is an in-memory target: resources by "Type/id"; ids in fail
// cannot be read; fatal, when set, fails every Read.
type memTarget struct {
	mu    sync.Mutex
	res   map[string]string
	fail  map[string]bool
	fatal error
	reads int
}

func (m *memTarget) Read(_ context.Context, refs []verify.Ref) ([]verify.Read, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.reads++
	if m.fatal != nil {
		return nil, m.fatal
	}
	out := make([]verify.Read, len(refs))
	for i, r := range refs {
		key := r.Type + "/" + r.ID
		switch body, ok := m.res[key]; {
		case m.fail[key]:
			out[i] = verify.Read{Failed: true, HTTPStatus: 503, Message: "retries exhausted: HTTP 503", Attempts: 5}
		case ok:
			out[i] = verify.Read{Found: true, Body: []byte(body), HTTPStatus: 200}
		default:
			out[i] = verify.Read{HTTPStatus: 404}
		}
	}
	return out, nil
}

func patient(id, family string) string {
	return fmt.Sprintf(`{"resourceType":"Patient","id":%q,"name":[{"family":%q,"given":["G"]}]}`, id, family)
}

// stored is a resource as a server returns it: meta first.
func stored(line string) string {
	return strings.Replace(line, `"resourceType":"Patient",`, `"resourceType":"Patient","meta":{"versionId":"2","lastUpdated":"2026-11-26T10:00:00.000Z"},`, 1)
}

type memSource struct {
	objs []ingest.Object
	next int
}

func (s *memSource) Next(ctx context.Context) (pipeline.Object, error) {
	if s.next >= len(s.objs) {
		return pipeline.Object{}, io.EOF
	}
	s.next++
	return pipeline.Object{Object: s.objs[s.next-1]}, nil
}

func (s *memSource) Close() error { return nil }

func source(files map[string][]string) *memSource {
	s := &memSource{}
	for _, uri := range []string{"file:///a.ndjson", "file:///b.ndjson"} {
		lines, ok := files[uri]
		if !ok {
			continue
		}
		data := []byte(strings.Join(lines, "\n") + "\n")
		s.objs = append(s.objs, ingest.Object{URI: uri, Size: int64(len(data)), Ack: func(context.Context, error) error { return nil },
			Open: func(context.Context) (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }})
	}
	return s
}

func runVerify(t *testing.T, target verify.Reader, src pipeline.Source, o verify.Options) (*verify.Report, *verify.Sink) {
	t.Helper()
	cfg := pipeline.Defaults()
	cfg.Target.BatchSize, cfg.Target.Concurrency = 3, 4
	sink := verify.NewSink(target, o)
	r := pipeline.NewRunner(pipeline.Deps{Config: cfg, Command: "verify", RunID: "v1", Sink: sink})
	rep := verify.NewReport(r.Run(context.Background(), src), sink)
	if !rep.Reconciles() {
		t.Fatalf("report does not reconcile: %+v", rep)
	}
	return rep, sink
}

// TestVerifyVerdicts: each line gets one verdict; the report's numbers and
// its mismatches (source, line, type, id, kind, paths) agree.
func TestVerifyVerdicts(t *testing.T) {
	a := []string{
		patient("p1", "Same"),                  // 1 matched
		patient("p2", "Changed"),               // 2 different
		patient("p3", "Gone"),                  // 3 missing
		"",                                     // 4 blank
		`{"resourceType":"Patient","id":"p4"}`, // 5 skipped: no name under the seed profile
		patient("p5", "Unread"),                // 6 unreachable
		`{"resourceType":`,                     // 7 skipped: parse
	}
	b := []string{patient("p6", "Same"), patient("p7", "Same")}
	target := &memTarget{res: map[string]string{
		"Patient/p1": stored(a[0]),
		"Patient/p2": stored(patient("p2", "Other")),
		"Patient/p5": stored(a[5]),
		"Patient/p6": stored(b[0]),
		"Patient/p7": stored(strings.Replace(b[1], `"given":["G"]`, `"given":["G"],"gender":"male"`, 1)),
	}, fail: map[string]bool{"Patient/p5": true}}
	rep, sink := runVerify(t, target, source(map[string][]string{"file:///a.ndjson": a, "file:///b.ndjson": b}), verify.Options{})
	if rep.Lines != 9 || rep.SkippedBlank != 1 || rep.Verified != 5 || rep.Matched != 2 || rep.Missing != 1 ||
		rep.Different != 2 || rep.Skipped != 2 || rep.Unreachable != 1 || rep.Unsettled != 0 {
		t.Fatalf("report %+v", rep)
	}
	if rep.SkippedReasons["invalid"] != 1 || rep.SkippedReasons["parse"] != 1 {
		t.Errorf("skipped reasons %v", rep.SkippedReasons)
	}
	want := []verify.Mismatch{
		{Source: "file:///a.ndjson", Line: 2, Type: "Patient", ID: "p2", Kind: "different", Paths: []string{"Patient.name[0].family"}},
		{Source: "file:///a.ndjson", Line: 3, Type: "Patient", ID: "p3", Kind: "missing"},
		{Source: "file:///b.ndjson", Line: 2, Type: "Patient", ID: "p7", Kind: "different", Paths: []string{"Patient.name[0].gender"}},
	}
	if got, _ := json.Marshal(rep.Mismatches); string(got) != string(must(json.Marshal(want))) {
		t.Fatalf("mismatches\n got %s\nwant %s", got, must(json.Marshal(want)))
	}
	if rep.ExitCode() != 1 || !strings.Contains(rep.Incomplete(), "1 resources could not be read back") {
		t.Errorf("exit %d (%s): one resource could not be read, the verification is incomplete", rep.ExitCode(), rep.Incomplete())
	}
	if c := sink.Counts(); c != (verify.Counts{Matched: 2, Missing: 1, Different: 2, Unreachable: 1}) {
		t.Errorf("live counts %+v", c)
	}
	var sum bytes.Buffer
	rep.Summary(&sum)
	for _, s := range []string{"5 verified (2 matched, 1 missing, 2 different), 2 skipped, 1 unreachable",
		"different file:///a.ndjson:2 Patient/p2 at Patient.name[0].family", "missing file:///a.ndjson:3 Patient/p3"} {
		if !strings.Contains(sum.String(), s) {
			t.Errorf("summary lacks %q:\n%s", s, sum.String())
		}
	}
	for _, phi := range []string{"Changed", "Other", "Gone"} {
		if strings.Contains(sum.String(), phi) || strings.Contains(string(must(json.Marshal(rep))), phi) {
			t.Errorf("the value %q appears in the report", phi)
		}
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

func TestVerifyExitCodes(t *testing.T) {
	lines := []string{patient("p1", "A"), patient("p2", "B")}
	cases := []struct {
		name   string
		target map[string]string
		code   int
	}{
		{"all match", map[string]string{"Patient/p1": stored(lines[0]), "Patient/p2": stored(lines[1])}, 0},
		{"one missing", map[string]string{"Patient/p1": stored(lines[0])}, 2},
		{"one different", map[string]string{"Patient/p1": stored(lines[0]), "Patient/p2": stored(patient("p2", "C"))}, 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rep, _ := runVerify(t, &memTarget{res: c.target}, source(map[string][]string{"file:///a.ndjson": lines}), verify.Options{})
			if rep.ExitCode() != c.code {
				t.Fatalf("exit %d, want %d: %+v", rep.ExitCode(), c.code, rep)
			}
		})
	}
}

// TestVerifyFatal: a refused read stops verify: no verdict is made up, the
// lines read stay unsettled and the exit code is 1. (How many of the four
// lines the reader got to before the stop depends on scheduling: the stop
// does not wait for the rest of the object, which stays unacknowledged.)
func TestVerifyFatal(t *testing.T) {
	lines := []string{patient("p1", "A"), patient("p2", "B"), patient("p3", "C"), patient("p4", "D")}
	target := &memTarget{fatal: errors.Join(pipeline.ErrFatal, errors.New("target denied access: HTTP 403"))}
	rep, _ := runVerify(t, target, source(map[string][]string{"file:///a.ndjson": lines}), verify.Options{})
	if rep.Verified != 0 || rep.Lines < 1 || rep.Lines > 4 || rep.Unsettled != rep.Lines || !strings.Contains(rep.Fatal, "403") || rep.ExitCode() != 1 {
		t.Fatalf("report %+v", rep)
	}
}

// TestVerifyMismatchCap: the report keeps the first MaxMismatches
// mismatches by source and line, whatever order the batches finish in, and
// says how many more there were.
func TestVerifyMismatchCap(t *testing.T) {
	var lines []string
	for i := range 50 {
		lines = append(lines, patient(fmt.Sprintf("p%02d", i), "A"))
	}
	for range 3 { // concurrent batches finish in varying order
		rep, _ := runVerify(t, &memTarget{res: map[string]string{}}, source(map[string][]string{"file:///a.ndjson": lines}),
			verify.Options{MaxMismatches: 7})
		if rep.Missing != 50 || len(rep.Mismatches) != 7 || rep.MismatchesOmitted != 43 {
			t.Fatalf("missing %d, listed %d, omitted %d", rep.Missing, len(rep.Mismatches), rep.MismatchesOmitted)
		}
		for i, m := range rep.Mismatches {
			if m.Line != int64(i+1) {
				t.Fatalf("mismatch %d is line %d: want the first lines", i, m.Line)
			}
		}
	}
}

// TestVerifyMetricsAndLog: the Prometheus counters follow the verdicts, and
// the log names each line that did not match with its paths, never a value.
func TestVerifyMetricsAndLog(t *testing.T) {
	lines := []string{patient("p1", "A"), patient("p2", "Secretname"), patient("p3", "C")}
	target := &memTarget{res: map[string]string{"Patient/p1": stored(lines[0]), "Patient/p2": stored(patient("p2", "Othersecret"))}}
	cfg := pipeline.Defaults()
	sink := verify.NewSink(target, verify.Options{})
	reg := prometheus.NewRegistry()
	reg.MustRegister(sink.Collectors()...)
	core, logs := observer.New(zap.InfoLevel)
	r := pipeline.NewRunner(pipeline.Deps{Config: cfg, Command: "verify", Sink: sink, Logger: zap.New(core)})
	rep := verify.NewReport(r.Run(context.Background(), source(map[string][]string{"file:///a.ndjson": lines})), sink)
	if rep.Matched != 1 || rep.Different != 1 || rep.Missing != 1 {
		t.Fatalf("report %+v", rep)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		got[mf.GetName()] = mf.GetMetric()[0].GetCounter().GetValue()
	}
	want := map[string]float64{"fhirload_verify_verified_total": 3, "fhirload_verify_matched_total": 1,
		"fhirload_verify_missing_total": 1, "fhirload_verify_different_total": 1, "fhirload_verify_unreachable_total": 0}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("metrics %v, want %v", got, want)
	}
	var text strings.Builder
	for _, e := range logs.All() {
		text.WriteString(e.Message)
		for k, v := range e.ContextMap() {
			fmt.Fprintf(&text, " %s=%v", k, v)
		}
		text.WriteByte('\n')
	}
	for _, s := range []string{"line=2", "reason=different", "detail=the target holds it differently at Patient.name[0].family", "line=3", "reason=missing"} {
		if !strings.Contains(text.String(), s) {
			t.Errorf("log lacks %q:\n%s", s, text.String())
		}
	}
	if strings.Contains(text.String(), "Secretname") || strings.Contains(text.String(), "Othersecret") || strings.Contains(text.String(), "dead-lettered") {
		t.Errorf("log shows a value or claims a dead letter:\n%s", text.String())
	}
}
