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

	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/fhirload/fhirload/deadletter"
	"github.com/fhirload/fhirload/ingest"
	"github.com/fhirload/fhirload/loader"
	"github.com/fhirload/fhirload/transform"
)

// Writer is what the runner needs of the loader.
type Writer interface {
	Write(ctx context.Context, items []loader.Item) ([]loader.Outcome, error)
	Stats() loader.Stats
}

// DeadLetters is what the runner needs of the dead-letter store.
type DeadLetters interface {
	Append(ctx context.Context, entries ...deadletter.Entry) error
	Sync(ctx context.Context) error
}

// Deps are the stages a Runner connects.
type Deps struct {
	Config      Config
	Command     string // run | watch | replay | validate
	RunID       string
	Transformer *transform.Transformer
	Writer      Writer             // nil for validate: every valid line counts as loaded, nothing is written
	DeadLetters DeadLetters        // nil for validate: nothing is stored
	Checkpoints ingest.Checkpoints // optional: skip done objects, resume mid-object (watch)
	Logger      *zap.Logger        // nil = nop
	Metrics     *Metrics           // optional
}

// Runner moves the lines of Objects through transform and loader to a final
// outcome, and acknowledges each Object once all its lines have one.
type Runner struct {
	d       Deps
	log     *zap.Logger
	c       counters
	started time.Time
	read    atomic.Int64 // raw (possibly compressed) bytes read from objects, for progress
	stopped atomic.Bool
	stopCh  chan struct{}
	once    sync.Once
	info    deadletter.TransformInfo

	fatalMu sync.Mutex
	fatal   error

	bufs sync.Pool // *batchBuf: line buffers reused across batches
}

// NewRunner returns a Runner over d.
func NewRunner(d Deps) *Runner {
	if d.Logger == nil {
		d.Logger = zap.NewNop()
	}
	r := &Runner{d: d, log: d.Logger, started: time.Now(), stopCh: make(chan struct{})}
	profile, ids, format, mapping, hash := d.Transformer.Info()
	r.info = deadletter.TransformInfo{Format: format, Profile: profile, IDs: ids, Mapping: mapping, MappingHash: hash}
	return r
}

// Stop asks the runner to finish gracefully: no new objects or lines are
// taken; lines already read are finished (loaded or dead-lettered).
func (r *Runner) Stop() {
	r.once.Do(func() {
		r.stopped.Store(true)
		close(r.stopCh)
	})
}

// Stopping is closed once Stop has been called.
func (r *Runner) Stopping() <-chan struct{} { return r.stopCh }

// errFatal marks errors that stop the whole run.
type errFatal struct{ err error }

func (e errFatal) Error() string { return e.err.Error() }
func (e errFatal) Unwrap() error { return e.err }

func (r *Runner) setFatal(err error) {
	r.fatalMu.Lock()
	defer r.fatalMu.Unlock()
	if r.fatal == nil {
		r.fatal = err
	}
}

// Run processes objects until the channel is closed, Stop is called, or a
// fatal error occurs. Canceling ctx abandons in-flight work (it is not
// acknowledged, so it is redelivered or rerun). The report is always returned.
func (r *Runner) Run(ctx context.Context, objects <-chan ingest.Object) *Report {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Batches: bounded, so a reader blocks when the target is saturated.
	batches, bctx := errgroup.WithContext(ctx)
	batches.SetLimit(r.d.Config.Target.Concurrency)
	objs := errgroup.Group{}
	objs.SetLimit(r.d.Config.Source.Objects)

loop:
	for {
		select {
		case <-r.stopCh:
			break loop
		case <-bctx.Done():
			break loop
		case obj, ok := <-objects:
			if !ok {
				break loop
			}
			objs.Go(func() error {
				err := r.processObject(bctx, batches, obj)
				var fe errFatal
				if errors.As(err, &fe) {
					r.setFatal(fe.err)
					cancel()
				}
				return nil
			})
		}
	}
	_ = objs.Wait()
	if err := batches.Wait(); err != nil {
		var fe errFatal
		if errors.As(err, &fe) {
			r.setFatal(fe.err)
		}
	}
	return r.Report(ctx.Err() != nil && r.fatal == nil)
}

