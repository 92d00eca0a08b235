package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/fhirload/fhirload/deadletter"
	"github.com/fhirload/fhirload/fhirstore"
	"github.com/fhirload/fhirload/loader"
	"github.com/fhirload/fhirload/pipeline"
	"github.com/fhirload/fhirload/transform"
)

// configFlag adds --config to fs and returns a loader for the result.
func configFlag(fs *flag.FlagSet) func() (pipeline.Config, error) {
	path := fs.String("config", "", "pipeline.yaml (default ./pipeline.yaml if present, else built-in defaults)")
	return func() (pipeline.Config, error) {
		p := *path
		if p == "" {
			if _, err := os.Stat("pipeline.yaml"); err != nil {
				return pipeline.Defaults(), nil
			}
			p = "pipeline.yaml"
		}
		return pipeline.LoadConfig(p)
	}
}

// fail prints the one clear line of a fatal condition and returns exit 1.
func fail(stderr io.Writer, format string, args ...any) int {
	fmt.Fprintf(stderr, "fhirload: "+format+"\n", args...)
	return 1
}

func newLogger(cfg pipeline.LogConfig, w io.Writer) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(cfg.Level)
	if err != nil {
		return nil, fmt.Errorf("log.level: %w", err)
	}
	ec := zap.NewProductionEncoderConfig()
	ec.EncodeTime = zapcore.ISO8601TimeEncoder
	var enc zapcore.Encoder
	if cfg.Format == "json" {
		enc = zapcore.NewJSONEncoder(ec)
	} else {
		ec.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(ec)
	}
	// Locked: objects log from several goroutines, and w need not be safe
	// for concurrent writes (only *os.File is).
	return zap.New(zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(w)), lvl)), nil
}

func newRunID() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return time.Now().UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b[:])
}

// env is what a command builds from the configuration.
type env struct {
	cfg    pipeline.Config
	log    *zap.Logger
	runID  string
	awsCfg *aws.Config
	stops  []func()

	// repeatedIDs is what the reference pre-pass counted (run reports it).
	repeatedIDs int64

	// The embedded store, once started (run --verify writes and reads it).
	embeddedBase  string
	embeddedCreds aws.CredentialsProvider
}

func (e *env) close() {
	for i := len(e.stops) - 1; i >= 0; i-- {
		e.stops[i]()
	}
	_ = e.log.Sync()
}

// aws loads the AWS configuration from the standard credential chain.
func (e *env) aws(ctx context.Context) (aws.Config, error) {
	if e.awsCfg != nil {
		return *e.awsCfg, nil
	}
	opts := []func(*awsconfig.LoadOptions) error{awsconfig.WithRegion(e.cfg.AWS.Region)}
	c, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return aws.Config{}, fmt.Errorf("aws config: %w", err)
	}
	if e.cfg.AWS.EndpointURL != "" {
		c.BaseEndpoint = aws.String(e.cfg.AWS.EndpointURL)
	}
	e.awsCfg = &c
	return c, nil
}

// awsHTTPClient is given to each service client (not through the config, so
// that an AWS_CA_BUNDLE meant for real endpoints does not bite loopback ones).
func awsHTTPClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 32
	return &http.Client{Transport: t}
}

func (e *env) s3(ctx context.Context) (*s3.Client, error) {
	c, err := e.aws(ctx)
	if err != nil {
		return nil, err
	}
	return s3.NewFromConfig(c, func(o *s3.Options) {
		o.UsePathStyle = e.cfg.AWS.S3PathStyle
		o.HTTPClient = awsHTTPClient()
	}), nil
}

func (e *env) sqs(ctx context.Context) (*sqs.Client, error) {
	c, err := e.aws(ctx)
	if err != nil {
		return nil, err
	}
	return sqs.NewFromConfig(c, func(o *sqs.Options) { o.HTTPClient = awsHTTPClient() }), nil
}

func newEnv(cfg pipeline.Config, stderr io.Writer) (*env, error) {
	log, err := newLogger(cfg.Log, stderr)
	if err != nil {
		return nil, err
	}
	return &env{cfg: cfg, log: log, runID: newRunID()}, nil
}

// sourceEnv is what the source constructors may need; the S3 client is made
// only if a source asks for it.
func (e *env) sourceEnv() pipeline.SourceEnv {
	return pipeline.SourceEnv{Config: e.cfg, Logger: e.log, S3: e.s3}
}

