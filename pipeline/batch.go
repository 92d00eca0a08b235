package pipeline

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/fhirload/fhirload/deadletter"
	"github.com/fhirload/fhirload/transform"
)

// batch holds one batch's records; their bytes share one arena so a batch
// costs no allocation per line. It goes back to the Runner's pool once the
// batch is settled (dead-letter entries copy the bytes they keep).
type batch struct {
	recs        []record
	arena       []byte
	firstRecord int // data records of the object before this batch
}

func (b *batch) add(rec record, line []byte) {
	start := len(b.arena)
	b.arena = append(b.arena, line...)
	rec.b = b.arena[start:len(b.arena):len(b.arena)]
	b.recs = append(b.recs, rec)
}

func (r *Runner) getBatch() *batch {
	if b, ok := r.bufs.Get().(*batch); ok {
		return b
	}
	return &batch{}
}

func (r *Runner) putBatch(b *batch) {
	if cap(b.arena) > 1<<20 {
		return // a batch of large lines: let it go rather than pin it in the pool
	}
	clear(b.recs)
	b.recs, b.arena = b.recs[:0], b.arena[:0]
	r.bufs.Put(b)
}

// settlement is what one batch did to its lines. settle applies it: it is
// the one place where lines become loaded, dead-lettered or unsettled.
type settlement struct {
	loaded, created int64
	unresolved      int64        // urn:uuid references left as they were (target not in the run)
	idsDerived      int64        // resources without an id that got a derived one
	failed          []failedLine // new dead letters, or replayed entries failing again
	retire          []string     // replayed entries whose lines loaded
	unsettled       int64        // lines left without an outcome (the object is not acknowledged)
	// Lines per extension URL and per declared profile that transform does
	// not know (accepted; reported).
	unknownExtensions, unknownProfiles map[string]int64
}

type failedLine struct {
	e        deadletter.Entry
	location string // FHIRPath location of a transform failure, for the report
	replace  bool   // e is a replayed entry's new version
}

func (s *settlement) unknown(extensions, profiles []string) {
	for _, u := range extensions {
		if s.unknownExtensions == nil {
			s.unknownExtensions = map[string]int64{}
		}
		s.unknownExtensions[u]++
	}
	for _, u := range profiles {
		if s.unknownProfiles == nil {
			s.unknownProfiles = map[string]int64{}
		}
		s.unknownProfiles[u]++
	}
}

func (s *settlement) load(created bool, prev *deadletter.Entry) {
	s.loaded++
	if created {
		s.created++
	}
	if prev != nil {
		s.retire = append(s.retire, prev.ID)
	}
}

// runBatch transforms and writes one batch and settles every line of it. It
// reports whether the batch left no line unsettled.
func (o *objectRun) runBatch(ctx context.Context, b *batch) bool {
	r := o.r
	var st settlement
	items := make([]Item, 0, len(b.recs))
	idx := make([]int, 0, len(b.recs))

	r.cpu <- struct{}{}
	streams := o.streams(b)
	for i := range b.recs {
		rec := &b.recs[i]
		if rec.fail != nil {
			st.failed = append(st.failed, o.failedLine(rec, *rec.fail, nil))
			continue
		}
		res, err := streams.transform(rec)
		if err != nil {
			st.failed = append(st.failed, o.failedLine(rec, transformFailure(err), nil))
			continue
		}
		st.unresolved += int64(res.Unresolved)
		if res.IDDerived {
			st.idsDerived++
		}
		st.unknown(res.UnknownExtensions, res.UnknownProfiles)
		items = append(items, Item{Type: res.Type, ID: res.ID, Body: res.Body, Token: uint64(o.seq)<<32 | uint64(rec.ord),
			Source: o.sourceOf(rec), Line: rec.no})
		idx = append(idx, i)
	}
	<-r.cpu

	var werr error
	switch {
	case len(items) == 0:
	case r.d.Sink == nil: // validate
		for _, i := range idx {
			st.load(false, b.recs[i].prev)
		}
	default:
		var outs []Outcome
		outs, werr = r.d.Sink.Write(ctx, items)
		for j, i := range idx {
			rec := &b.recs[i]
			switch {
			case j < len(outs) && outs[j].Status == Loaded:
				st.load(outs[j].Created, rec.prev)
			case werr != nil:
				st.unsettled++
			case j >= len(outs):
				werr = fmt.Errorf("sink returned %d outcomes for %d items", len(outs), len(items))
				st.unsettled++
			case outs[j].Status == Deferred:
				o.deferred.Add(1)
			default:
				out := outs[j]
				st.failed = append(st.failed, o.failedLine(rec, failure{reason: out.Reason, stage: deadletter.StageLoad, msg: out.Message}, &out))
				st.failed[len(st.failed)-1].e.ResourceType, st.failed[len(st.failed)-1].e.ResourceID = items[j].Type, items[j].ID
			}
		}
	}
	ok := r.settle(ctx, o, &st)
	if werr != nil {
		o.fail(werr)
		if errors.Is(werr, ErrFatal) {
			r.setFatal(werr)
		}
		return false
	}
	return ok
}