// Report returns the report as of now.
func (r *Runner) Report(canceled bool) *Report {
	rep := &Report{RunID: r.d.RunID, Command: r.d.Command, Started: r.started.UTC(), Finished: time.Now().UTC()}
	r.c.report(rep)
	if r.d.Writer != nil {
		st := r.d.Writer.Stats()
		rep.Retries = st.Retries
		rep.Throttled = st.Throttled
	}
	rep.Seconds = rep.Finished.Sub(rep.Started).Seconds()
	if rep.Seconds > 0 {
		rep.ResourcesPerSecond = float64(rep.Loaded) / rep.Seconds
	}
	rep.Interrupted = r.stopped.Load() || canceled
	r.fatalMu.Lock()
	if r.fatal != nil {
		rep.Fatal = r.fatal.Error()
	}
	r.fatalMu.Unlock()
	return rep
}

// rawLine is a line copied out of the reader's buffer.
type rawLine struct {
	no, offset int64
	b          []byte
}

// batchBuf holds one batch's lines; their bytes share one arena so a batch
// costs no allocation per line. It goes back to the Runner's pool once the
// batch has its outcomes (dead-letter entries copy the bytes they keep).
type batchBuf struct {
	lines []rawLine
	arena []byte
}

func (b *batchBuf) add(no, offset int64, line []byte) {
	start := len(b.arena)
	b.arena = append(b.arena, line...)
	b.lines = append(b.lines, rawLine{no: no, offset: offset, b: b.arena[start:len(b.arena):len(b.arena)]})
}

func (r *Runner) getBatch() *batchBuf {
	if b, ok := r.bufs.Get().(*batchBuf); ok {
		return b
	}
	return &batchBuf{}
}

func (r *Runner) putBatch(b *batchBuf) {
	if cap(b.arena) > 16<<20 {
		return // an outsized batch (huge lines): let it go rather than pin it
	}
	clear(b.lines)
	b.lines, b.arena = b.lines[:0], b.arena[:0]
	r.bufs.Put(b)
}

// objState is what the batches of one object share.
type objState struct {
	obj    ingest.Object
	header []byte
	wg     sync.WaitGroup
	mu     sync.Mutex
	err    error // first batch error (fatal or canceled): the object is not acknowledged
	track  lineTracker

	// For the checkpoint-lag gauge: the last line read, and the line of the
	// last checkpoint written.
	lastRead, lastSaved atomic.Int64
}

func (o *objState) fail(err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.err == nil {
		o.err = err
	}
}

