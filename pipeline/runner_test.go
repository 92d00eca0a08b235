package pipeline_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fhirload/fhirload/deadletter"
	"github.com/fhirload/fhirload/ingest"
	"github.com/fhirload/fhirload/pipeline"
	"github.com/fhirload/fhirload/transform"
)

func testConfig() pipeline.Config {
	cfg := pipeline.Defaults()
	cfg.Target.BatchSize = 3 // several batches per object
	cfg.Target.Concurrency = 4
	return cfg
}

func gz(b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	_, _ = w.Write(b)
	_ = w.Close()
	return buf.Bytes()
}

// TestRunnerOutcomes is the runner's contract, one outcome class per row:
// every line read ends loaded, dead-lettered (stored before it counts) or —
// only when the run stops — unsettled; each object is acknowledged exactly
// once, with nil only when every line of it has a final outcome.
func TestRunnerOutcomes(t *testing.T) {
	loadAll := func(pipeline.Item) (pipeline.Outcome, error) {
		return pipeline.Outcome{Status: pipeline.Loaded, Created: true}, nil
	}
	rejectP3 := func(it pipeline.Item) (pipeline.Outcome, error) {
		if it.ID == "p3" {
			return pipeline.Outcome{Status: pipeline.Failed, Reason: deadletter.ReasonRejected, HTTPStatus: 400,
				OperationOutcome: []byte(`{"resourceType":"OperationOutcome"}`), Message: "400 invalid", Attempts: 1}, nil
		}
		return loadAll(it)
	}
	refused := errors.Join(pipeline.ErrFatal, errors.New("403 forbidden"))
	fatalAtP7 := func(it pipeline.Item) (pipeline.Outcome, error) {
		if it.ID == "p7" {
			return pipeline.Outcome{}, refused
		}
		return loadAll(it)
	}
	gzipped := gz(ndjson(6))
	tests := []struct {
		name      string
		obj       memObject
		decide    func(pipeline.Item) (pipeline.Outcome, error)
		dlFail    int // dead-letter store fails past this many entries
		lines     int64
		linesMin  int64 // a fatal stop may end reading before lines: lines read in [linesMin, lines], the rest of them unsettled
		loaded    int64
		dead      map[string]int
		blank     int64
		unsettled int64
		fatal     bool
		ackErr    bool // the object is acked with an error (not done)
	}{
		{name: "all loaded", obj: memObject{uri: "a", data: ndjson(10)}, lines: 10, loaded: 10},
		{name: "invalid lines dead-lettered", obj: memObject{uri: "a", data: ndjson(10, 2, 9)},
			lines: 10, loaded: 8, dead: map[string]int{"invalid": 2}},
		{name: "not JSON", obj: memObject{uri: "a", data: []byte(patient("p1") + "\n{not json\n")},
			lines: 2, loaded: 1, dead: map[string]int{"parse": 1}},
		{name: "rejected by the sink", obj: memObject{uri: "a", data: ndjson(5)}, decide: rejectP3,
			lines: 5, loaded: 4, dead: map[string]int{"rejected": 1}},
		{name: "blank lines", obj: memObject{uri: "a", data: []byte("\n" + patient("p1") + "\n  \n\r\n")},
			lines: 4, loaded: 1, blank: 3},
		{name: "line too long", obj: memObject{uri: "a", data: []byte(patient("p1") + "\n" + strings.Repeat("x", 2000) + "\n")},
			lines: 2, loaded: 1, dead: map[string]int{"parse": 1}},
		{name: "gzip", obj: memObject{uri: "a.gz", data: gzipped}, lines: 6, loaded: 6},
		{name: "gzip cut short", obj: memObject{uri: "a.gz", data: gzipped[:len(gzipped)-6]}, // the lines, no trailer
			lines: 7, loaded: 6, dead: map[string]int{"unreadable-object": 1}},
		{name: "open fails", obj: memObject{uri: "a", openErr: fmt.Errorf("%w: open a: permission denied", ingest.ErrUnreadable)},
			lines: 1, dead: map[string]int{"unreadable-object": 1}},
		{name: "missing", obj: memObject{uri: "a", openErr: fmt.Errorf("%w: gone", ingest.ErrMissingObject)},
			lines: 1, dead: map[string]int{"missing-object": 1}},
		{name: "reader fails at its first read", obj: memObject{uri: "a", data: ndjson(3), failAt: 0, failErr: errors.New("is a directory")},
			lines: 1, dead: map[string]int{"unreadable-object": 1}},
		{name: "read fails midway", obj: memObject{uri: "a", data: ndjson(10), failAt: len(patient("p1")+"\n") * 4, failErr: errors.New("input/output error")},
			lines: 5, loaded: 4, dead: map[string]int{"unreadable-object": 1}},
		{name: "read fails midway, source redelivers", obj: memObject{uri: "a", data: ndjson(10), redelivers: true,
			failAt: len(patient("p1")+"\n") * 4, failErr: errors.New("input/output error")},
			lines: 4, loaded: 4, ackErr: true},
		{name: "credentials refused", obj: memObject{uri: "a", openErr: fmt.Errorf("%w: ExpiredToken", ingest.ErrCredentials)},
			fatal: true, ackErr: true},
		{name: "sink fatal", obj: memObject{uri: "a", data: ndjson(9)}, decide: fatalAtP7,
			lines: 9, linesMin: 7, loaded: 6, unsettled: 3, fatal: true, ackErr: true},
		{name: "dead-letter store full", obj: memObject{uri: "a", data: ndjson(9, 1, 2, 3, 4, 5, 6, 7, 8, 9)}, dlFail: 4,
			lines: 9, linesMin: 4, dead: map[string]int{"invalid": 3}, unsettled: 6, fatal: true, ackErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var a acks
			sink := &memSink{decide: tt.decide}
			dl := &memDeadLetters{failAfter: tt.dlFail}
			cfg := testConfig()
			cfg.Source.MaxLineBytes = 1024
			cfg.Target.Concurrency = 1 // batches in order: the counts of the fatal rows are exact
			r := pipeline.NewRunner(pipeline.Deps{Config: cfg, Command: "run", RunID: "t", Sink: sink, DeadLetters: dl})
			src := newSource(&a, tt.obj)
			rep := r.Run(context.Background(), src)
			checkReconciles(t, rep)
			if tt.linesMin > 0 && rep.Lines >= tt.linesMin && rep.Lines < tt.lines {
				// The stop came before the reader had read every line (a
				// batch cut by its linger on a busy machine): the lines it
				// did not read are not counted, and so not unsettled either.
				tt.unsettled -= tt.lines - rep.Lines
				tt.lines = rep.Lines
			}
			if rep.Lines != tt.lines || rep.Loaded != tt.loaded || rep.SkippedBlank != tt.blank || rep.Unsettled != tt.unsettled {
				t.Errorf("lines %d loaded %d blank %d unsettled %d, want %d %d %d %d",
					rep.Lines, rep.Loaded, rep.SkippedBlank, rep.Unsettled, tt.lines, tt.loaded, tt.blank, tt.unsettled)
			}
			got := dl.byReason()
			if fmt.Sprint(got) != fmt.Sprint(tt.dead) && !(len(got) == 0 && len(tt.dead) == 0) {
				t.Errorf("dead letters %v, want %v", got, tt.dead)
			}
			// Counted dead letters are exactly the stored ones.
			if rep.DeadLettered != int64(len(dl.entries)) {
				t.Errorf("report says %d dead-lettered, the store holds %d", rep.DeadLettered, len(dl.entries))
			}
			if (rep.Fatal != "") != tt.fatal {
				t.Errorf("fatal %q, want fatal=%v", rep.Fatal, tt.fatal)
			}
			calls := a.of(tt.obj.uri)
			if len(calls) != 1 {
				t.Fatalf("object acked %d times, want exactly once", len(calls))
			}
			if (calls[0] != nil) != tt.ackErr {
				t.Errorf("acked with %v, want error=%v", calls[0], tt.ackErr)
			}
			wantExit := 0
			switch {
			case tt.fatal:
				wantExit = 1
			case rep.DeadLettered > 0:
				wantExit = 2
			}
			if rep.ExitCode() != wantExit {
				t.Errorf("exit %d, want %d", rep.ExitCode(), wantExit)
			}
			if !src.closed {
				t.Error("source not closed")
			}
		})
	}
}

