package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"go.uber.org/zap"

	"github.com/fhirload/fhirload/deadletter"
	"github.com/fhirload/fhirload/ingest"
	"github.com/fhirload/fhirload/pipeline"
	"github.com/fhirload/fhirload/transform"
)

func watchCmd(ctx context.Context, sig *signals, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("watch", flag.ContinueOnError)
	fs.SetOutput(stderr)
	loadCfg := configFlag(fs)
	queue := fs.String("queue", "", "SQS queue URL (default source.queue_url)")
	metricsAddr := fs.String("metrics-addr", "127.0.0.1:9464", "Prometheus /metrics, /healthz, /readyz listener (empty: off)")
	reportPath := fs.String("report", "", "write a report (JSON) when the worker stops")
	if err := fs.Parse(args); err != nil {
		return 1
	}
	cfg, err := loadCfg()
	if err != nil {
		return fail(stderr, "%v", err)
	}
	if *queue != "" {
		cfg.Source.QueueURL = *queue
	}
	if cfg.Target.Mode == modeImport {
		return fail(stderr, "%v", errWatchImport)
	}
	if cfg.Source.QueueURL == "" {
		return fail(stderr, "watch needs a queue: --queue URL or source.queue_url")
	}
	e, err := newEnv(cfg, stderr)
	if err != nil {
		return fail(stderr, "%v", err)
	}
	defer e.close()
	tr, err := e.transformer(nil) // no pre-pass: objects arrive one by one
	if err != nil {
		return fail(stderr, "%v", err)
	}
	var metrics *pipeline.Metrics
	if *metricsAddr != "" {
		metrics = pipeline.NewMetrics()
	}
	dl, w, err := e.loadStages(ctx, metrics)
	if err != nil {
		return fail(stderr, "%v", err)
	}
	s3c, err := e.s3(ctx)
	if err != nil {
		return fail(stderr, "%v", err)
	}
	sqsc, err := e.sqs(ctx)
	if err != nil {
		return fail(stderr, "%v", err)
	}
	cpURL := cfg.CheckpointURL()
	cps, err := ingest.OpenCheckpoints(ctx, cpURL, s3c)
	if err != nil {
		return fail(stderr, "checkpoints %s: %v", cpURL, err)
	}
	defer cps.Close()
	suffixes := cfg.SourceSuffixes()
	runner := pipeline.NewRunner(pipeline.Deps{Config: cfg, Command: "watch", RunID: e.runID, Transformer: tr,
		Sink: pipeline.LoaderSink{W: w}, DeadLetters: dl, Checkpoints: cps, Logger: e.log, Metrics: metrics})
	sqsSrc := ingest.NewSQSSource(sqsc, &ingest.S3Source{Client: s3c, Suffixes: suffixes, Logger: e.log}, ingest.SQSOptions{
		QueueURL: cfg.Source.QueueURL, WaitSeconds: cfg.Source.WaitSeconds, VisibilityTimeout: cfg.Source.VisibilityTimeout,
		// Take no more messages than objects are worked on at once: the rest
		// stay visible for other workers instead of waiting here, hidden.
		MaxMessages: int32(min(cfg.Source.Objects, 10)),
		Logger:      e.log, OnReceived: metrics.SQSReceived, OnDeleted: metrics.SQSDeleted,
		OnNotEvent: func(ctx context.Context, id string, body []byte, reason string) error {
			return runner.DeadLetterMessage(ctx, cfg.Source.QueueURL, id, body, reason)
		},
	})
	if metrics != nil {
		ready := func(ctx context.Context) error {
			if err := w.Check(ctx); err != nil {
				return err
			}
			_, err := sqsc.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: aws.String(cfg.Source.QueueURL)})
			return err
		}
		addr, err := metrics.Serve(ctx, *metricsAddr, ready)
		if err != nil {
			_ = sqsSrc.Close()
			return fail(stderr, "metrics listener: %v", err)
		}
		e.log.Info("metrics listening", zap.String("addr", addr.String()))
	}
	e.log.Info("watching", zap.String("queue", cfg.Source.QueueURL))
	src := pipeline.FromIngest(ingest.NewQueue(sqsSrc))
	rep := awaitRun(ctx, sig, runner, func(ctx context.Context) *pipeline.Report { return runner.Run(ctx, src) }, e.log)
	code := finish(rep, *reportPath, sig, stderr)
	if code == 2 { // a worker that dead-lettered lines did its job
		code = 0
	}
	return code
}

func enqueueCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("enqueue", flag.ContinueOnError)
	fs.SetOutput(stderr)
	loadCfg := configFlag(fs)
	queue := fs.String("queue", "", "SQS queue URL (default source.queue_url)")
	if err := fs.Parse(args); err != nil {
		return 1
	}
	cfg, err := loadCfg()
	if err != nil {
		return fail(stderr, "%v", err)
	}
	if *queue == "" {
		*queue = cfg.Source.QueueURL
	}
	if *queue == "" || fs.NArg() == 0 {
		return fail(stderr, "usage: fhirload enqueue --queue URL s3://bucket/prefix ...")
	}
	e, err := newEnv(cfg, stderr)
	if err != nil {
		return fail(stderr, "%v", err)
	}
	defer e.close()
	s3c, err := e.s3(ctx)
	if err != nil {
		return fail(stderr, "%v", err)
	}
	sqsc, err := e.sqs(ctx)
	if err != nil {
		return fail(stderr, "%v", err)
	}
	suffixes := cfg.SourceSuffixes()
	total := 0
	for _, uri := range fs.Args() {
		n, err := ingest.Enqueue(ctx, sqsc, *queue, &ingest.S3Source{Client: s3c, Suffixes: suffixes, Logger: e.log}, uri)
		total += n
		if err != nil {
			return fail(stderr, "enqueue %s: %v (%d sent)", uri, err, total)
		}
	}
	fmt.Fprintf(stdout, "enqueued %d objects\n", total)
	return 0
}

// filterFlags are the dead-letter selection flags of ls, purge and replay.
func filterFlags(fs *flag.FlagSet) func() (deadletter.Filter, error) {
	reason := fs.String("reason", "", "only entries with this reason")
	source := fs.String("source", "", "only entries whose source URI matches this glob (or contains it)")
	run := fs.String("run", "", "only entries of this run id")
	since := fs.String("since", "", "only entries that last failed at or after this time (RFC3339, or a duration like 24h)")
	return func() (deadletter.Filter, error) {
		f := deadletter.Filter{Reason: deadletter.Reason(*reason), Source: *source, RunID: *run}
		if *since != "" {
			if d, err := time.ParseDuration(*since); err == nil {
				f.Since = time.Now().Add(-d)
			} else if t, err := time.Parse(time.RFC3339, *since); err == nil {
				f.Since = t
			} else {
				return f, fmt.Errorf("--since: %q is neither RFC3339 nor a duration", *since)
			}
		}
		return f, nil
	}
}

func replayCmd(ctx context.Context, sig *signals, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	loadCfg := configFlag(fs)
	filter := filterFlags(fs)
	dryRun := fs.Bool("dry-run", false, "transform the selected entries and report; write nothing")
	reportPath := fs.String("report", "", "write the run report (JSON) to this file")
	if err := fs.Parse(args); err != nil {
		return 1
	}
	cfg, err := loadCfg()
	if err != nil {
		return fail(stderr, "%v", err)
	}
	f, err := filter()
	if err != nil {
		return fail(stderr, "%v", err)
	}
	e, err := newEnv(cfg, stderr)
	if err != nil {
		return fail(stderr, "%v", err)
	}
	defer e.close()
	dl, err := e.deadLetters(ctx)
	if err != nil {
		return fail(stderr, "%v", err)
	}
	unlock, err := dl.Lock(ctx, "replay", time.Minute)
	if errors.Is(err, deadletter.ErrLocked) {
		// err names the holder and, for S3, when its lease expires: a killed
		// replay's lease blocks until then.
		return fail(stderr, "another replay holds the dead-letter store's lock (%v); try again when it has finished", err)
	}
	if err != nil {
		return fail(stderr, "lock dead-letter store: %v", err)
	}
	defer func() { _ = unlock() }()
	entries, err := dl.List(ctx, f)
	if err != nil {
		return fail(stderr, "list dead letters: %v", err)
	}
	open := pipeline.ObjectOpener(ctx, e.sourceEnv())
	var refs *transform.Index
	if cfg.Transform.References == "index" && len(entries) > 0 {
		// The replayed lines' references find their targets in the objects
		// the lines came from, as in the run.
		if refs, err = e.prepass(ctx, pipeline.OriginsOf(entries, open)); err != nil {
			return fail(stderr, "%v", err)
		}
	}
	tr, err := e.transformer(refs)
	if err != nil {
		return fail(stderr, "%v", err)
	}
	deps := pipeline.Deps{Config: cfg, Command: "replay", RunID: e.runID, Transformer: tr, Logger: e.log}
	if !*dryRun && len(entries) > 0 {
		w, err := e.writer(ctx, nil)
		if err != nil {
			return fail(stderr, "%v", err)
		}
		if err := checkTarget(ctx, w, e.log); err != nil {
			return fail(stderr, "%v", err)
		}
		deps.Sink, deps.DeadLetters, deps.Replay = pipeline.LoaderSink{W: w}, dl, dl
	}
	runner := pipeline.NewRunner(deps)
	e.log.Info("replaying", zap.Int("entries", len(entries)), zap.Bool("dry_run", *dryRun))
	// One object of entries fills every batch slot of the sink.
	src := pipeline.NewReplaySource(entries, cfg.Target.BatchSize*cfg.Target.Concurrency, open)
	stopProgress := startProgress(runner, 0, stderr, e.log)
	rep := awaitRun(ctx, sig, runner, func(ctx context.Context) *pipeline.Report { return runner.Run(ctx, src) }, e.log)
	stopProgress()
	return finish(rep, *reportPath, sig, stderr)
}

func deadletterCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		return fail(stderr, "usage: fhirload deadletter ls|show|purge [flags]")
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("deadletter "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	loadCfg := configFlag(fs)
	filter := filterFlags(fs)
	asJSON := fs.Bool("json", false, "ls: one JSON object per line")
	yes := fs.Bool("yes", false, "purge: really delete the selected entries")
	force := fs.Bool("force", false, "purge: purge even while a replay holds the dead-letter store's lease "+
		"(purge takes that lease and otherwise refuses: the replay may load entries that are purged)")
	if err := fs.Parse(args); err != nil {
		return 1
	}
	cfg, err := loadCfg()
	if err != nil {
		return fail(stderr, "%v", err)
	}
	f, err := filter()
	if err != nil {
		return fail(stderr, "%v", err)
	}
	cfg.Log.Level = "warn"
	e, err := newEnv(cfg, stderr)
	if err != nil {
		return fail(stderr, "%v", err)
	}
	defer e.close()
	dl, err := e.deadLetters(ctx)
	if err != nil {
		return fail(stderr, "%v", err)
	}
	switch sub {
	case "ls":
		entries, err := dl.List(ctx, f)
		if err != nil {
			return fail(stderr, "%v", err)
		}
		if err := deadletter.WriteList(stdout, entries, *asJSON); err != nil {
			return fail(stderr, "%v", err)
		}
		return 0
	case "show":
		if fs.NArg() != 1 {
			return fail(stderr, "usage: fhirload deadletter show ID")
		}
		en, err := dl.Get(ctx, fs.Arg(0))
		if err != nil {
			return fail(stderr, "%v", err)
		}
		if err := deadletter.WriteEntry(stdout, en); err != nil {
			return fail(stderr, "%v", err)
		}
		return 0
	case "purge":
		return purge(ctx, e, dl, f, *yes, *force, stdout, stderr)
	}
	return fail(stderr, "unknown deadletter command %q (ls, show, purge)", sub)
}

// purge retires the entries f selects. It holds the "replay" lease while it
// does, so that it never purges entries a running replay holds (and no replay
// starts meanwhile); while another process holds the lease it refuses, unless
// force.
func purge(ctx context.Context, e *env, dl deadletter.Store, f deadletter.Filter, yes, force bool, stdout, stderr io.Writer) int {
	if !yes {
		entries, err := dl.List(ctx, f)
		if err != nil {
			return fail(stderr, "%v", err)
		}
		fmt.Fprintf(stdout, "%d entries selected; run again with --yes to delete them\n", len(entries))
		return 0
	}
	unlock, err := dl.Lock(ctx, "replay", time.Minute)
	var held *deadletter.LockedError
	switch {
	case errors.As(err, &held) && !force:
		return fail(stderr, "a replay is running (%s): purge refused; --force to override", leaseHolder(held))
	case errors.As(err, &held):
		e.log.Warn("a replay is running: purging anyway (--force)", zap.Int("replay_pid", held.PID),
			zap.String("replay_host", held.Host), zap.Time("replay_since", held.Since))
	case err != nil:
		return fail(stderr, "lock dead-letter store: %v", err)
	default:
		defer func() {
			if err := unlock(); err != nil {
				e.log.Warn("dead-letter lease", zap.Error(err))
			}
		}()
	}
	entries, err := dl.List(ctx, f)
	if err != nil {
		return fail(stderr, "%v", err)
	}
	ids := make([]string, len(entries))
	for i, en := range entries {
		ids[i] = en.ID
	}
	if err := dl.Retire(ctx, ids...); err != nil {
		return fail(stderr, "%v", err)
	}
	fmt.Fprintf(stdout, "purged %d entries\n", len(entries))
	return 0
}

// leaseHolder describes who holds a lease: "since T, pid P on H".
func leaseHolder(l *deadletter.LockedError) string {
	since := "an unknown time"
	if !l.Since.IsZero() {
		since = l.Since.UTC().Format(time.RFC3339)
	}
	if l.PID <= 0 {
		return "since " + since
	}
	return fmt.Sprintf("since %s, pid %d on %s", since, l.PID, l.Host)
}

func configCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "check" {
		return fail(stderr, "usage: fhirload config check [--config FILE]")
	}
	fs := flag.NewFlagSet("config check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	loadCfg := configFlag(fs)
	if err := fs.Parse(args[1:]); err != nil {
		return 1
	}
	cfg, err := loadCfg()
	if err != nil {
		return fail(stderr, "%v", err)
	}
	fmt.Fprint(stdout, cfg.Effective())
	return 0
}