// processObject reads one object and waits for all its batches; it returns an
// errFatal when the run must stop.
func (r *Runner) processObject(ctx context.Context, batches *errgroup.Group, obj ingest.Object) (retErr error) {
	log := r.log.With(zap.String("source", obj.URI))
	ack := func(err error) {
		if obj.Ack != nil {
			if aerr := obj.Ack(context.WithoutCancel(ctx), err); aerr != nil {
				log.Warn("acknowledge failed", zap.Error(aerr))
			}
		}
	}
	var resume int64
	if r.d.Checkpoints != nil {
		cp, err := r.d.Checkpoints.Get(ctx, obj.Key())
		if err != nil {
			log.Error("read checkpoint", zap.Error(err))
			ack(err)
			return nil
		}
		if cp.Done {
			r.c.skippedObjects.Add(1)
			log.Info("object already loaded (checkpoint), skipped")
			ack(nil)
			return nil
		}
		resume = cp.Line
	}
	r.c.objects.Add(1)
	r.d.Metrics.objectStarted()
	defer r.d.Metrics.objectFinished()
	start := time.Now()
	log.Info("object started", zap.Int64("resume_after_line", resume))

	rc, err := obj.Open(ctx)
	if errors.Is(err, ingest.ErrMissingObject) {
		r.c.missingObjects.Add(1)
		log.Warn("object missing, dead-lettered", zap.String("reason", "missing-object"))
		if err := r.deadLetter(ctx, deadletter.Entry{Reason: "missing-object", Stage: "read",
			Message: "the object named by the notification does not exist",
			Source:  deadletter.Source{URI: obj.URI, ETag: obj.ETag}}); err != nil {
			ack(err)
			return errFatal{err}
		}
		if err := r.syncDeadLetters(ctx); err != nil {
			ack(err)
			return errFatal{err}
		}
		ack(nil)
		return nil
	}
	if err != nil {
		log.Error("open object", zap.Error(err))
		ack(err)
		return fmt.Errorf("open %s: %w", obj.URI, err)
	}
	defer rc.Close()
	counted := &countingReader{r: rc, n: &r.read}

	st := &objState{obj: obj}
	st.track.committed = resume
	st.lastRead.Store(resume)
	st.lastSaved.Store(resume)
	if r.d.Checkpoints != nil {
		// However the object ends, the lines it read stop lagging.
		defer func() { r.d.Metrics.addCheckpointLag(-(st.lastRead.Load() - st.lastSaved.Load())) }()
	}
	lr, err := ingest.NewLineReader(counted, ingest.LineOptions{
		MaxLineBytes:         r.d.Config.Source.MaxLineBytes,
		MaxDecompressedBytes: r.d.Config.Source.MaxDecompressedBytes,
	})
	if err != nil {
		ack(err)
		return fmt.Errorf("read %s: %w", obj.URI, err)
	}
	stream := r.d.Transformer.NewStream(obj.URI)
	needHeader := r.d.Config.Source.Format == "csv"
	batchSize, batchBytes := r.d.Config.Target.BatchSize, r.d.Config.Target.BatchBytes
	var cur *batchBuf
	var curBytes int
	seq := 0
	dispatch := func() {
		if cur == nil || len(cur.lines) == 0 {
			return
		}
		buf := cur
		lines := buf.lines
		last := lines[len(lines)-1].no
		id := seq
		seq++
		cur, curBytes = nil, 0
		st.wg.Add(1)
		st.track.open(id)
		batches.Go(func() error {
			defer st.wg.Done()
			defer r.putBatch(buf)
			err := r.runBatch(ctx, st, lines)
			if err != nil {
				st.fail(err)
				var fe errFatal
				if errors.As(err, &fe) {
					return err
				}
				return nil
			}
			r.commit(ctx, st, id, last)
			return nil
		})
	}

	var readErr error
	var lastNo int64
	for {
		if r.stopped.Load() || ctx.Err() != nil {
			st.fail(errors.New("interrupted"))
			break
		}
		line, err := lr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			readErr = err
			break
		}
		lastNo = line.No
		if line.No <= resume {
			continue
		}
		if r.d.Checkpoints != nil {
			st.lastRead.Store(line.No)
			r.d.Metrics.addCheckpointLag(1)
		}
		if needHeader && !line.TooLong && len(bytes.TrimSpace(line.Bytes)) > 0 {
			// The CSV header is not a record: it is neither counted nor loaded.
			_, skip, terr := stream.Next(append([]byte(nil), line.Bytes...))
			needHeader = false
			if skip {
				st.header = stream.Header()
				continue
			}
			if terr != nil {
				r.c.lines.Add(1)
				r.failLine(ctx, st, line.No, line.Offset, line.Bytes, false, terr)
				continue
			}
		}
		r.c.lines.Add(1)
		r.d.Metrics.lineRead()
		switch {
		case line.TooLong:
			r.failLine(ctx, st, line.No, line.Offset, line.Bytes, true, &transform.Error{
				Reason: transform.ReasonParse, Message: fmt.Sprintf("line of %d bytes exceeds source.max_line_bytes (%d)", line.Length, r.d.Config.Source.MaxLineBytes)})
		case isBlank(line.Bytes):
			r.c.blank.Add(1)
		default:
			if cur == nil {
				cur = r.getBatch()
			}
			cur.add(line.No, line.Offset, line.Bytes)
			curBytes += len(line.Bytes)
			if len(cur.lines) >= batchSize || curBytes >= batchBytes {
				dispatch()
			}
		}
	}
	dispatch()
	st.wg.Wait()

	if readErr != nil && st.err == nil {
		if errors.Is(readErr, ingest.ErrCorrupt) || errors.Is(readErr, ingest.ErrTooLarge) {
			// The rest of the object cannot be read: one dead letter stands for it.
			r.c.lines.Add(1)
			no := lastNo + 1
			r.failLine(ctx, st, no, -1, nil, false, &transform.Error{Reason: transform.ReasonParse,
				Message: fmt.Sprintf("object unreadable after line %d: %v", no-1, readErr)})
		} else {
			st.fail(readErr)
		}
	}
	if st.err != nil {
		// Not acknowledged: a rerun or redelivery finishes it (writes are idempotent).
		if err := r.syncDeadLetters(context.WithoutCancel(ctx)); err != nil {
			log.Error("sync dead letters", zap.Error(err))
		}
		ack(st.err)
		log.Warn("object not finished", zap.Error(st.err))
		var fe errFatal
		if errors.As(st.err, &fe) {
			return st.err
		}
		return nil
	}
	if err := r.syncDeadLetters(ctx); err != nil {
		ack(err)
		return errFatal{fmt.Errorf("dead-letter store: %w", err)}
	}
	if r.d.Checkpoints != nil {
		if err := r.d.Checkpoints.Put(ctx, obj.Key(), ingest.Checkpoint{Done: true}); err != nil {
			log.Warn("write checkpoint", zap.Error(err))
		}
	}
	ack(nil)
	log.Info("object finished", zap.Duration("took", time.Since(start)))
	return nil
}

