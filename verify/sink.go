package verify

import (
	"cmp"
	"container/heap"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fhirload/fhirload/deadletter"
	"github.com/fhirload/fhirload/loader"
	"github.com/fhirload/fhirload/pipeline"
)

// The reasons a verified line is not matched. The Sink answers Failed with
// them, so the runner counts them like any other reason (nothing is stored:
// verify runs without a dead-letter store) and the Report reads its numbers
// from the runner's: one count, one place.
const (
	ReasonMissing     deadletter.Reason = "missing"     // the target does not hold the resource
	ReasonDifferent   deadletter.Reason = "different"   // it holds a different resource
	ReasonUnreachable deadletter.Reason = "unreachable" // it could not be read back
)

// Kinds of Mismatch.
const (
	KindMissing   = "missing"
	KindDifferent = "different"
)

// DefaultMaxMismatches caps the mismatches a Report lists (Options).
const DefaultMaxMismatches = 1000

// Ref names a resource to read back.
type Ref struct{ Type, ID string }

// Read is what reading one resource back found: Found with its Body,
// Failed (it could not be read; Message says why, PHI-free), or neither:
// the target does not hold it.
type Read struct {
	Found      bool
	Body       []byte
	Failed     bool
	HTTPStatus int
	Message    string
	Attempts   int
}

// Reader reads resources back from the target.
type Reader interface {
	// Read returns one Read per ref, in order. An error stops the run
	// (wrap pipeline.ErrFatal for refused credentials and the like).
	Read(ctx context.Context, refs []Ref) ([]Read, error)
}

// LoaderReader is the Reader of a loader.Reader (signed, paced, retried).
type LoaderReader struct{ R *loader.Reader }

// Read implements Reader.
func (l LoaderReader) Read(ctx context.Context, refs []Ref) ([]Read, error) {
	in := make([]loader.Ref, len(refs))
	for i, r := range refs {
		in[i] = loader.Ref{Type: r.Type, ID: r.ID}
	}
	got, err := l.R.Read(ctx, in)
	if err != nil {
		var fe *loader.FatalError
		if errors.As(err, &fe) {
			err = errors.Join(pipeline.ErrFatal, err)
		}
		return nil, err
	}
	out := make([]Read, len(got))
	for i, g := range got {
		out[i] = Read{Found: g.Status == loader.Found, Body: g.Body, Failed: g.Status == loader.Unread,
			HTTPStatus: g.HTTPStatus, Message: g.Message, Attempts: g.Attempts}
	}
	return out, nil
}

// Stats returns the reader's retries and 429s for the report.
func (l LoaderReader) Stats() pipeline.SinkStats {
	st := l.R.Stats()
	return pipeline.SinkStats{Retries: st.Retries, Throttled: st.Throttled}
}

// Mismatch is one line whose resource the target does not hold as the
// source says. It names where the line is and which paths differ, never a
// value.
type Mismatch struct {
	Source       string   `json:"source"`
	Line         int64    `json:"line"`
	Type         string   `json:"type"`
	ID           string   `json:"id"`
	Kind         string   `json:"kind"`                    // KindMissing or KindDifferent
	Paths        []string `json:"paths,omitempty"`         // different: FHIRPath-like paths that differ
	PathsOmitted int      `json:"paths_omitted,omitempty"` // differing paths beyond the listed ones
}

// Options configures a Sink. Zero values take the defaults.
type Options struct {
	MaxMismatches int // mismatches kept for the report (DefaultMaxMismatches)
	MaxPaths      int // paths listed per mismatch (DefaultMaxPaths)
}

// Sink is verify's pipeline.Sink: it reads each batch back and compares
// every resource with what `run` would write. A matched item is Loaded;
// the others are Failed with ReasonMissing, ReasonDifferent or
// ReasonUnreachable. It keeps the mismatches (the MaxMismatches first by
// source and line, whatever the order batches finish in) and live counts.
// Memory is bounded whatever the input size.
type Sink struct {
	r          Reader
	cmp        Comparer
	max        int
	collectors []prometheus.Collector

	matched, missing, different, unreachable atomic.Int64

	mu      sync.Mutex
	kept    mismatchHeap
	omitted int64
}

// NewSink returns the Sink reading through r.
func NewSink(r Reader, o Options) *Sink {
	if o.MaxMismatches <= 0 {
		o.MaxMismatches = DefaultMaxMismatches
	}
	s := &Sink{r: r, cmp: Comparer{MaxPaths: o.MaxPaths}, max: o.MaxMismatches}
	s.collectors = counters(s)
	return s
}

