package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"go.uber.org/zap"

	"github.com/fhirload/fhirload/pipeline"
	"github.com/fhirload/fhirload/transform"
	"github.com/fhirload/fhirload/verify"
)

// runCmd implements `run` and `validate`.
func runCmd(ctx context.Context, sig *signals, command string, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet(command, flag.ContinueOnError)
	fs.SetOutput(stderr)
	loadCfg := configFlag(fs)
	reportPath := fs.String("report", "", "write the run report (JSON) to this file")
	metricsAddr := fs.String("metrics-addr", "", "serve Prometheus /metrics, /healthz, /readyz on this address (default off)")
	verifyAfter := false
	if command == "run" {
		fs.BoolVar(&verifyAfter, "verify", false, "after the load, read the sources back from the target and compare (the verify report goes under \"verify\")")
	}
	if err := fs.Parse(args); err != nil {
		return 1
	}
	cfg, err := loadCfg()
	if err != nil {
		return fail(stderr, "%v", err)
	}
	sources := fs.Args()
	if len(sources) == 0 {
		sources = cfg.Source.Paths
	}
	if len(sources) == 0 {
		return fail(stderr, "no sources: name files, folders, globs or s3://bucket/prefix, or set source.paths")
	}
	e, err := newEnv(cfg, stderr)
	if err != nil {
		return fail(stderr, "%v", err)
	}
	defer e.close()
	senv := e.sourceEnv()
	var spool *stdinSpool
	if verifyAfter {
		if spool, err = newStdinSpool(sources); err != nil {
			return fail(stderr, "%v", err)
		}
		if spool != nil {
			defer spool.remove()
			senv.Stdin = spool.tee(senv.Stdin)
		}
	}
	// Sources first: a missing path is fatal before anything is written.
	src, err := pipeline.OpenSources(ctx, senv, sources)
	if err != nil {
		return fail(stderr, "%v", err)
	}
	refs, err := e.referenceIndex(ctx, sources)
	if err != nil {
		_ = src.Close()
		return fail(stderr, "%v", err)
	}
	tr, err := e.transformer(refs)
	if err != nil {
		_ = src.Close()
		return fail(stderr, "%v", err)
	}
	var metrics *pipeline.Metrics
	if *metricsAddr != "" || cfg.Metrics.Addr != "" {
		metrics = pipeline.NewMetrics()
	}
	deps := pipeline.Deps{Config: cfg, Command: command, RunID: e.runID, Transformer: tr, Logger: e.log, Metrics: metrics}
	progress := loadProgress
	switch {
	case command == "run" && cfg.Target.Mode == modeImport:
		dl, sink, err := e.importStages(ctx, metrics)
		if err != nil {
			_ = src.Close()
			return fail(stderr, "%v", err)
		}
		deps.DeadLetters, deps.Sink, progress = dl, sink, importProgress(sink)
	case command == "run":
		dl, w, err := e.loadStages(ctx, metrics)
		if err != nil {
			_ = src.Close()
			return fail(stderr, "%v", err)
		}
		deps.DeadLetters, deps.Sink = dl, pipeline.LoaderSink{W: w}
	}
	var v *verifier
	if verifyAfter {
		// Built before the load: a target that refuses reads fails now.
		if v, err = e.verifier(ctx, metrics, false); err != nil {
			_ = src.Close()
			return fail(stderr, "%v", err)
		}
	}
	if metrics != nil {
		addr := *metricsAddr
		if addr == "" {
			addr = cfg.Metrics.Addr
		}
		if _, err := metrics.Serve(ctx, addr, nil); err != nil {
			_ = src.Close()
			return fail(stderr, "metrics listener: %v", err)
		}
	}
	runner := pipeline.NewRunner(deps)
	total, _ := pipeline.SourceSize(src)
	stopProgress := startProgressWith(runner, total, stderr, e.log, progress)
	rep := awaitRun(ctx, sig, runner, func(ctx context.Context) *pipeline.Report { return runner.Run(ctx, src) }, e.log)
	stopProgress()
	rep.RepeatedIDs = e.repeatedIDs
	if v == nil {
		return finish(rep, *reportPath, sig, stderr)
	}
	return verifyAfterRun(ctx, sig, v, tr, rep, sources, spool, *reportPath, stderr)
}

// verifyAfterRun is the second half of `run --verify`: when the load
// finished (fatal and interrupted loads are not verified) it reads the same
// sources back and compares. The report file holds the run's report with
// the verify report under "verify"; the exit code is 1 when either part is
// fatal or the verification incomplete, else the larger of the two (2: a
// line dead-lettered, or a resource missing or different).
func verifyAfterRun(ctx context.Context, sig *signals, v *verifier, tr *transform.Transformer, rep *pipeline.Report,
	sources []string, spool *stdinSpool, reportPath string, stderr io.Writer) int {
	if rep.Fatal != "" || rep.Interrupted {
		v.e.log.Warn("the load did not finish: not verified")
		return finish(rep, reportPath, sig, stderr)
	}
	senv := v.e.sourceEnv()
	if spool != nil {
		in, err := spool.replay()
		if err != nil {
			return fail(stderr, "%v", err)
		}
		senv.Stdin = in
	}
	vrep := &verify.Report{Command: "verify", RunID: v.e.runID, Mismatches: []verify.Mismatch{}}
	if src, err := pipeline.OpenSources(ctx, senv, sources); err != nil {
		vrep.Fatal = fmt.Sprintf("verify: %v", err)
	} else {
		vrep = v.run(ctx, sig, src, tr, stderr) // the run's transform: the same ids and references
	}
	if reportPath != "" {
		if err := (runVerifyReport{Report: rep, Verify: vrep}).writeFile(reportPath); err != nil {
			fmt.Fprintf(stderr, "fhirload: write report: %v\n", err)
		}
	}
	rep.Summary(stderr)
	vrep.Summary(stderr)
	if vrep.Interrupted && sig.received != nil {
		return exitCodeFor(sig.received)
	}
	runCode, verifyCode := rep.ExitCode(), vrep.ExitCode()
	if verifyCode == 1 {
		return verifyExit(vrep, sig, stderr)
	}
	return max(runCode, verifyCode)
}

// awaitRun runs fn; on the first signal it asks the runner to stop gracefully
// and gives in-flight work a bounded time to drain before canceling.
func awaitRun(ctx context.Context, sig *signals, runner *pipeline.Runner, fn func(context.Context) *pipeline.Report, log *zap.Logger) *pipeline.Report {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan *pipeline.Report, 1)
	go func() { done <- fn(ctx) }()
	select {
	case rep := <-done:
		return rep
	case s := <-sig.graceful:
		log.Warn("signal received: finishing in-flight lines, taking no new ones", zap.String("signal", s.String()))
		sig.received = s
		runner.Stop()
	}
	select {
	case rep := <-done:
		return rep
	case <-time.After(drainTimeout):
		log.Warn("drain timed out: abandoning in-flight requests (they are not acknowledged and will be redone)")
		cancel()
		return <-done
	}
}

const drainTimeout = 7 * time.Second

// finish writes the report and the summary and returns the exit code.
func finish(rep *pipeline.Report, reportPath string, sig *signals, stderr io.Writer) int {
	if reportPath != "" {
		if err := rep.WriteFile(reportPath); err != nil {
			fmt.Fprintf(stderr, "fhirload: write report: %v\n", err)
		}
	}
	rep.Summary(stderr)
	if rep.Fatal != "" {
		return fail(stderr, "%s", rep.Fatal)
	}
	if rep.Interrupted && sig.received != nil {
		return exitCodeFor(sig.received)
	}
	return rep.ExitCode()
}