// runBatch transforms and loads one batch of lines from one object.
func (r *Runner) runBatch(ctx context.Context, st *objState, lines []rawLine) error {
	items := make([]loader.Item, 0, len(lines))
	idx := make([]int, 0, len(lines))
	// FHIR lines need no state from their object, so one Stream serves the
	// whole batch; Replay would build a fresh validator for every line.
	var stream *transform.Stream
	if f := r.d.Config.Source.Format; f == "" || f == transform.FormatFHIR {
		stream = r.d.Transformer.NewStream(st.obj.URI)
	}
	for i, ln := range lines {
		var res transform.Resource
		var err error
		if stream != nil {
			res, _, err = stream.Next(ln.b)
		} else {
			res, err = r.d.Transformer.Replay(st.obj.URI, st.header, ln.b)
		}
		if err != nil {
			r.failLine(ctx, st, ln.no, ln.offset, ln.b, false, err)
			continue
		}
		items = append(items, loader.Item{Type: res.Type, ID: res.ID, Body: res.Body})
		idx = append(idx, i)
	}
	if len(items) == 0 {
		return nil
	}
	if r.d.Writer == nil { // validate
		r.c.loaded.Add(int64(len(items)))
		return nil
	}
	outs, err := r.d.Writer.Write(ctx, items)
	if err != nil {
		// Only loaded outcomes are final; the other lines have none, so they
		// leave the report (the object is not acknowledged and is redone).
		unsettled := 0
		for j := range items {
			if j < len(outs) && outs[j].Loaded {
				r.loadedOne(outs[j])
			} else {
				unsettled++
			}
		}
		r.c.lines.Add(-int64(unsettled))
		var fe *loader.FatalError
		if errors.As(err, &fe) {
			return errFatal{err}
		}
		return err
	}
	// Counted once per batch: the counters are shared by every batch goroutine.
	var created, updated int64
	defer func() {
		r.c.loaded.Add(created + updated)
		r.c.created.Add(created)
		r.c.updated.Add(updated)
	}()
	for j, out := range outs {
		ln := lines[idx[j]]
		if out.Loaded {
			if out.Created {
				created++
			} else {
				updated++
			}
			continue
		}
		e := r.entry(st, ln.no, ln.offset, ln.b, false)
		e.Reason, e.Stage, e.Message = deadletter.Reason(out.Reason), deadletter.StageLoad, out.Message
		e.ResourceType, e.ResourceID = items[j].Type, items[j].ID
		e.HTTPStatus, e.OperationOutcome, e.Attempts = out.HTTPStatus, out.OperationOutcome, out.Attempts
		if err := r.deadLetter(ctx, e); err != nil {
			return errFatal{fmt.Errorf("dead-letter store: %w", err)}
		}
		r.c.deadLettered(out.Reason, "")
	}
	return nil
}

func (r *Runner) loadedOne(out loader.Outcome) {
	r.c.loaded.Add(1)
	if out.Created {
		r.c.created.Add(1)
	} else {
		r.c.updated.Add(1)
	}
}

// failLine dead-letters one line that failed before loading.
func (r *Runner) failLine(ctx context.Context, st *objState, no, offset int64, b []byte, truncated bool, err error) {
	reason, location, msg := transform.ReasonParse, "", err.Error()
	var te *transform.Error
	if errors.As(err, &te) {
		reason, location = te.Reason, te.Location
	}
	e := r.entry(st, no, offset, b, truncated)
	e.Reason, e.Stage, e.Message = deadletter.Reason(reason), deadletter.StageTransform, msg
	if truncated || b == nil {
		e.Stage = "read"
	}
	e.Attempts = 1
	if derr := r.deadLetter(ctx, e); derr != nil {
		st.fail(errFatal{fmt.Errorf("dead-letter store: %w", derr)})
		return
	}
	r.c.deadLettered(reason, location)
}