// streams hands each record of a batch the transform Stream it needs: one
// fork of the object's stream for bytes read from an object, one per
// recorded origin for replayed entries.
type streamSet struct {
	t     *transform.Transformer
	one   *transform.Stream
	byKey map[string]*transform.Stream
}

func (o *objectRun) streams(b *batch) streamSet {
	if o.obj.Replay != nil {
		return streamSet{t: o.r.d.Transformer, byKey: map[string]*transform.Stream{}}
	}
	if o.stream == nil { // the object could not be opened: its batch holds only that failure
		return streamSet{one: o.r.d.Transformer.NewStream(o.obj.URI)}
	}
	return streamSet{one: o.stream.Fork(b.firstRecord)}
}

// transform transforms one record: a line, or a Bundle entry with its fullUrl.
func (s streamSet) transform(rec *record) (transform.Resource, error) {
	st, err := s.get(rec)
	if err != nil {
		return transform.Resource{}, err
	}
	if rec.entry {
		return st.NextEntry(&transform.BundleEntry{Index: int(rec.no - 1), Offset: rec.offset, FullURL: rec.fullURL, Resource: rec.b})
	}
	res, skip, err := st.Next(rec.b)
	if skip {
		err = &transform.Error{Reason: transform.ReasonMapping, Message: "the line is a CSV header"}
	}
	return res, err
}

func (s streamSet) get(rec *record) (*transform.Stream, error) {
	if s.one != nil {
		return s.one, nil
	}
	key := rec.prev.Source.URI + "\x00" + rec.prev.Source.Header
	if st, ok := s.byKey[key]; ok {
		return st, nil
	}
	var header []byte
	if rec.prev.Source.Header != "" {
		header = []byte(rec.prev.Source.Header)
	}
	st, err := s.t.ReplayStream(rec.prev.Source.URI, header)
	if err != nil {
		return nil, err
	}
	s.byKey[key] = st
	return st, nil
}

// sourceOf is where a record's line came from: the object, or for a
// replayed line the source its entry names.
func (o *objectRun) sourceOf(rec *record) string {
	if rec.prev != nil {
		return rec.prev.Source.URI
	}
	return o.obj.URI
}

// transformFailure is the failure of a line that transform rejected.
func transformFailure(err error) failure {
	f := failure{reason: deadletter.ReasonParse, stage: deadletter.StageTransform, msg: err.Error()}
	var te *transform.Error
	if errors.As(err, &te) {
		f.reason, f.location, f.rule = deadletter.Reason(te.Reason), te.Location, te.Rule
	}
	return f
}

