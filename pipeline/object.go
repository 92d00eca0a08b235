package pipeline

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"go.uber.org/zap"

	"github.com/fhirload/fhirload/deadletter"
	"github.com/fhirload/fhirload/ingest"
	"github.com/fhirload/fhirload/transform"
)

// objectRun is one object on its way through the runner: read, cut into
// batches, settled, then acknowledged exactly once (ack is the only caller
// of Object.Ack, behind a once-guard).
type objectRun struct {
	r   *Runner
	obj Object
	seq uint32
	log *zap.Logger

	header []byte            // CSV: the header line
	stream *transform.Stream // the object's transform state (CSV header), forked per batch
	resume int64             // lines 1..resume are done (checkpoint)

	batches sync.WaitGroup
	nbatch  int
	track   lineTracker

	mu  sync.Mutex
	err error // the first failure that leaves the object unfinished

	// Items a DeferredSink holds, and those it settled as failed.
	deferred atomic.Int64
	dmu      sync.Mutex
	dfailed  map[uint32]Outcome

	// For the checkpoint-lag gauge: the last line read, and the line of the
	// last checkpoint written.
	lastRead, lastSaved atomic.Int64
	lastLine            atomic.Int64 // the last line the reader returned (where a failure stopped it)

	objectFailed bool // the object itself was dead-lettered (unreadable, missing)

	ackOnce sync.Once
}

func (o *objectRun) fail(err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.err == nil {
		o.err = err
	}
}

func (o *objectRun) failed() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.err
}

// ack reports the object's final state to its source, once.
func (o *objectRun) ack(ctx context.Context, err error) {
	o.ackOnce.Do(func() {
		if o.obj.Ack == nil {
			return
		}
		if aerr := o.obj.Ack(context.WithoutCancel(ctx), err); aerr != nil {
			o.log.Warn("acknowledge failed", zap.Error(aerr))
		}
	})
}

// object runs one object to its end (or hands it to flushDeferred); read is
// called once the object is read (its batches may still be in flight).
func (r *Runner) object(ctx context.Context, obj Object, read func()) {
	o := &objectRun{r: r, obj: obj, seq: r.seq.Add(1), log: r.log.With(zap.String("source", obj.URI))}
	if r.d.Checkpoints != nil && obj.Replay == nil {
		cp, err := r.d.Checkpoints.Get(ctx, obj.Key())
		if err != nil {
			// Not counted as read: the source brings it again (watch).
			r.c.released.Add(1)
			o.log.Error("read checkpoint; object released for redelivery", zap.Error(err))
			o.ack(ctx, fmt.Errorf("read checkpoint: %w", err))
			return
		}
		if cp.Done {
			r.c.skippedObjects.Add(1)
			o.log.Info("object already loaded (checkpoint), skipped")
			o.ack(ctx, nil)
			return
		}
		o.resume = cp.Line
	}
	o.resume = max(o.resume, obj.ResumeAfter)
	r.c.objects.Add(1)
	r.d.Metrics.objectStarted()
	defer r.d.Metrics.objectFinished()
	start := time.Now()
	o.log.Info("object started", zap.Int64("resume_after_line", o.resume))
	o.lastRead.Store(o.resume)
	o.lastSaved.Store(o.resume)
	o.track.committed = o.resume
	if r.d.Checkpoints != nil {
		// However the object ends, the lines it read stop lagging.
		defer func() { r.d.Metrics.addCheckpointLag(-(o.lastRead.Load() - o.lastSaved.Load())) }()
	}

	o.read(ctx)
	read()
	o.batches.Wait()
	switch {
	case o.deferred.Load() > 0 && o.failed() == nil:
		r.waitMu.Lock()
		r.awaiting[o.seq] = o
		r.waitMu.Unlock()
		o.log.Info("object read; waiting for the sink to settle it", zap.Int64("deferred", o.deferred.Load()))
		return
	case o.deferred.Load() > 0:
		// Unfinished (interrupted, a fatal error): it is not acknowledged
		// as done, so what the sink holds of it will not be settled here.
		o.abandonDeferred()
		return
	}
	o.finish(ctx)
	o.log.Info("object finished", zap.Duration("took", time.Since(start)))
}