func (r *Runner) entry(st *objState, no, offset int64, b []byte, truncated bool) deadletter.Entry {
	line, b64 := deadletter.MakeLine(b)
	return deadletter.Entry{
		RunID: r.d.RunID,
		Source: deadletter.Source{URI: st.obj.URI, ETag: st.obj.ETag, Line: no, Offset: offset,
			Header: string(st.header)},
		Line: line, LineBase64: b64, LineTruncated: truncated, Attempts: 1,
		Transform: r.info,
	}
}

func (r *Runner) deadLetter(ctx context.Context, e deadletter.Entry) error {
	if e.RunID == "" {
		e.RunID = r.d.RunID
	}
	if e.Transform == (deadletter.TransformInfo{}) {
		e.Transform = r.info
	}
	now := time.Now().UTC()
	e.FirstFailed, e.LastFailed = now, now
	r.log.Info("dead-lettered",
		zap.String("source", e.Source.URI), zap.Int64("line", e.Source.Line),
		zap.String("reason", string(e.Reason)), zap.String("stage", string(e.Stage)),
		zap.String("resource_type", e.ResourceType), zap.String("resource_id", e.ResourceID),
		zap.Int("status", e.HTTPStatus), zap.String("detail", e.Message))
	r.d.Metrics.deadLettered(string(e.Reason))
	if r.d.DeadLetters == nil {
		return nil
	}
	return r.d.DeadLetters.Append(context.WithoutCancel(ctx), e)
}

func (r *Runner) syncDeadLetters(ctx context.Context) error {
	if r.d.DeadLetters == nil {
		return nil
	}
	return r.d.DeadLetters.Sync(ctx)
}

// commit records that a batch finished, and writes a mid-object checkpoint
// when the contiguous finished prefix of the object moved far enough.
func (r *Runner) commit(ctx context.Context, st *objState, id int, last int64) {
	line, moved := st.track.done(id, last)
	if !moved || r.d.Checkpoints == nil || ctx.Err() != nil {
		return
	}
	if err := r.syncDeadLetters(ctx); err != nil {
		return
	}
	if err := r.d.Checkpoints.Put(ctx, st.obj.Key(), ingest.Checkpoint{Line: line}); err != nil {
		r.log.Warn("write checkpoint", zap.String("source", st.obj.URI), zap.Error(err))
		return
	}
	if prev := st.lastSaved.Swap(line); line > prev {
		r.d.Metrics.addCheckpointLag(-(line - prev))
	}
}

// BytesRead is how many raw bytes the runner has read from objects so far
// (compressed bytes for gzip objects, so it compares with object sizes).
func (r *Runner) BytesRead() int64 { return r.read.Load() }

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

// lineTracker finds the last line before which every batch of an object has
// finished; batches finish out of order.
type lineTracker struct {
	mu        sync.Mutex
	next      int           // lowest unfinished batch id
	finished  map[int]int64 // finished batch id -> its last line
	committed int64         // every line <= committed has an outcome
	saved     int64         // committed as of the last checkpoint
	pending   map[int]struct{}
}

func (t *lineTracker) open(id int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.pending == nil {
		t.pending = map[int]struct{}{}
		t.finished = map[int]int64{}
	}
	t.pending[id] = struct{}{}
}

// done marks batch id finished; it reports the committed line and whether a
// checkpoint is due (every 20 batches of progress).
func (t *lineTracker) done(id int, last int64) (int64, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.pending, id)
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
	if t.next%20 == 0 && t.committed > t.saved {
		t.saved = t.committed
		return t.committed, true
	}
	return t.committed, false
}

// DeadLetterMessage stores a queue message that is not an S3 event, so that
// it is kept (verbatim) before the message is deleted.
func (r *Runner) DeadLetterMessage(ctx context.Context, queueURL, messageID string, body []byte, reason string) error {
	line, b64 := deadletter.MakeLine(body)
	e := deadletter.Entry{
		RunID: r.d.RunID, Reason: transform.ReasonParse, Stage: "receive",
		Message: "queue message is not an S3 event notification: " + reason,
		Source:  deadletter.Source{URI: queueURL + "#" + messageID},
		Line:    line, LineBase64: b64, Attempts: 1, Transform: r.info,
	}
	if err := r.deadLetter(ctx, e); err != nil {
		return err
	}
	return r.syncDeadLetters(ctx)
}