// TestRunnerDeadLetterEntries checks what an entry carries: the verbatim
// line, where it came from, why, and no value of the line in the message.
func TestRunnerDeadLetterEntries(t *testing.T) {
	var a acks
	dl := &memDeadLetters{}
	line := `{"resourceType":"Patient","id":"p2","name":[{"family":"Secret","given":["G"]}],"birthDate":"1970-13-01"}`
	data := []byte(patient("p1") + "\n" + line + "\n")
	r := pipeline.NewRunner(pipeline.Deps{Config: testConfig(), RunID: "run-1", Sink: &memSink{}, DeadLetters: dl})
	rep := r.Run(context.Background(), newSource(&a, memObject{uri: "file:///in/a.ndjson", data: data}))
	if rep.DeadLettered != 1 || len(dl.entries) != 1 {
		t.Fatalf("dead-lettered %d, stored %d", rep.DeadLettered, len(dl.entries))
	}
	e := dl.entries[0]
	if e.Line != line || e.Source.URI != "file:///in/a.ndjson" || e.Source.Line != 2 || e.Source.ETag != "e1" ||
		e.Source.Offset != int64(len(patient("p1"))+1) || e.Reason != deadletter.ReasonInvalid ||
		e.Stage != deadletter.StageTransform || e.RunID != "run-1" || e.Attempts != 1 || e.FirstFailed.IsZero() {
		t.Errorf("entry %+v", e)
	}
	if strings.Contains(e.Message, "1970") || strings.Contains(e.Message, "Secret") || !strings.Contains(e.Message, "birthDate") {
		t.Errorf("message %q: want the location, never the value", e.Message)
	}
	if rep.DeadLetterLocations["invalid Patient.birthDate"] != 1 {
		t.Errorf("locations %v", rep.DeadLetterLocations)
	}
}

