package pipeline_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/fhirload/fhirload/deadletter"
	"github.com/fhirload/fhirload/ingest"
	"github.com/fhirload/fhirload/pipeline"
)

// In-memory stages for the runner's table tests: they run in milliseconds
// and let every promise of the runner be checked line by line.

// acks records the Ack calls of objects.
type acks struct {
	mu    sync.Mutex
	calls map[string][]error
}

func (a *acks) ack(uri string) func(context.Context, error) error {
	return func(_ context.Context, err error) error {
		a.mu.Lock()
		defer a.mu.Unlock()
		if a.calls == nil {
			a.calls = map[string][]error{}
		}
		a.calls[uri] = append(a.calls[uri], err)
		return nil
	}
}

// of returns the Ack calls of uri.
func (a *acks) of(uri string) []error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.calls[uri]
}

// memObject is an object whose bytes are data; failAt, when >= 0, makes the
// reader fail with err after that many bytes.
type memObject struct {
	uri        string
	data       []byte
	openErr    error
	failAt     int
	failErr    error
	redelivers bool
}

func (m memObject) object(a *acks) ingest.Object {
	return ingest.Object{URI: m.uri, ETag: "e1", Size: int64(len(m.data)), Redelivers: m.redelivers, Ack: a.ack(m.uri),
		Open: func(context.Context) (io.ReadCloser, error) {
			if m.openErr != nil {
				return nil, m.openErr
			}
			var r io.Reader = bytes.NewReader(m.data)
			if m.failErr != nil {
				r = io.MultiReader(bytes.NewReader(m.data[:m.failAt]), errReader{m.failErr})
			}
			return io.NopCloser(r), nil
		}}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// memSource hands out its objects in order.
type memSource struct {
	objs   []pipeline.Object
	next   int
	closed bool
}

func newSource(a *acks, objs ...memObject) *memSource {
	s := &memSource{}
	for _, o := range objs {
		s.objs = append(s.objs, pipeline.Object{Object: o.object(a)})
	}
	return s
}

func (s *memSource) Next(ctx context.Context) (pipeline.Object, error) {
	if err := ctx.Err(); err != nil {
		return pipeline.Object{}, err
	}
	if s.next >= len(s.objs) {
		return pipeline.Object{}, io.EOF
	}
	s.next++
	return s.objs[s.next-1], nil
}

func (s *memSource) Close() error { s.closed = true; return nil }

// memSink decides each item's outcome with decide (by id); nil means
// loaded. A non-nil err from decide fails the whole Write with it.
type memSink struct {
	decide func(it pipeline.Item) (pipeline.Outcome, error)

	mu      sync.Mutex
	written map[string]int // id -> times written
	flushed bool
	held    []pipeline.Item // deferred items, settled at Flush
	settle  func(it pipeline.Item) pipeline.Outcome
}

func (s *memSink) Write(_ context.Context, items []pipeline.Item) ([]pipeline.Outcome, error) {
	out := make([]pipeline.Outcome, 0, len(items))
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.written == nil {
		s.written = map[string]int{}
	}
	for _, it := range items {
		o := pipeline.Outcome{Status: pipeline.Loaded, Created: true}
		if s.decide != nil {
			var err error
			o, err = s.decide(it)
			if err != nil {
				return out, err
			}
		}
		if o.Status == pipeline.Deferred {
			it.Body = bytes.Clone(it.Body)
			s.held = append(s.held, it)
		}
		if o.Status == pipeline.Loaded {
			s.written[it.ID]++
		}
		out = append(out, o)
	}
	return out, nil
}

// deferredSink is a memSink whose deferred items are settled at Flush.
type deferredSink struct{ *memSink }

func (s deferredSink) Flush(_ context.Context, settle func(uint64, pipeline.Outcome)) error {
	s.mu.Lock()
	held := s.held
	s.held = nil
	s.flushed = true
	s.mu.Unlock()
	for _, it := range held {
		o := s.settle(it)
		if o.Status == pipeline.Loaded {
			s.mu.Lock()
			s.written[it.ID]++
			s.mu.Unlock()
		}
		settle(it.Token, o)
	}
	return nil
}

// memDeadLetters keeps entries; with failAfter > 0, a Put that would take
// it past failAfter entries fails and stores nothing.
type memDeadLetters struct {
	mu        sync.Mutex
	entries   []deadletter.Entry
	failAfter int
	retired   []string
	replaced  []deadletter.Entry
}

var errDiskFull = errors.New("no space left on device")

func (d *memDeadLetters) Put(_ context.Context, entries ...deadletter.Entry) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.failAfter > 0 && len(d.entries)+len(entries) > d.failAfter {
		return errDiskFull
	}
	d.entries = append(d.entries, entries...)
	return nil
}

func (d *memDeadLetters) Retire(_ context.Context, ids ...string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.retired = append(d.retired, ids...)
	return nil
}

func (d *memDeadLetters) Replace(_ context.Context, entries ...deadletter.Entry) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.replaced = append(d.replaced, entries...)
	return nil
}

// byReason counts entries by reason.
func (d *memDeadLetters) byReason() map[string]int {
	d.mu.Lock()
	defer d.mu.Unlock()
	m := map[string]int{}
	for _, e := range d.entries {
		m[string(e.Reason)]++
	}
	return m
}

// memCheckpoints keeps checkpoints in a map; failPut makes Put fail.
type memCheckpoints struct {
	mu      sync.Mutex
	m       map[string]ingest.Checkpoint
	puts    []string // key@line or key@done, in order
	failPut error
	failGet error
	onPut   func(ingest.Checkpoint) error // checked at each Put (a failure fails it)
}

func (c *memCheckpoints) Get(_ context.Context, key string) (ingest.Checkpoint, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[key], c.failGet
}

func (c *memCheckpoints) Put(_ context.Context, key string, cp ingest.Checkpoint) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failPut != nil {
		return c.failPut
	}
	if c.onPut != nil {
		if err := c.onPut(cp); err != nil {
			return err
		}
	}
	if c.m == nil {
		c.m = map[string]ingest.Checkpoint{}
	}
	c.m[key] = cp
	if cp.Done {
		c.puts = append(c.puts, key+"@done")
	} else {
		c.puts = append(c.puts, fmt.Sprintf("%s@%d", key, cp.Line))
	}
	return nil
}

func (c *memCheckpoints) Close() error { return nil }

// patient is a valid seed-profile Patient line.
func patient(id string) string {
	return `{"resourceType":"Patient","id":"` + id + `","name":[{"family":"F","given":["G"]}]}`
}

// lines joins patients p1..pn (with the given ids replaced by invalid lines).
func ndjson(n int, invalid ...int) []byte {
	var b strings.Builder
	bad := map[int]bool{}
	for _, i := range invalid {
		bad[i] = true
	}
	for i := 1; i <= n; i++ {
		if bad[i] {
			b.WriteString(`{"resourceType":"Patient","id":"p` + fmt.Sprint(i) + `","name":[{"family":"F","given":["G"]}],"gender":"robot"}`)
		} else {
			b.WriteString(patient(fmt.Sprintf("p%d", i)))
		}
		b.WriteByte('\n')
	}
	return []byte(b.String())
}

func checkReconciles(t *testing.T, rep *pipeline.Report) {
	t.Helper()
	if !rep.Reconciles() {
		t.Fatalf("report does not reconcile: lines %d != blank %d + loaded %d + dead-lettered %d + unsettled %d",
			rep.Lines, rep.SkippedBlank, rep.Loaded, rep.DeadLettered, rep.Unsettled)
	}
}