// finish writes the done checkpoint and acknowledges the object: with nil
// when every line has its final outcome, else with the failure (the source
// redelivers it where it can; a rerun redoes it, idempotently).
func (o *objectRun) finish(ctx context.Context) {
	r := o.r
	err := o.failed()
	if err == nil && r.d.Checkpoints != nil && o.obj.Replay == nil {
		if cerr := r.d.Checkpoints.Put(context.WithoutCancel(ctx), o.obj.Key(), ingest.Checkpoint{Done: true}); cerr != nil {
			err = fmt.Errorf("write checkpoint: %w", cerr)
			r.setFatal(fmt.Errorf("checkpoint store: %w", cerr))
		}
	}
	if err == nil && o.obj.ReplayOf != nil && !o.objectFailed {
		// Read to its end this time: the object-level entry is done.
		if !r.settle(ctx, o, &settlement{retire: []string{o.obj.ReplayOf.ID}}) {
			err = o.failed()
		}
	}
	if err != nil {
		o.log.Warn("object not finished; not acknowledged", zap.Error(err))
	}
	o.ack(ctx, err)
}

// read cuts the object's records into batches and dispatches them.
func (o *objectRun) read(ctx context.Context) {
	r := o.r
	b := r.getBatch()
	dispatch := func() {
		if len(b.recs) > 0 {
			o.dispatch(ctx, b)
			b = r.getBatch()
		}
	}
	size, maxBytes := r.cfg.Target.BatchSize, r.cfg.Target.BatchBytes
	records := 0 // data records so far (CSV record numbers)
	err := o.each(ctx, func(rec record, line []byte) bool {
		if r.stopped.Load() || ctx.Err() != nil {
			return false
		}
		if r.d.Checkpoints != nil {
			o.lastRead.Store(rec.no)
			r.d.Metrics.addCheckpointLag(1)
		}
		r.c.lines.Add(1)
		r.d.Metrics.lineRead()
		if rec.blank {
			r.c.blank.Add(1)
			return true
		}
		if len(b.recs) == 0 {
			b.firstRecord = records
		}
		records++
		b.add(rec, line)
		if len(b.recs) >= size || len(b.arena) >= maxBytes {
			dispatch()
		}
		return true
	})
	if err != nil {
		if rec, ok := o.readFailure(ctx, err); ok {
			r.c.lines.Add(1)
			b.add(rec, nil)
		}
	} else if r.stopped.Load() || ctx.Err() != nil {
		o.fail(errInterrupted)
	}
	dispatch()
	r.putBatch(b)
}

// readFailure decides what a failure to open or read the object means. It
// returns the object-level record to dead-letter, or false when the object
// is left unfinished (interrupted, released for redelivery, or a fatal
// error).
func (o *objectRun) readFailure(ctx context.Context, err error) (record, bool) {
	r := o.r
	last := max(o.lastLine.Load(), o.resume)
	rec := record{no: last + 1, offset: -1, prev: o.obj.ReplayOf}
	defer func() { o.objectFailed = rec.fail != nil }()
	var fe *formatError
	switch {
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil:
		o.fail(errInterrupted)
		return record{}, false
	case errors.As(err, &fe):
		f := fe.failure
		f.stage = deadletter.StageRead
		rec.fail = &f
		return rec, true
	case errors.Is(err, ingest.ErrCredentials):
		o.fail(err)
		r.setFatal(err)
		return record{}, false
	case errors.Is(err, ingest.ErrMissingObject):
		r.c.missingObjects.Add(1)
		rec.fail = &failure{reason: deadletter.ReasonMissingObject, stage: deadletter.StageRead,
			msg: "the object does not exist (or no longer has the announced version)"}
		if last > 0 {
			rec.fail.msg = fmt.Sprintf("the object disappeared after line %d (or was overwritten)", last)
		}
		return rec, true
	case o.obj.Redelivers:
		// Its source brings it again (SQS: the message reappears, and the
		// queue's redrive policy parks it after maxReceiveCount).
		r.c.released.Add(1)
		o.log.Error("object unreadable; released for redelivery", zap.Int64("after_line", last), zap.Error(err))
		o.fail(err)
		return record{}, false
	}
	r.c.unreadable.Add(1)
	msg := err.Error()
	if last > 0 {
		msg = fmt.Sprintf("unreadable after line %d: %s", last, msg)
	}
	rec.fail = &failure{reason: deadletter.ReasonUnreadableObject, stage: deadletter.StageRead, msg: msg}
	return rec, true
}