// TestRunnerZeroConfig: a Runner made from a zero Config works with the
// defaults (it used to deadlock on errgroup.SetLimit(0)).
func TestRunnerZeroConfig(t *testing.T) {
	var a acks
	r := pipeline.NewRunner(pipeline.Deps{Sink: &memSink{}, DeadLetters: &memDeadLetters{}})
	done := make(chan *pipeline.Report, 1)
	go func() { done <- r.Run(context.Background(), newSource(&a, memObject{uri: "a", data: ndjson(250)})) }()
	select {
	case rep := <-done:
		if rep.Loaded != 250 {
			t.Fatalf("loaded %d", rep.Loaded)
		}
	case <-time.After(time.Minute):
		t.Fatal("a zero-config runner did not finish")
	}
}

// TestRunnerCSVHeader: the header of a CSV object is neither counted nor
// loaded, and every batch (not only the first) maps with it.
func TestRunnerCSVHeader(t *testing.T) {
	mapping := t.TempDir() + "/m.yaml"
	writeFile(t, mapping, `resources:
  - type: Patient
    match: {file: "*.csv", columns: [ID]}
    key: [ID]
    id: ID
    elements:
      - {path: "name[0].family", field: LAST}
      - {path: "name[0].given[0]", field: FIRST}
`)
	tr, err := transform.New(transform.Options{Format: "csv", Mapping: mapping})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	b.WriteString("ID,FIRST,LAST\n")
	for i := 1; i <= 8; i++ {
		fmt.Fprintf(&b, "p%d,G,F\n", i)
	}
	b.WriteString("p9,G\n") // wrong number of fields
	cfg := testConfig()
	cfg.Source.Format = "csv"
	cfg.Transform.Mapping = mapping
	var a acks
	sink, dl := &memSink{}, &memDeadLetters{}
	r := pipeline.NewRunner(pipeline.Deps{Config: cfg, Transformer: tr, Sink: sink, DeadLetters: dl})
	rep := r.Run(context.Background(), newSource(&a, memObject{uri: "file:///in/patients.csv", data: []byte(b.String())}))
	checkReconciles(t, rep)
	if rep.Lines != 9 || rep.Loaded != 8 || rep.DeadLettered != 1 || len(sink.written) != 8 {
		t.Fatalf("lines %d loaded %d dead %d written %d", rep.Lines, rep.Loaded, rep.DeadLettered, len(sink.written))
	}
	e := dl.entries[0]
	if e.Source.Header != "ID,FIRST,LAST" || e.Source.Line != 10 || !strings.Contains(e.Message, "record 9") {
		t.Errorf("entry: header %q line %d message %q", e.Source.Header, e.Source.Line, e.Message)
	}
}