// failedLine builds the dead-letter entry of a line. A replayed line's entry
// is its previous version, with one more attempt and the new reason.
func (o *objectRun) failedLine(rec *record, f failure, out *Outcome) failedLine {
	r := o.r
	now := time.Now().UTC()
	if rec.prev != nil {
		e := *rec.prev
		e.Reason, e.Stage, e.Message, e.Rule = f.reason, f.stage, f.msg, f.rule
		e.Attempts++
		e.LastFailed = now
		e.Transform = r.info
		if out != nil {
			e.HTTPStatus, e.OperationOutcome = out.HTTPStatus, out.OperationOutcome
		}
		return failedLine{e: e, location: f.location, replace: true}
	}
	line, b64 := deadletter.MakeLine(rec.b)
	e := deadletter.Entry{
		RunID: r.d.RunID, Reason: f.reason, Stage: f.stage, Message: f.msg, Rule: f.rule,
		Source: deadletter.Source{URI: o.obj.URI, ETag: o.obj.ETag, Line: rec.no, Offset: rec.offset,
			Header: string(o.header), FullURL: rec.fullURL},
		Line: line, LineBase64: b64, LineTruncated: f.truncated, Attempts: 1,
		FirstFailed: now, LastFailed: now, Transform: r.info,
	}
	if out != nil {
		e.HTTPStatus, e.OperationOutcome, e.Attempts = out.HTTPStatus, out.OperationOutcome, max(out.Attempts, 1)
	}
	return failedLine{e: e, location: f.location}
}

// settle makes a batch's outcomes final: it stores the dead letters
// (durably, before they count), retires the replayed entries that loaded,
// and counts. A store that fails stops the run: its lines count unsettled.
// It reports whether every line got its outcome.
func (r *Runner) settle(ctx context.Context, o *objectRun, st *settlement) bool {
	ctx = context.WithoutCancel(ctx) // finish what was decided, even when stopping
	r.c.loaded.Add(st.loaded)
	r.c.created.Add(st.created)
	r.c.unresolved.Add(st.unresolved)
	r.c.idsDerived.Add(st.idsDerived)
	r.c.unknown(st.unknownExtensions, st.unknownProfiles)
	r.c.updated.Add(st.loaded - st.created)
	ok := st.unsettled == 0
	if len(st.retire) > 0 && r.d.Replay != nil {
		if err := r.d.Replay.Retire(ctx, st.retire...); err != nil {
			// The lines are loaded all the same; their entries stay, and a
			// later replay loads them again (idempotent).
			r.setFatal(fmt.Errorf("dead-letter store: retire: %w", err))
			o.fail(err)
			ok = false
		}
	}
	if len(st.failed) > 0 {
		if err := r.storeDeadLetters(ctx, st.failed); err != nil {
			r.setFatal(fmt.Errorf("dead-letter store: %w", err))
			o.fail(err)
			st.unsettled += int64(len(st.failed))
			ok = false
		} else {
			// Without a store (validate, verify) the lines are counted by
			// reason but nothing is dead-lettered: say so.
			stored, event := r.d.DeadLetters != nil || r.d.Replay != nil, "dead-lettered"
			if !stored {
				event = "not loaded (nothing stored)"
			}
			for _, f := range st.failed {
				r.c.deadLettered(string(f.e.Reason), f.location, f.e.Rule)
				if stored {
					r.d.Metrics.deadLettered(string(f.e.Reason))
				}
				r.log.Info(event,
					zap.String("source", f.e.Source.URI), zap.Int64("line", f.e.Source.Line),
					zap.String("reason", string(f.e.Reason)), zap.String("stage", string(f.e.Stage)),
					zap.String("resource_type", f.e.ResourceType), zap.String("resource_id", f.e.ResourceID),
					zap.Int("status", f.e.HTTPStatus), zap.String("detail", f.e.Message))
			}
		}
	}
	r.c.unsettled.Add(st.unsettled)
	if st.unsettled > 0 {
		o.fail(errUnsettled)
	}
	return ok
}

var errUnsettled = errors.New("lines left without an outcome")

// storeDeadLetters writes new entries (Put) and replaced ones (Replace).
// Without a store (validate) nothing is written.
func (r *Runner) storeDeadLetters(ctx context.Context, lines []failedLine) error {
	var put, replace []deadletter.Entry
	for _, f := range lines {
		if f.replace {
			replace = append(replace, f.e)
		} else {
			put = append(put, f.e)
		}
	}
	if len(put) > 0 && r.d.DeadLetters != nil {
		if err := r.d.DeadLetters.Put(ctx, put...); err != nil {
			return err
		}
	}
	if len(replace) > 0 && r.d.Replay != nil {
		if err := r.d.Replay.Replace(ctx, replace...); err != nil {
			return err
		}
	}
	return nil
}