// dispatch hands a batch to a worker; it blocks while target.concurrency
// batches (plus one per CPU) are in flight: back-pressure on the reader.
func (o *objectRun) dispatch(ctx context.Context, b *batch) {
	r := o.r
	weight := min(int64(len(b.arena))+1, r.budget)
	if err := r.bytes.Acquire(ctx, weight); err != nil {
		r.c.unsettled.Add(int64(len(b.recs)))
		o.fail(errInterrupted)
		r.putBatch(b)
		return
	}
	select {
	case r.inflight <- struct{}{}:
	case <-ctx.Done():
		r.bytes.Release(weight)
		r.c.unsettled.Add(int64(len(b.recs)))
		o.fail(errInterrupted)
		r.putBatch(b)
		return
	}
	id := o.nbatch
	o.nbatch++
	last := b.recs[len(b.recs)-1].no
	o.track.open(id)
	o.batches.Add(1)
	go func() {
		defer o.batches.Done()
		defer func() { <-r.inflight; r.bytes.Release(weight) }()
		defer r.putBatch(b)
		if o.runBatch(ctx, b) {
			r.commit(ctx, o, id, last)
		}
	}()
}

// record is one line (or Bundle entry, or replayed entry) of an object.
type record struct {
	no, offset int64
	ord        uint32            // its number within the object, for deferred tokens
	blank      bool              // whitespace only: counted, not loaded
	entry      bool              // a Bundle entry (transformed with its fullUrl)
	fullURL    string            // the entry's fullUrl
	fail       *failure          // failed before transform (read stage)
	prev       *deadletter.Entry // replay: the entry the line comes from
	b          []byte            // in the batch's arena
}

// failure is why a record failed before it reached the sink.
type failure struct {
	reason    deadletter.Reason
	stage     deadletter.Stage
	msg       string
	location  string
	rule      string // the specification's rule broken (invariant key, ext:URL, profile URL)
	truncated bool
}

// each calls fn for every record of the object, in order, with the line's
// bytes (valid during the call), until fn returns false. It returns the
// error that ended reading early (nil at the end, or when fn stopped).
func (o *objectRun) each(ctx context.Context, fn func(rec record, line []byte) bool) error {
	if o.obj.Replay != nil {
		for i := range o.obj.Replay {
			e := &o.obj.Replay[i]
			rec := record{no: e.Source.Line, offset: e.Source.Offset, ord: uint32(i), prev: e,
				entry: e.Source.FullURL != "", fullURL: e.Source.FullURL}
			b := lineBytes(e)
			if len(b) == 0 || e.LineTruncated {
				// Nothing to replay (a line too long to keep, or an object
				// that could not be read): it stays for an operator to purge.
				rec.fail = &failure{reason: e.Reason, stage: e.Stage, msg: e.Message, truncated: e.LineTruncated}
			}
			if !fn(rec, b) {
				return nil
			}
		}
		return nil
	}
	rc, err := o.obj.Open(ctx)
	if err != nil {
		return err
	}
	defer rc.Close()
	st, err := ingest.OpenStream(&countingReader{r: rc, n: &o.r.read}, ingest.LineOptions{
		MaxLineBytes:         o.r.cfg.Source.MaxLineBytes,
		MaxDecompressedBytes: o.r.cfg.Source.MaxDecompressedBytes,
	})
	if err != nil {
		return err
	}
	o.stream = o.r.d.Transformer.NewStream(o.obj.URI)
	sniffed, err := transform.Sniff(st.Head(), o.obj.URI)
	if err != nil {
		// Not a format the object can be read as (UTF-16, a JSON array, a
		// pretty-printed resource): one entry says what it is.
		return &formatError{failure: transformFailure(err)}
	}
	switch format := o.r.cfg.Source.Format; {
	case format == transform.FormatBundle || format == transform.FormatFHIR && sniffed.Format == transform.FormatBundle:
		return o.entries(st, fn)
	default:
		return o.lines(st.Lines(sniffed.CROnly), fn)
	}
}

// formatError is an object that is readable but in no format it can be read
// as; its failure is the object-level dead letter.
type formatError struct{ failure failure }

func (e *formatError) Error() string { return e.failure.msg }

// lines reads a line format: NDJSON, CSV (the header is not a record) or
// flat JSON.
func (o *objectRun) lines(lr *ingest.LineReader, fn func(rec record, line []byte) bool) error {
	needHeader := o.r.cfg.Source.Format == transform.FormatCSV
	for {
		line, err := lr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		o.lastLine.Store(line.No)
		rec := record{no: line.No, offset: line.Offset, ord: uint32(line.No)}
		if needHeader && !line.TooLong && !isBlank(line.Bytes) {
			// The CSV header is not a record: neither counted nor loaded
			// (and read again when the object resumes after a checkpoint).
			needHeader = false
			o.header = bytes.Clone(line.Bytes)
			_, skip, terr := o.stream.Next(o.header)
			if skip || terr == nil || line.No <= o.resume {
				continue
			}
			rec.fail = &failure{reason: deadletter.ReasonMapping, stage: deadletter.StageTransform, msg: terr.Error()}
		}
		if line.No <= o.resume {
			continue
		}
		switch {
		case rec.fail != nil:
		case line.TooLong:
			rec.fail = &failure{reason: deadletter.ReasonParse, stage: deadletter.StageRead, truncated: true,
				msg: fmt.Sprintf("line of %d bytes exceeds source.max_line_bytes (%d)", line.Length, o.r.cfg.Source.MaxLineBytes)}
		case isBlank(line.Bytes):
			rec.blank = true
		}
		if !fn(rec, line.Bytes) {
			return nil
		}
	}
}