// orderedSink completes the first batches in the reverse of the order they
// arrive (batch i < 3 waits until batch i+1 is done), and records which
// lines (ids p1…) are done.
type orderedSink struct {
	mu   sync.Mutex
	done map[int]chan struct{} // batch number -> closed when it is done
	n    int
	ids  map[string]bool
}

func (s *orderedSink) batch(i int) chan struct{} {
	if s.done[i] == nil {
		s.done[i] = make(chan struct{})
	}
	return s.done[i]
}

func (s *orderedSink) Write(ctx context.Context, items []pipeline.Item) ([]pipeline.Outcome, error) {
	s.mu.Lock()
	if s.done == nil {
		s.done, s.ids = map[int]chan struct{}{}, map[string]bool{}
	}
	i := s.n
	s.n++
	mine, next := s.batch(i), s.batch(i+1)
	s.mu.Unlock()
	if i < 3 {
		select {
		case <-next:
		case <-ctx.Done():
		}
	}
	out := make([]pipeline.Outcome, len(items))
	s.mu.Lock()
	for j, it := range items {
		out[j] = pipeline.Outcome{Status: pipeline.Loaded}
		s.ids[it.ID] = true
	}
	s.mu.Unlock()
	close(mine)
	return out, nil
}

// TestRunnerOutOfOrderCheckpoints: batches finish out of order; a mid-object
// checkpoint only ever covers a prefix of lines that all have outcomes.
func TestRunnerOutOfOrderCheckpoints(t *testing.T) {
	cfg := testConfig()
	cfg.Target.BatchSize = 1
	cfg.Target.Concurrency = 8
	sink := &orderedSink{}
	cps := &memCheckpoints{onPut: func(cp ingest.Checkpoint) error {
		sink.mu.Lock()
		defer sink.mu.Unlock()
		for l := int64(1); l <= cp.Line; l++ {
			if !sink.ids[fmt.Sprintf("p%d", l)] {
				return fmt.Errorf("checkpoint at line %d before line %d has an outcome", cp.Line, l)
			}
		}
		return nil
	}}
	var a acks
	r := pipeline.NewRunner(pipeline.Deps{Config: cfg, Sink: sink, DeadLetters: &memDeadLetters{}, Checkpoints: cps})
	rep := r.Run(context.Background(), newSource(&a, memObject{uri: "a", data: ndjson(45)}))
	checkReconciles(t, rep)
	if rep.Loaded != 45 || rep.Fatal != "" {
		t.Fatalf("loaded %d fatal %q", rep.Loaded, rep.Fatal)
	}
	if len(cps.puts) == 0 || cps.puts[len(cps.puts)-1] != "a@e1@done" {
		t.Fatalf("checkpoints %q: want the last one done", cps.puts)
	}
}

// TestRunnerCheckpointDoneFails: the object is not acknowledged as done
// when its done checkpoint cannot be written, and the run stops.
func TestRunnerCheckpointDoneFails(t *testing.T) {
	cps := &memCheckpoints{failPut: errDiskFull}
	var a acks
	r := pipeline.NewRunner(pipeline.Deps{Config: testConfig(), Sink: &memSink{}, DeadLetters: &memDeadLetters{}, Checkpoints: cps})
	rep := r.Run(context.Background(), newSource(&a, memObject{uri: "a", data: ndjson(2)}))
	if rep.Fatal == "" || rep.ExitCode() != 1 {
		t.Fatalf("fatal %q exit %d", rep.Fatal, rep.ExitCode())
	}
	if calls := a.of("a"); len(calls) != 1 || calls[0] == nil {
		t.Fatalf("acks %v: want one, with an error", calls)
	}
}

// TestRunnerCheckpointReadFails: an object whose checkpoint cannot be read
// is not read either: it is released (acked with the error) for its source
// to bring again, and counted as released.
func TestRunnerCheckpointReadFails(t *testing.T) {
	cps := &memCheckpoints{failGet: errors.New("checkpoint bucket: 503 SlowDown")}
	var a acks
	r := pipeline.NewRunner(pipeline.Deps{Config: testConfig(), Sink: &memSink{}, DeadLetters: &memDeadLetters{}, Checkpoints: cps})
	rep := r.Run(context.Background(), newSource(&a, memObject{uri: "a", data: ndjson(2), redelivers: true}))
	checkReconciles(t, rep)
	if rep.Lines != 0 || rep.ReleasedObjects != 1 {
		t.Fatalf("lines %d released %d", rep.Lines, rep.ReleasedObjects)
	}
	if calls := a.of("a"); len(calls) != 1 || calls[0] == nil {
		t.Fatalf("acks %v: want one, with an error", calls)
	}
}

