package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"

	"go.uber.org/zap"

	"github.com/fhirload/fhirload/pipeline"
	"github.com/fhirload/fhirload/transform"
	"github.com/fhirload/fhirload/verify"
)

// verifyCmd implements `fhirload verify`: the sources go through the same
// transform and batching as `run`, and each batch is read back from the
// target and compared. Nothing is written to the target or to the
// dead-letter store.
func verifyCmd(ctx context.Context, sig *signals, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	loadCfg := configFlag(fs)
	reportPath := fs.String("report", "", "write the verify report (JSON) to this file")
	metricsAddr := fs.String("metrics-addr", "", "serve Prometheus /metrics, /healthz, /readyz on this address (default off)")
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
	src, err := pipeline.OpenSources(ctx, e.sourceEnv(), sources)
	if err != nil {
		return fail(stderr, "%v", err)
	}
	// The transform of run, reference index included.
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
	metrics := newMetricsIf(*metricsAddr, cfg)
	v, err := e.verifier(ctx, metrics, true)
	if err != nil {
		_ = src.Close()
		return fail(stderr, "%v", err)
	}
	if err := serveMetrics(ctx, metrics, *metricsAddr, cfg); err != nil {
		_ = src.Close()
		return fail(stderr, "metrics listener: %v", err)
	}
	rep := v.run(ctx, sig, src, tr, stderr)
	if *reportPath != "" {
		if err := rep.WriteFile(*reportPath); err != nil {
			fmt.Fprintf(stderr, "fhirload: write report: %v\n", err)
		}
	}
	rep.Summary(stderr)
	return verifyExit(rep, sig, stderr)
}

// verifier is verify's stages: the read path and the Sink that compares.
type verifier struct {
	e      *env
	sink   *verify.Sink
	m      *pipeline.Metrics
	method string
}

// verifier builds verify's read path to the target (after its preflight
// check) and its Sink, with their counters in m. readerStats adds the
// reader's request counters to m (standalone verify; run --verify has the
// writer's there).
func (e *env) verifier(ctx context.Context, m *pipeline.Metrics, readerStats bool) (*verifier, error) {
	r, err := e.reader(ctx, m)
	if err != nil {
		return nil, err
	}
	sink := verify.NewSink(verify.LoaderReader{R: r}, verify.Options{})
	if err := m.Register(sink.Collectors()...); err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	if readerStats {
		m.WriterStats(r)
	}
	e.log.Info("verify reads back", zap.String("method", r.Method()),
		zap.Float64("read_units_per_second", e.cfg.Target.ReadUnitsPerSecond))
	return &verifier{e: e, sink: sink, m: m, method: r.Method()}, nil
}

// run verifies src through tr (the transform run uses) and returns the
// report (always).
func (v *verifier) run(ctx context.Context, sig *signals, src pipeline.Source, tr *transform.Transformer, stderr io.Writer) *verify.Report {
	runner := pipeline.NewRunner(pipeline.Deps{Config: v.e.cfg, Command: "verify", RunID: v.e.runID, Transformer: tr,
		Sink: v.sink, Logger: v.e.log, Metrics: v.m})
	total, _ := pipeline.SourceSize(src)
	stop := startProgressWith(runner, total, stderr, v.e.log, v.progress)
	rep := awaitRun(ctx, sig, runner, func(ctx context.Context) *pipeline.Report { return runner.Run(ctx, src) }, v.e.log)
	stop()
	rep.RepeatedIDs = v.e.repeatedIDs
	vrep := verify.NewReport(rep, v.sink)
	vrep.ReadMethod = v.method
	return vrep
}

// progress is verify's progress line.
func (v *verifier) progress(rep *pipeline.Report) (string, []zap.Field) {
	c := v.sink.Counts()
	rate := 0.0
	if rep.Seconds > 0 {
		rate = float64(c.Verified()) / rep.Seconds
	}
	return fmt.Sprintf("%d objects  %d lines  %d verified  %d matched  %d missing  %d different  %.0f resources/s",
			rep.Objects, rep.Lines, c.Verified(), c.Matched, c.Missing, c.Different, rate),
		[]zap.Field{zap.Int64("objects", rep.Objects), zap.Int64("lines", rep.Lines), zap.Int64("verified", c.Verified()),
			zap.Int64("matched", c.Matched), zap.Int64("missing", c.Missing), zap.Int64("different", c.Different),
			zap.Int64("unreachable", c.Unreachable), zap.Float64("resources_per_second", rate)}
}

// verifyExit returns verify's exit code, with the one line of a fatal or
// incomplete verification.
func verifyExit(rep *verify.Report, sig *signals, stderr io.Writer) int {
	switch code := rep.ExitCode(); {
	case rep.Fatal != "":
		return fail(stderr, "%s", rep.Fatal)
	case rep.Interrupted && sig.received != nil:
		return exitCodeFor(sig.received)
	case code == 1:
		return fail(stderr, "%s", rep.Incomplete())
	default:
		return code
	}
}

func newMetricsIf(addr string, cfg pipeline.Config) *pipeline.Metrics {
	if addr != "" || cfg.Metrics.Addr != "" {
		return pipeline.NewMetrics()
	}
	return nil
}

func serveMetrics(ctx context.Context, m *pipeline.Metrics, addr string, cfg pipeline.Config) error {
	if m == nil {
		return nil
	}
	if addr == "" {
		addr = cfg.Metrics.Addr
	}
	_, err := m.Serve(ctx, addr, nil)
	return err
}

// runVerifyReport is the report of `run --verify`: the run's report with the
// verify report under "verify".
type runVerifyReport struct {
	*pipeline.Report
	Verify *verify.Report `json:"verify,omitempty"`
}

func (r runVerifyReport) writeFile(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o600)
}

// stdinSpool keeps a copy of standard input while run reads it, so that
// `run --verify -` can read the same lines again (0600, removed at exit).
type stdinSpool struct{ f *os.File }

func newStdinSpool(sources []string) (*stdinSpool, error) {
	if !slices.Contains(sources, "-") {
		return nil, nil
	}
	f, err := os.CreateTemp("", "fhirload-stdin-*.ndjson")
	if err != nil {
		return nil, fmt.Errorf("spool standard input for --verify: %w", err)
	}
	return &stdinSpool{f: f}, nil
}

// tee returns what run reads: standard input, copied to the spool.
func (s *stdinSpool) tee(stdin io.Reader) io.Reader {
	if stdin == nil {
		stdin = os.Stdin
	}
	return io.TeeReader(stdin, s.f)
}

// replay returns the spooled input, from its start.
func (s *stdinSpool) replay() (io.Reader, error) {
	if _, err := s.f.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("spooled standard input: %w", err)
	}
	return s.f, nil
}

func (s *stdinSpool) remove() {
	_ = s.f.Close()
	_ = os.Remove(s.f.Name())
}
