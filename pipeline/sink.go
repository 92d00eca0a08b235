package pipeline

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/fhirload/fhirload/deadletter"
	"github.com/fhirload/fhirload/loader"
)

// Item is one validated resource for a Sink.
type Item struct {
	Type string
	ID   string
	Body []byte // the resource JSON (valid only during Write: the runner reuses its buffers)
	// Token identifies the item's line to the runner; a sink that settles
	// items later (Deferred) hands it back with the final Outcome.
	Token uint64
	// Source and Line say where the item's line came from (the object's
	// URI; a replayed line's original source), for sinks that report per
	// line (verify).
	Source string
	Line   int64
}

// Status is how far an Item got.
type Status uint8

// The statuses.
const (
	// Failed: the item will not load; Reason says why. It is dead-lettered.
	Failed Status = iota
	// Loaded: the target holds the item now.
	Loaded
	// Deferred: the sink took the item and settles it later, through the
	// settle function of DeferredSink.Flush.
	Deferred
)

// Outcome is what became of one Item.
type Outcome struct {
	Status  Status
	Created bool // Loaded: the resource is new (201), not an update (200)

	// Failed only.
	Reason           deadletter.Reason
	HTTPStatus       int             // the last status seen (0 for a network error)
	OperationOutcome json.RawMessage // the server's OperationOutcome, as returned
	Message          string          // short, PHI-free
	Attempts         int
	// ResourceType and ResourceID name the resource of a failed item in
	// its dead letter when the sink knows them; a deferred outcome needs
	// them (the runner no longer holds the item when it is settled).
	ResourceType, ResourceID string
}

// Sink takes batches of resources and says what became of each. REST
// writers, the HealthLake import-job sink and the verify reader are sinks.
// Write is called from many goroutines at once.
type Sink interface {
	// Write returns one Outcome per item, in order. An error means the run
	// must stop (wrap ErrFatal for a condition no retry can fix, such as
	// refused credentials) or ctx ended; with an error only the Loaded
	// outcomes returned count (the target holds those), and every other item
	// is unsettled: its object is not acknowledged, and is redone.
	Write(ctx context.Context, items []Item) ([]Outcome, error)
}

// DeferredSink is a Sink whose outcomes may come later than Write (an
// import job settles its lines when the job ends). The runner does not
// acknowledge an object while any of its items is deferred.
type DeferredSink interface {
	Sink
	// Flush settles every item written so far that Write answered
	// Deferred, calling settle once per such item (from any goroutine, one
	// call at a time), and returns when all are settled. The runner calls it
	// when its source is exhausted; an error stops the run (the unsettled
	// items stay unsettled and their objects unacknowledged).
	Flush(ctx context.Context, settle func(token uint64, o Outcome)) error
}

// SinkStats are a sink's counters for the report and metrics.
type SinkStats struct {
	Retries   int64 // requests or entries retried
	Throttled int64 // 429 answers seen
}

// StatsSink is implemented by sinks that keep SinkStats.
type StatsSink interface {
	Stats() SinkStats
}

// ErrFatal is wrapped by sink errors that stop the run at once (refused
// credentials, an unreachable target): the report's Fatal names them.
var ErrFatal = errors.New("fatal")

// LoaderSink is the REST sink: a loader.Writer (batch Bundles or single
// PUTs) seen through the Sink contract.
type LoaderSink struct{ W *loader.Writer }

// Write implements Sink.
func (s LoaderSink) Write(ctx context.Context, items []Item) ([]Outcome, error) {
	in := make([]loader.Item, len(items))
	for i, it := range items {
		in[i] = loader.Item{Type: it.Type, ID: it.ID, Body: it.Body}
	}
	outs, err := s.W.Write(ctx, in)
	res := make([]Outcome, len(outs))
	for i, o := range outs {
		res[i] = fromLoader(o)
	}
	var fe *loader.FatalError
	if errors.As(err, &fe) {
		err = errors.Join(ErrFatal, err)
	}
	return res, err
}

// Stats implements StatsSink.
func (s LoaderSink) Stats() SinkStats {
	st := s.W.Stats()
	return SinkStats{Retries: st.Retries, Throttled: st.Throttled}
}

func fromLoader(o loader.Outcome) Outcome {
	if o.Loaded {
		return Outcome{Status: Loaded, Created: o.Created}
	}
	return Outcome{Status: Failed, Reason: deadletter.Reason(o.Reason), HTTPStatus: o.HTTPStatus,
		OperationOutcome: o.OperationOutcome, Message: o.Message, Attempts: o.Attempts}
}