// Write implements pipeline.Sink.
func (s *Sink) Write(ctx context.Context, items []pipeline.Item) ([]pipeline.Outcome, error) {
	refs := make([]Ref, len(items))
	for i, it := range items {
		refs[i] = Ref{Type: it.Type, ID: it.ID}
	}
	got, err := s.r.Read(ctx, refs)
	if err != nil {
		return nil, err // nothing counted: the items stay unsettled
	}
	if len(got) != len(items) {
		return nil, fmt.Errorf("verify: reader returned %d results for %d resources", len(got), len(items))
	}
	out := make([]pipeline.Outcome, len(items))
	for i, it := range items {
		g := &got[i]
		switch {
		case g.Failed:
			s.unreachable.Add(1)
			out[i] = pipeline.Outcome{Status: pipeline.Failed, Reason: ReasonUnreachable, HTTPStatus: g.HTTPStatus,
				Message: g.Message, Attempts: g.Attempts}
		case !g.Found:
			s.missing.Add(1)
			s.keep(Mismatch{Source: it.Source, Line: it.Line, Type: it.Type, ID: it.ID, Kind: KindMissing})
			out[i] = pipeline.Outcome{Status: pipeline.Failed, Reason: ReasonMissing, HTTPStatus: g.HTTPStatus,
				Message: "the target does not hold the resource", Attempts: g.Attempts}
		default:
			d := s.cmp.Compare(it.Type, it.Body, g.Body)
			if d.Equal() {
				s.matched.Add(1)
				out[i] = pipeline.Outcome{Status: pipeline.Loaded}
				continue
			}
			s.different.Add(1)
			s.keep(Mismatch{Source: it.Source, Line: it.Line, Type: it.Type, ID: it.ID, Kind: KindDifferent,
				Paths: d.Paths, PathsOmitted: d.Omitted})
			out[i] = pipeline.Outcome{Status: pipeline.Failed, Reason: ReasonDifferent, HTTPStatus: g.HTTPStatus,
				Message: differMessage(d), Attempts: g.Attempts}
		}
	}
	return out, nil
}

// differMessage is the log detail of a different resource: the first
// paths (element names and indexes, never values).
func differMessage(d Diff) string {
	show := min(3, len(d.Paths))
	if more := len(d.Paths) + d.Omitted - show; more > 0 {
		return fmt.Sprintf("the target holds it differently at %s and %d more paths", strings.Join(d.Paths[:show], ", "), more)
	}
	return "the target holds it differently at " + strings.Join(d.Paths, ", ")
}

// Stats implements pipeline.StatsSink when the Reader keeps stats.
func (s *Sink) Stats() pipeline.SinkStats {
	if st, ok := s.r.(interface{ Stats() pipeline.SinkStats }); ok {
		return st.Stats()
	}
	return pipeline.SinkStats{}
}

// Counts are a Sink's live numbers.
type Counts struct{ Matched, Missing, Different, Unreachable int64 }

// Verified is how many resources were read back and compared.
func (c Counts) Verified() int64 { return c.Matched + c.Missing + c.Different }

// Counts returns the live numbers (for progress and metrics; the Report
// takes its numbers from the runner's).
func (s *Sink) Counts() Counts {
	return Counts{Matched: s.matched.Load(), Missing: s.missing.Load(), Different: s.different.Load(),
		Unreachable: s.unreachable.Load()}
}

// Mismatches returns the mismatches kept, by source and line, and how many
// more there were.
func (s *Sink) Mismatches() ([]Mismatch, int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := slices.Clone([]Mismatch(s.kept))
	slices.SortFunc(out, compareMismatch)
	return out, s.omitted
}

// keep adds m to the kept mismatches, or counts it when MaxMismatches
// earlier ones (by source and line) are kept already.
func (s *Sink) keep(m Mismatch) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.kept) < s.max {
		heap.Push(&s.kept, m)
		return
	}
	s.omitted++
	if compareMismatch(m, s.kept[0]) < 0 {
		s.kept[0] = m // the latest kept one makes room
		heap.Fix(&s.kept, 0)
	}
}

func compareMismatch(a, b Mismatch) int {
	return cmp.Or(cmp.Compare(a.Source, b.Source), cmp.Compare(a.Line, b.Line),
		cmp.Compare(a.Type, b.Type), cmp.Compare(a.ID, b.ID))
}

// mismatchHeap is a max-heap by source and line: its root is the latest.
type mismatchHeap []Mismatch

func (h mismatchHeap) Len() int           { return len(h) }
func (h mismatchHeap) Less(i, j int) bool { return compareMismatch(h[i], h[j]) > 0 }
func (h mismatchHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *mismatchHeap) Push(x any)        { *h = append(*h, x.(Mismatch)) }
func (h *mismatchHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// counters are the Sink's Prometheus counters, read at scrape time.
func counters(s *Sink) []prometheus.Collector {
	f := func(name, help string, get func(Counts) int64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help},
			func() float64 { return float64(get(s.Counts())) })
	}
	return []prometheus.Collector{
		f("fhirload_verify_verified_total", "Resources read back and compared.", Counts.Verified),
		f("fhirload_verify_matched_total", "Resources the target holds as the source says.", func(c Counts) int64 { return c.Matched }),
		f("fhirload_verify_missing_total", "Resources the target does not hold.", func(c Counts) int64 { return c.Missing }),
		f("fhirload_verify_different_total", "Resources the target holds differently.", func(c Counts) int64 { return c.Different }),
		f("fhirload_verify_unreachable_total", "Resources that could not be read back.", func(c Counts) int64 { return c.Unreachable }),
	}
}

// Collectors returns the Sink's Prometheus counters (for pipeline.Metrics.Register).
func (s *Sink) Collectors() []prometheus.Collector { return s.collectors }