// TestRunnerSkipsDoneObjects: a checkpointed object is acked without being
// read, and does not count as lines.
func TestRunnerSkipsDoneObjects(t *testing.T) {
	cps := &memCheckpoints{m: map[string]ingest.Checkpoint{"a@e1": {Done: true}, "b@e1": {Line: 2}}}
	var a acks
	sink := &memSink{}
	r := pipeline.NewRunner(pipeline.Deps{Config: testConfig(), Sink: sink, DeadLetters: &memDeadLetters{}, Checkpoints: cps})
	rep := r.Run(context.Background(), newSource(&a, memObject{uri: "a", data: ndjson(3)}, memObject{uri: "b", data: ndjson(3)}))
	checkReconciles(t, rep)
	if rep.SkippedObjects != 1 || rep.Lines != 1 || sink.written["p3"] != 1 || sink.written["p1"] != 0 {
		t.Fatalf("skipped %d lines %d written %v", rep.SkippedObjects, rep.Lines, sink.written)
	}
	if len(a.of("a")) != 1 || a.of("a")[0] != nil || len(a.of("b")) != 1 || a.of("b")[0] != nil {
		t.Fatalf("acks a %v b %v", a.of("a"), a.of("b"))
	}
}

// TestRunnerReplay: replayed entries that load now are retired, those that
// fail again are replaced with one more attempt and the new reason; nothing
// new is appended.
func TestRunnerReplay(t *testing.T) {
	entry := func(id, line string) deadletter.Entry {
		return deadletter.Entry{ID: id, Reason: deadletter.ReasonRetriesExhausted, Stage: deadletter.StageLoad,
			Source: deadletter.Source{URI: "file:///in/a.ndjson", Line: 7}, Line: line, Attempts: 1}
	}
	entries := []deadletter.Entry{
		entry("d1", patient("p1")),
		entry("d2", `{"resourceType":"Patient","id":"p2"}`), // no name: invalid under seed
		entry("d3", patient("p3")),
		{ID: "d4", Reason: deadletter.ReasonParse, Stage: deadletter.StageRead, LineTruncated: true, Line: "{", Attempts: 2,
			Source: deadletter.Source{URI: "file:///in/a.ndjson", Line: 9}},
	}
	dl := &memDeadLetters{}
	sink := &memSink{}
	r := pipeline.NewRunner(pipeline.Deps{Config: testConfig(), Command: "replay", Sink: sink, DeadLetters: dl, Replay: dl})
	rep := r.Run(context.Background(), pipeline.NewReplaySource(entries, 2, nil))
	checkReconciles(t, rep)
	if rep.Lines != 4 || rep.Loaded != 2 || rep.DeadLettered != 2 || len(dl.entries) != 0 {
		t.Fatalf("lines %d loaded %d dead %d appended %d", rep.Lines, rep.Loaded, rep.DeadLettered, len(dl.entries))
	}
	if fmt.Sprint(sortedStrings(dl.retired)) != "[d1 d3]" {
		t.Errorf("retired %v", dl.retired)
	}
	byID := map[string]deadletter.Entry{}
	for _, e := range dl.replaced {
		byID[e.ID] = e
	}
	if e := byID["d2"]; e.Reason != deadletter.ReasonInvalid || e.Attempts != 2 || e.Source.Line != 7 {
		t.Errorf("d2 replaced as %+v", e)
	}
	if e := byID["d4"]; e.Reason != deadletter.ReasonParse || e.Attempts != 3 {
		t.Errorf("d4 replaced as %+v", e)
	}
}

