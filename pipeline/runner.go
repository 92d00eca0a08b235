package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/semaphore"

	"github.com/fhirload/fhirload/deadletter"
	"github.com/fhirload/fhirload/ingest"
	"github.com/fhirload/fhirload/transform"
)

// DeadLetters is what the runner needs of the dead-letter store.
type DeadLetters interface {
	// Put stores entries durably: on a nil error every one is stored, on
	// an error none is (the runner then counts them unsettled, never
	// dead-lettered).
	Put(ctx context.Context, entries ...deadletter.Entry) error
}

// ReplayStore is what a replay needs of the dead-letter store.
type ReplayStore interface {
	// Retire removes entries whose lines are loaded now.
	Retire(ctx context.Context, ids ...string) error
	// Replace records a new version of entries that failed again.
	Replace(ctx context.Context, entries ...deadletter.Entry) error
}

// Deps are the stages a Runner connects.
type Deps struct {
	Config      Config
	Command     string // run | watch | replay | validate | verify
	RunID       string
	Transformer *transform.Transformer // nil: the default transform (fhir, seed, keep)
	// Sink receives the valid resources. Nil (validate): every valid line
	// counts as loaded and nothing is written.
	Sink Sink
	// DeadLetters stores the lines that fail. Nil (validate): failures are
	// counted, nothing is stored.
	DeadLetters DeadLetters
	// Replay settles replayed entries (required when the Source hands out
	// Objects with Replay entries, unless nothing is written).
	Replay ReplayStore
	// Checkpoints, when set, skip objects already done and resume an object
	// after its last checkpointed line (watch).
	Checkpoints ingest.Checkpoints
	Logger      *zap.Logger // nil = nop
	Metrics     *Metrics    // nil = none
}

// Runner moves the lines of a Source's Objects through transform and a Sink
// to a final outcome — loaded or durably dead-lettered — and acknowledges
// each Object exactly once, after all its lines have one.
//
// Stages: per object, a reader turns the bytes into records and cuts them
// into batches (source.objects objects at a time); per batch, a worker
// transforms (at most one batch per CPU at once) and writes to the sink (at
// most target.concurrency batches in flight), then settles every line
// through one function that stores and counts dead letters together.
type Runner struct {
	d       Deps
	cfg     Config
	log     *zap.Logger
	c       counters
	started time.Time
	info    deadletter.TransformInfo
	read    atomic.Int64 // raw bytes read from objects, for progress

	stopped atomic.Bool
	stopCh  chan struct{}
	once    sync.Once

	fatalMu sync.Mutex
	fatal   error
	cancel  context.CancelFunc // of Run's context: a fatal error abandons in-flight work

	cpu      chan struct{}       // transform slots: one per CPU
	inflight chan struct{}       // batches between reader and settle
	bytes    *semaphore.Weighted // input bytes those batches hold (memory stays flat whatever the line sizes)
	budget   int64
	bufs     sync.Pool // *batch: line buffers reused across batches

	seq      atomic.Uint32
	waitMu   sync.Mutex
	awaiting map[uint32]*objectRun // objects with items a DeferredSink still holds
}

// NewRunner returns a Runner over d. Zero values of d.Config take the
// defaults of Defaults(); transform work runs on as many batches at once as
// there are CPUs, whatever target.concurrency says.
func NewRunner(d Deps) *Runner {
	if d.Logger == nil {
		d.Logger = zap.NewNop()
	}
	if d.Transformer == nil {
		d.Transformer, _ = transform.New(transform.Options{})
	}
	cfg := d.Config.withDefaults()
	cpus := runtime.GOMAXPROCS(0)
	r := &Runner{
		d: d, cfg: cfg, log: d.Logger, started: time.Now(), stopCh: make(chan struct{}),
		cpu:      make(chan struct{}, cpus),
		inflight: make(chan struct{}, cfg.Target.Concurrency+cpus),
		budget:   inflightBytes(cfg),
		awaiting: map[uint32]*objectRun{},
	}
	r.bytes = semaphore.NewWeighted(r.budget)
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

// BytesRead is how many raw bytes the runner has read from objects so far
// (compressed bytes for gzip objects, so it compares with object sizes).
func (r *Runner) BytesRead() int64 { return r.read.Load() }

// setFatal records the first fatal error and abandons in-flight work.
func (r *Runner) setFatal(err error) {
	r.fatalMu.Lock()
	if r.fatal == nil {
		r.fatal = err
		r.log.Error("fatal: stopping", zap.Error(err))
	}
	cancel := r.cancel
	r.fatalMu.Unlock()
	if cancel != nil {
		cancel()
	}
}

func (r *Runner) fatalErr() error {
	r.fatalMu.Lock()
	defer r.fatalMu.Unlock()
	return r.fatal
}

// Run takes objects from src until it is exhausted, Stop is called, or a
// fatal error occurs, and returns the report (always). Canceling ctx
// abandons in-flight work: it is not acknowledged, so it is redelivered or
// rerun. Run closes src.
func (r *Runner) Run(ctx context.Context, src Source) *Report {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r.fatalMu.Lock()
	r.cancel = cancel
	r.fatalMu.Unlock()

	slots := make(chan struct{}, r.cfg.Source.Objects)
	var objs sync.WaitGroup
	for !r.stopped.Load() && ctx.Err() == nil {
		select {
		case slots <- struct{}{}:
		case <-r.stopCh:
			continue
		case <-ctx.Done():
			continue
		}
		obj, err := r.next(ctx, src)
		if err != nil {
			<-slots
			if err != io.EOF && ctx.Err() == nil && !r.stopped.Load() {
				r.setFatal(fmt.Errorf("source: %w", err))
			}
			break
		}
		objs.Add(1)
		go func() {
			defer objs.Done()
			// The slot bounds objects being read; one read to its end frees
			// it while its last batches finish (no pipeline bubble at each
			// object's end: batches in flight are bounded on their own).
			var once sync.Once
			release := func() { once.Do(func() { <-slots }) }
			defer release()
			r.object(ctx, obj, release)
		}()
	}
	objs.Wait()
	r.flushDeferred(ctx)
	if err := src.Close(); err != nil {
		r.log.Warn("close source", zap.Error(err))
	}
	return r.Report(ctx.Err() != nil && r.fatalErr() == nil)
}

// next takes the next object, giving up when the runner stops.
func (r *Runner) next(ctx context.Context, src Source) (Object, error) {
	nctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-r.stopCh:
			cancel()
		case <-nctx.Done():
		}
	}()
	return src.Next(nctx)
}