// transformer builds the transform; refs, when not nil, resolves urn:uuid
// references to the types of the run's resources.
func (e *env) transformer(refs *transform.Index) (*transform.Transformer, error) {
	opts := transform.Options{
		Profile: e.cfg.Transform.Profile, IDs: e.cfg.Transform.IDs,
		Format: e.cfg.Source.Format, Mapping: e.cfg.Transform.Mapping,
		Extensions: e.cfg.Transform.Extensions, ProfilePackages: e.cfg.Transform.Profiles,
	}
	if refs != nil {
		opts.Resolver = refs
	}
	return transform.New(opts)
}

// referenceIndex is the pre-pass of transform.references: index: every id of
// the run's sources, read once before the run. It is nil when the option is
// off or the sources cannot be read twice (standard input).
func (e *env) referenceIndex(ctx context.Context, sources []string) (*transform.Index, error) {
	if e.cfg.Transform.References != "index" || slices.Contains(sources, "-") {
		return nil, nil
	}
	src, err := pipeline.OpenSources(ctx, e.sourceEnv(), sources)
	if err != nil {
		return nil, err
	}
	return e.prepass(ctx, src)
}

// prepass builds the reference index from src.
func (e *env) prepass(ctx context.Context, src pipeline.Source) (*transform.Index, error) {
	idx := transform.NewIndex(transform.IndexOptions{})
	e.stops = append(e.stops, func() { _ = idx.Close() })
	st, err := pipeline.Prepass(ctx, e.cfg, src, idx, e.log)
	if err != nil {
		return nil, fmt.Errorf("reference pre-pass: %w", err)
	}
	e.log.Info("reference index built", zap.Int64("objects", st.Objects), zap.Int64("ids", st.Resources), zap.Bool("spilled_to_disk", st.Spilled))
	if e.repeatedIDs = st.RepeatedIDs; e.repeatedIDs > 0 {
		e.log.Warn("some resources occur more than once in the sources (the same type and id): where their lines differ, "+
			"which one the target ends up holding is not defined (lines in flight together are written in any order), "+
			"and verify reports the others different",
			zap.Int64("repeated_ids", e.repeatedIDs))
	}
	return idx, nil
}

func (e *env) deadLetters(ctx context.Context) (deadletter.Store, error) {
	opts := deadletter.Options{SSE: e.cfg.DeadLetter.SSE, KMSKeyID: e.cfg.DeadLetter.KMSKeyID, Logger: e.log}
	if strings.HasPrefix(e.cfg.DeadLetter.URL, "s3://") {
		c, err := e.s3(ctx)
		if err != nil {
			return nil, err
		}
		opts.S3 = c
	}
	st, err := deadletter.Open(ctx, e.cfg.DeadLetter.URL, opts)
	if err != nil {
		return nil, fmt.Errorf("dead-letter store %s: %w", e.cfg.DeadLetter.URL, err)
	}
	e.stops = append(e.stops, func() { _ = st.Close() })
	return st, nil
}

// targetOptions are the loader options of the configured target; for the
// embedded target it first starts the local FHIR store in-process on
// loopback (once), with an ephemeral SigV4 key.
func (e *env) targetOptions(ctx context.Context, m *pipeline.Metrics) (loader.Options, error) {
	t := e.cfg.Target
	mode := t.Mode
	if mode == modeImport {
		// The data plane of an import-mode target: replay, verify and
		// the preflight go through REST batch Bundles.
		mode = loader.ModeBatch
	}
	opts := loader.Options{
		BaseURL: t.URL, Auth: t.Auth, Region: t.Region, Mode: mode, BatchSize: t.BatchSize,
		Concurrency: t.Concurrency, WriteUnitsPerSecond: t.WriteUnitsPerSecond,
		Retry:  loader.RetryOptions{Initial: e.cfg.Retry.Initial, Max: e.cfg.Retry.Max, MaxElapsed: e.cfg.Retry.MaxElapsed},
		Logger: e.log, ObserveLatency: m.ObserveLatency,
	}
	if t.URL == pipeline.EmbeddedTarget {
		if e.embeddedBase == "" {
			base, creds, err := e.startEmbedded(ctx)
			if err != nil {
				return opts, err
			}
			e.embeddedBase, e.embeddedCreds = base, creds
		}
		opts.BaseURL, opts.Auth, opts.Credentials = e.embeddedBase, "sigv4", e.embeddedCreds
	} else if t.Auth == "sigv4" {
		c, err := e.aws(ctx)
		if err != nil {
			return opts, err
		}
		if t.Region != "" {
			c.Region = t.Region
		}
		opts.Credentials = aws.NewCredentialsCache(c.Credentials)
	}
	return opts, nil
}