// TestRunnerDeferred: items a DeferredSink holds keep their object
// unacknowledged until Flush settles them; the failures are dead-lettered
// with their verbatim line, read again from the object.
func TestRunnerDeferred(t *testing.T) {
	sink := &memSink{
		decide: func(pipeline.Item) (pipeline.Outcome, error) { return pipeline.Outcome{Status: pipeline.Deferred}, nil },
		settle: func(it pipeline.Item) pipeline.Outcome {
			if it.ID == "p4" || it.ID == "p11" {
				return pipeline.Outcome{Status: pipeline.Failed, Reason: deadletter.ReasonImportRejected, Message: "rejected by the import job",
					ResourceType: it.Type, ResourceID: it.ID}
			}
			return pipeline.Outcome{Status: pipeline.Loaded, Created: true}
		},
	}
	var a acks
	dl := &memDeadLetters{}
	cfg := testConfig()
	r := pipeline.NewRunner(pipeline.Deps{Config: cfg, Sink: deferredSink{sink}, DeadLetters: dl})
	rep := r.Run(context.Background(), newSource(&a, memObject{uri: "a", data: ndjson(6)}, memObject{uri: "b", data: ndjson(12, 2)}))
	checkReconciles(t, rep)
	if !sink.flushed || rep.Loaded != 14 || rep.DeadLettered != 4 {
		t.Fatalf("flushed %v loaded %d dead %d", sink.flushed, rep.Loaded, rep.DeadLettered)
	}
	got := map[string]string{}
	for _, e := range dl.entries {
		got[fmt.Sprintf("%s:%d", e.Source.URI, e.Source.Line)] = string(e.Reason)
		if e.Reason == deadletter.ReasonImportRejected && e.Line != patient(fmt.Sprintf("p%d", e.Source.Line)) {
			t.Errorf("line %d kept as %q", e.Source.Line, e.Line)
		}
		// The sink named the resource: the entry says which it is.
		if id := fmt.Sprintf("p%d", e.Source.Line); e.Reason == deadletter.ReasonImportRejected && (e.ResourceType != "Patient" || e.ResourceID != id) {
			t.Errorf("line %d: entry names %s/%s, want Patient/%s", e.Source.Line, e.ResourceType, e.ResourceID, id)
		}
	}
	want := map[string]string{"a:4": "import-rejected", "b:4": "import-rejected", "b:11": "import-rejected", "b:2": "invalid"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("dead letters %v, want %v", got, want)
	}
	for _, u := range []string{"a", "b"} {
		if calls := a.of(u); len(calls) != 1 || calls[0] != nil {
			t.Errorf("%s acked %v", u, calls)
		}
	}
}

// TestRunnerStopWithDeferredItems: a run stopped while a DeferredSink holds
// items of an object it had not finished reading counts those items
// unsettled (the sink is not flushed, the object not acknowledged as done):
// the report reconciles.
func TestRunnerStopWithDeferredItems(t *testing.T) {
	var r *pipeline.Runner
	var once sync.Once
	sink := &memSink{decide: func(it pipeline.Item) (pipeline.Outcome, error) {
		once.Do(func() { r.Stop() })
		return pipeline.Outcome{Status: pipeline.Deferred}, nil
	}}
	var a acks
	cfg := testConfig()
	cfg.Target.Concurrency = 1
	r = pipeline.NewRunner(pipeline.Deps{Config: cfg, Sink: deferredSink{sink}, DeadLetters: &memDeadLetters{}})
	rep := r.Run(context.Background(), newSource(&a, memObject{uri: "a", data: ndjson(3000)}))
	checkReconciles(t, rep)
	if !rep.Interrupted || rep.Lines == 0 || rep.Lines >= 3000 || rep.Loaded != 0 || rep.Unsettled != rep.Lines || sink.flushed {
		t.Fatalf("interrupted %v lines %d loaded %d unsettled %d flushed %v", rep.Interrupted, rep.Lines, rep.Loaded, rep.Unsettled, sink.flushed)
	}
	if calls := a.of("a"); len(calls) != 1 || calls[0] == nil {
		t.Fatalf("acks %v: want one, with an error", calls)
	}
}