// Report returns the report as of now.
func (r *Runner) Report(canceled bool) *Report {
	rep := &Report{RunID: r.d.RunID, Command: r.d.Command, Started: r.started.UTC(), Finished: time.Now().UTC()}
	r.c.report(rep)
	if s, ok := r.d.Sink.(StatsSink); ok {
		st := s.Stats()
		rep.Retries, rep.Throttled = st.Retries, st.Throttled
	}
	rep.Seconds = rep.Finished.Sub(rep.Started).Seconds()
	if rep.Seconds > 0 {
		rep.ResourcesPerSecond = float64(rep.Loaded) / rep.Seconds
	}
	rep.Interrupted = r.stopped.Load() || canceled
	if err := r.fatalErr(); err != nil {
		rep.Fatal = err.Error()
	}
	return rep
}

// flushDeferred settles what a DeferredSink still holds, then finishes the
// objects that waited for it.
func (r *Runner) flushDeferred(ctx context.Context) {
	ds, ok := r.d.Sink.(DeferredSink)
	r.waitMu.Lock()
	waiting := r.awaiting
	r.awaiting = map[uint32]*objectRun{}
	r.waitMu.Unlock()
	if !ok || len(waiting) == 0 {
		for _, o := range waiting {
			o.abandonDeferred()
		}
		return
	}
	if r.fatalErr() == nil && !r.stopped.Load() && ctx.Err() == nil {
		err := ds.Flush(ctx, func(token uint64, out Outcome) {
			if o := waiting[uint32(token>>32)]; o != nil {
				o.settleDeferred(ctx, uint32(token), out)
			}
		})
		if err != nil && ctx.Err() == nil {
			r.setFatal(fmt.Errorf("sink: %w", err))
		}
	}
	for _, o := range waiting {
		o.finishDeferred(ctx)
	}
}

// inflightBytes is the budget of input bytes the batches in flight may hold:
// two full batches (target.batch_bytes), and never less than one line of
// source.max_line_bytes. What a batch turns into (bodies, Bundles) is of the
// same order, so this bounds the memory of a run whatever its line sizes.
func inflightBytes(c Config) int64 {
	return max(2*int64(c.Target.BatchBytes), int64(c.Source.MaxLineBytes))
}

// withDefaults fills the zero values of c from Defaults().
func (c Config) withDefaults() Config {
	d := Defaults()
	if c.Source.Format == "" {
		c.Source.Format = d.Source.Format
	}
	if c.Transform.References == "" {
		c.Transform.References = d.Transform.References
	}
	if c.Source.MaxLineBytes <= 0 {
		c.Source.MaxLineBytes = d.Source.MaxLineBytes
	}
	if c.Source.MaxDecompressedBytes <= 0 {
		c.Source.MaxDecompressedBytes = d.Source.MaxDecompressedBytes
	}
	if c.Source.Objects <= 0 {
		c.Source.Objects = d.Source.Objects
	}
	if c.Target.BatchSize <= 0 {
		c.Target.BatchSize = d.Target.BatchSize
	}
	if c.Target.BatchBytes <= 0 {
		c.Target.BatchBytes = d.Target.BatchBytes
	}
	if c.Target.Concurrency <= 0 {
		c.Target.Concurrency = d.Target.Concurrency
	}
	return c
}

// errInterrupted marks an object left unfinished because the runner stopped.
var errInterrupted = errors.New("interrupted: the object is left unfinished (it is redone by a rerun or redelivery)")