// writer builds the loader of the target.
func (e *env) writer(ctx context.Context, m *pipeline.Metrics) (*loader.Writer, error) {
	opts, err := e.targetOptions(ctx, m)
	if err != nil {
		return nil, err
	}
	w, err := loader.New(opts)
	if err != nil {
		return nil, err
	}
	e.stops = append(e.stops, w.Close)
	return w, nil
}

// reader builds verify's read path to the target (its own concurrency limit
// and pacer, in read units) after its preflight check.
func (e *env) reader(ctx context.Context, m *pipeline.Metrics) (*loader.Reader, error) {
	opts, err := e.targetOptions(ctx, m)
	if err != nil {
		return nil, err
	}
	r, err := loader.NewReader(opts, loader.ReadOptions{Method: e.cfg.Target.ReadMethod, UnitsPerSecond: e.cfg.Target.ReadUnitsPerSecond})
	if err != nil {
		return nil, err
	}
	e.stops = append(e.stops, r.Close)
	if err := checkTarget(ctx, r, e.log); err != nil {
		return nil, err
	}
	return r, nil
}

// embeddedCacheBytes is the SQLite page cache of each connection of the
// embedded store: a quarter of serve's default. Loading 104,030 mixed-type
// resources, it ran as fast as with 64 MiB (within the machine's noise) and
// peaked at ~140 MB RSS instead of ~245 MB (docs/PERFORMANCE.md).
const embeddedCacheBytes = 16 << 20

func (e *env) startEmbedded(ctx context.Context) (string, aws.CredentialsProvider, error) {
	if debug.SetMemoryLimit(-1) == streamingMemoryLimit { // ours, not GOMEMLIMIT's
		debug.SetMemoryLimit(embeddedMemoryLimit)
	}
	var kb [20]byte
	_, _ = rand.Read(kb[:])
	key := fhirstore.Key{AccessKeyID: "EMBEDDED" + strings.ToUpper(hex.EncodeToString(kb[:6])),
		SecretAccessKey: hex.EncodeToString(kb[6:]), Scopes: []string{"system/*.*"}}
	dir := e.cfg.Target.Data
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", nil, fmt.Errorf("embedded store: %w", err)
	}
	sopts := fhirstore.Options{Dir: dir, DatastoreID: "local", Auth: "sigv4", Region: e.cfg.Target.Region, Keys: []fhirstore.Key{key},
		CacheBytes: embeddedCacheBytes}
	if e.cfg.Target.Mode == modeImport {
		// Its import jobs read and write S3 as fhirload does (aws.*).
		s3c, err := e.s3(ctx)
		if err != nil {
			return "", nil, err
		}
		sopts.S3 = s3c
	}
	srv, err := fhirstore.Open(ctx, sopts)
	if err != nil {
		return "", nil, fmt.Errorf("embedded store in %s: %w", dir, err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		_ = srv.Close()
		return "", nil, fmt.Errorf("embedded store: %w", err)
	}
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(sctx, l)
	}()
	e.stops = append(e.stops, func() {
		cancel()
		<-done
		_ = srv.Close()
	})
	abs, _ := filepath.Abs(dir)
	e.log.Info("embedded FHIR store started", zap.String("data", abs), zap.String("addr", l.Addr().String()))
	base := "http://" + l.Addr().String() + "/datastore/local/r4/"
	return base, credentials.NewStaticCredentialsProvider(key.AccessKeyID, key.SecretAccessKey, ""), nil
}

// loadStages opens what a loading command writes to: the dead-letter store
// and the writer (after its preflight check), with the writer's numbers in
// the metrics.
func (e *env) loadStages(ctx context.Context, m *pipeline.Metrics) (deadletter.Store, *loader.Writer, error) {
	dl, err := e.deadLetters(ctx)
	if err != nil {
		return nil, nil, err
	}
	w, err := e.writer(ctx, m)
	if err != nil {
		return nil, nil, err
	}
	if err := checkTarget(ctx, w, e.log); err != nil {
		return nil, nil, err
	}
	m.WriterStats(w)
	return dl, w, nil
}

// checkTarget is the preflight before anything is read. A target that answers
// 5xx or 429 to it is reachable, not misconfigured: the command goes on and
// its lines are retried, then dead-lettered as retries-exhausted should the
// failures last (exit 1 is for bad config, refused auth and unreachable
// targets).
func checkTarget(ctx context.Context, w interface{ Check(context.Context) error }, log *zap.Logger) error {
	err := w.Check(ctx)
	var fe *loader.FatalError
	if errors.As(err, &fe) && (fe.Status >= 500 || fe.Status == http.StatusTooManyRequests) {
		log.Warn("target fails its preflight check; going on", zap.Int("status", fe.Status))
		return nil
	}
	return err
}