// entries reads a Bundle document: each entry is a record, its position in
// Bundle.entry (from 1) standing for the line number.
func (o *objectRun) entries(st *ingest.Stream, fn func(rec record, line []byte) bool) error {
	dec := transform.NewBundleDecoder(st.Reader(), transform.BundleOptions{MaxEntryBytes: o.r.cfg.Source.MaxLineBytes})
	for {
		e, err := dec.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			var te *transform.Error
			if errors.As(err, &te) && !errors.Is(err, ingest.ErrUnreadable) && !errors.Is(err, ingest.ErrCorrupt) && !errors.Is(err, ingest.ErrTooLarge) {
				// The document itself is broken (a syntax error, not a Bundle):
				// one entry stands for the rest of it.
				f := transformFailure(err)
				f.stage = deadletter.StageRead
				return &formatError{failure: f}
			}
			return err
		}
		no := int64(e.Index) + 1
		o.lastLine.Store(no)
		if no <= o.resume {
			continue
		}
		rec := record{no: no, offset: e.Offset, ord: uint32(no), entry: true, fullURL: e.FullURL}
		if e.Err != nil {
			f := transformFailure(e.Err)
			rec.fail = &f
		}
		if !fn(rec, e.Resource) {
			return nil
		}
	}
}

// lineBytes is the entry's line without a copy when it is kept as text (the
// batch copies it into its arena; nothing writes through it), else decoded.
func lineBytes(e *deadletter.Entry) []byte {
	if e.LineBase64 == "" {
		return unsafe.Slice(unsafe.StringData(e.Line), len(e.Line))
	}
	return e.Bytes()
}

// lineTracker finds the last line before which every batch of an object has
// finished; batches finish out of order.
type lineTracker struct {
	mu        sync.Mutex
	next      int           // lowest unfinished batch id
	finished  map[int]int64 // finished batch id -> its last line
	committed int64         // every line <= committed has an outcome
	saved     int64         // committed as of the last checkpoint
	savedNext int           // next as of the last checkpoint
}

// checkpointBatches is how many batches of progress make a checkpoint due.
const checkpointBatches = 20

func (t *lineTracker) open(int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.finished == nil {
		t.finished = map[int]int64{}
	}
}

// done marks batch id finished; it reports the committed line and whether a
// checkpoint is due (every checkpointBatches batches of progress).
func (t *lineTracker) done(id int, last int64) (int64, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.finished[id] = last
	for {
		l, ok := t.finished[t.next]
		if !ok {
			break
		}
		delete(t.finished, t.next)
		t.committed = l
		t.next++
	}
	// Counted from the last checkpoint, not at multiples of 20: batches
	// that finish out of order move next by several at once, past any
	// multiple (on a busy machine, 5,900 lines of an object once went by
	// without one).
	if t.next-t.savedNext >= checkpointBatches && t.committed > t.saved {
		t.saved, t.savedNext = t.committed, t.next
		return t.committed, true
	}
	return t.committed, false
}

// commit records that a batch finished, and writes a mid-object checkpoint
// when the contiguous finished prefix of the object moved far enough.
func (r *Runner) commit(ctx context.Context, o *objectRun, id int, last int64) {
	line, moved := o.track.done(id, last)
	if !moved || r.d.Checkpoints == nil || ctx.Err() != nil || o.obj.Replay != nil {
		return
	}
	if err := r.d.Checkpoints.Put(ctx, o.obj.Key(), ingest.Checkpoint{Line: line}); err != nil {
		// Progress only: the object is redone from the last checkpoint that
		// was written. The done checkpoint is what must not fail.
		o.log.Warn("write checkpoint", zap.Error(err))
		return
	}
	if prev := o.lastSaved.Swap(line); line > prev {
		r.d.Metrics.addCheckpointLag(-(line - prev))
	}
}

type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

func isBlank(b []byte) bool {
	for _, c := range b {
		if c != ' ' && c != '\t' && c != '\r' {
			return false
		}
	}
	return true
}