// TestRunnerStopDrains: Stop finishes the lines already read and leaves the
// rest unread: nothing is unsettled, the object is not acknowledged as done.
func TestRunnerStopDrains(t *testing.T) {
	var r *pipeline.Runner
	var once sync.Once
	sink := &memSink{decide: func(it pipeline.Item) (pipeline.Outcome, error) {
		once.Do(func() { r.Stop() })
		return pipeline.Outcome{Status: pipeline.Loaded}, nil
	}}
	var a acks
	cfg := testConfig()
	cfg.Target.Concurrency = 1
	r = pipeline.NewRunner(pipeline.Deps{Config: cfg, Sink: sink, DeadLetters: &memDeadLetters{}})
	rep := r.Run(context.Background(), newSource(&a, memObject{uri: "a", data: ndjson(3000)}))
	checkReconciles(t, rep)
	if !rep.Interrupted || rep.Unsettled != 0 || rep.Lines >= 3000 || rep.Loaded != rep.Lines {
		t.Fatalf("interrupted %v unsettled %d lines %d loaded %d", rep.Interrupted, rep.Unsettled, rep.Lines, rep.Loaded)
	}
	if calls := a.of("a"); len(calls) != 1 || calls[0] == nil {
		t.Fatalf("acks %v: want one, with an error", calls)
	}
}

// TestRunnerSourceError: a source that fails (a listing refused) stops the
// run with a fatal error; what was in flight is acknowledged once.
func TestRunnerSourceError(t *testing.T) {
	var a acks
	src := &failingSource{memSource: newSource(&a, memObject{uri: "a", data: ndjson(2)}), err: errors.New("list s3://b/: AccessDenied")}
	r := pipeline.NewRunner(pipeline.Deps{Config: testConfig(), Sink: &memSink{}, DeadLetters: &memDeadLetters{}})
	rep := r.Run(context.Background(), src)
	checkReconciles(t, rep)
	if !strings.Contains(rep.Fatal, "AccessDenied") || rep.ExitCode() != 1 {
		t.Fatalf("fatal %q exit %d", rep.Fatal, rep.ExitCode())
	}
	if calls := a.of("a"); len(calls) != 1 {
		t.Fatalf("acks %v", calls)
	}
}

type failingSource struct {
	*memSource
	err error
}

func (f *failingSource) Next(ctx context.Context) (pipeline.Object, error) {
	o, err := f.memSource.Next(ctx)
	if err != nil {
		return o, f.err
	}
	return o, nil
}

func sortedStrings(s []string) []string {
	out := append([]string(nil), s...)
	slices.Sort(out)
	return out
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestRunnerItemsCarryTheirLine: every Item handed to the sink names the
// source and line it came from (a replayed line: its original source), so
// that a sink can report per line (verify's mismatches).
func TestRunnerItemsCarryTheirLine(t *testing.T) {
	var a acks
	var mu sync.Mutex
	seen := map[string]string{} // id -> source:line
	sink := &memSink{decide: func(it pipeline.Item) (pipeline.Outcome, error) {
		mu.Lock()
		seen[it.ID] = fmt.Sprintf("%s:%d", it.Source, it.Line)
		mu.Unlock()
		return pipeline.Outcome{Status: pipeline.Loaded}, nil
	}}
	data := []byte(patient("p1") + "\n\n" + `{"resourceType":"Patient"}` + "\n" + patient("p2") + "\n" + patient("p3") + "\n")
	r := pipeline.NewRunner(pipeline.Deps{Config: testConfig(), Sink: sink})
	rep := r.Run(context.Background(), newSource(&a, memObject{uri: "file:///in/a.ndjson", data: data}))
	checkReconciles(t, rep)
	want := map[string]string{"p1": "file:///in/a.ndjson:1", "p2": "file:///in/a.ndjson:4", "p3": "file:///in/a.ndjson:5"}
	if fmt.Sprint(seen) != fmt.Sprint(want) {
		t.Fatalf("items came from %v, want %v", seen, want)
	}

	entries := []deadletter.Entry{{ID: "d1", Reason: deadletter.ReasonRetriesExhausted, Stage: deadletter.StageLoad,
		Source: deadletter.Source{URI: "s3://b/k.ndjson", Line: 41}, Line: patient("p9"), Attempts: 1}}
	dl := &memDeadLetters{}
	r = pipeline.NewRunner(pipeline.Deps{Config: testConfig(), Command: "replay", Sink: sink, DeadLetters: dl, Replay: dl})
	r.Run(context.Background(), pipeline.NewReplaySource(entries, 2, nil))
	if seen["p9"] != "s3://b/k.ndjson:41" {
		t.Fatalf("replayed item came from %q", seen["p9"])
	}
}
