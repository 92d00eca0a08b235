package fhirstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Defaults of Options.
const (
	DefaultDatastoreID  = "local"
	DefaultRegion       = "us-east-1"
	DefaultMaxBodyBytes = 32 << 20
	// MaxBundleEntries is the largest batch or transaction Bundle accepted.
	MaxBundleEntries = 500
	// DefaultCacheBytes is the default of Options.CacheBytes.
	DefaultCacheBytes = 64 << 20
	// ProfileSeed and ProfileBase are the values of Options.Profile.
	ProfileSeed = "seed"
	ProfileBase = "base"
)

// DefaultUniqueIdentifiers are the types whose identifiers must be unique
// when Options.UniqueIdentifiers is nil.
func DefaultUniqueIdentifiers() []string { return []string{"Patient", "Observation"} }

// Options configures a Server. The zero value of every field but Dir is a
// usable default.
type Options struct {
	// Dir is the data directory; the database is Dir/fhirstore.db (mode
	// 0600). It is created if absent.
	Dir string
	// DatastoreID is the {ID} in /datastore/{ID}/r4/. Default "local".
	DatastoreID string
	// Auth is "sigv4" (default) or "none".
	Auth string
	// Region is the region requests must be signed for. Default "us-east-1".
	Region string
	// Keys are the keys accepted by SigV4 verification. When empty, the key
	// pair in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY is accepted with all
	// scopes.
	Keys []Key
	// WriteUnitsPerSecond limits writes: every POST, PUT and DELETE costs one
	// unit per started KB of body, and requests beyond the rate get 429 with
	// Retry-After. 0 means unlimited.
	WriteUnitsPerSecond float64
	// Chaos429 and Chaos500 are the probabilities (0..1) that a request, and
	// independently each entry of a batch Bundle, fails with 429 or 500.
	Chaos429, Chaos500 float64
	// ChaosLatency delays every request by a random duration in [0, ChaosLatency).
	ChaosLatency time.Duration
	// ChaosImportReject is the probability (0..1) that an import job
	// rejects a line with an OperationOutcome instead of importing it. The
	// choice is fixed by ChaosSeed, the file and the line number, and by
	// the value when the job was submitted.
	ChaosImportReject float64
	// ChaosSeed seeds the chaos random source; 0 picks a random seed.
	ChaosSeed uint64
	// MaxBodyBytes is the largest request body accepted (413 beyond).
	// Default 32 MiB.
	MaxBodyBytes int64
	// MaxBufferedBytes bounds the request-body bytes held in memory by all
	// requests together (raised to MaxBodyBytes if smaller). A request whose
	// body does not fit waits up to a second, then gets 429 with
	// Retry-After. Default 64 MiB.
	MaxBufferedBytes int64
	// BodyReadTimeout is how long a request body may take to arrive after
	// its headers (408 beyond). Default 30 s.
	BodyReadTimeout time.Duration
	// Profile is the rule set resources are checked against on create and
	// update (and import): "base" (or "") is FHIR R4 as the registry
	// defines it; "seed" adds the fields HealthLake's API document requires
	// of a Patient (section 1.3: name with family and given), refused with
	// 400 and an OperationOutcome naming the element. fhirload serve
	// defaults to seed; the zero value is base, so that an embedded store
	// accepts what the pipeline's own profile let through.
	Profile string
	// UniqueIdentifiers are the resource types whose identifiers (system
	// and value) must be unique: a create or update that would give a
	// second resource of the type an identifier another one has is refused
	// with 422 (issue code "duplicate"), as HealthLake does. Nil means
	// DefaultUniqueIdentifiers (Patient, Observation); an empty slice turns
	// the rule off. Other types share identifiers by design (Synthea's
	// ExplanationOfBenefit claim-group value is the same on every claim).
	UniqueIdentifiers []string
	// CORSOrigins are the origins allowed to call the data plane from a
	// browser (Access-Control-Allow-Origin, OPTIONS preflight); "*" allows
	// any. Empty: no CORS headers, and a preflight is refused (403).
	CORSOrigins []string
	// CacheBytes is the SQLite page cache of each database connection
	// (every data store has a writer, a checkpointer and up to 8
	// readers). Default 64 MiB; an embedded store loading in the
	// pipeline's process does well with 4–8 MiB.
	CacheBytes int64
	// Version is the software version the CapabilityStatement reports.
	// Default "dev".
	Version string
	// S3 is the client import jobs read their input and write their output
	// with. Nil means one built from the standard AWS SDK configuration
	// when the first job runs (see the package documentation).
	S3 S3API
	// Logger receives one line per request (method, route, status, duration;
	// never bodies). Nil means no logs.
	Logger *zap.Logger

	// now replaces the clock in tests.
	now func() time.Time
	// importChunkLines replaces importChunkLines in tests.
	importChunkLines int
	// afterChunk, in tests, is called after each chunk an import job
	// commits; when it returns true the job stops there as if the server
	// had crashed (it stays IN_PROGRESS).
	afterChunk func(job string, file int, nextLine int64) (crash bool)
}

// Server is a local HealthLake-compatible FHIR R4 server on SQLite.
type Server struct {
	opts       Options
	ctl        *controlDB
	reg        *registry
	jobs       *jobRunner
	s3         *s3Conn
	ver        *verifier
	bucket     *bucket
	in         *intake
	log        *zap.Logger
	now        func() time.Time
	capability []byte

	rngMu sync.Mutex
	rng   *mrand.Rand

	closeOnce sync.Once
	closeErr  error
}

// Open opens (creating if needed) the store in opts.Dir and returns a Server
// ready to serve. Close releases it.
func Open(ctx context.Context, opts Options) (*Server, error) {
	if opts.Dir == "" {
		return nil, errors.New("fhirstore: Options.Dir is required")
	}
	if opts.DatastoreID == "" {
		opts.DatastoreID = DefaultDatastoreID
	}
	if !validID(opts.DatastoreID) {
		return nil, fmt.Errorf("fhirstore: invalid datastore id %q", opts.DatastoreID)
	}
	if opts.Region == "" {
		opts.Region = DefaultRegion
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if opts.MaxBufferedBytes <= 0 {
		opts.MaxBufferedBytes = DefaultMaxBufferedBytes
	}
	if opts.BodyReadTimeout <= 0 {
		opts.BodyReadTimeout = DefaultBodyReadTimeout
	}
	if opts.Chaos429 < 0 || opts.Chaos429 > 1 || opts.Chaos500 < 0 || opts.Chaos500 > 1 || opts.ChaosLatency < 0 ||
		opts.ChaosImportReject < 0 || opts.ChaosImportReject > 1 {
		return nil, errors.New("fhirstore: chaos probabilities must be within 0..1 and latency not negative")
	}
	if opts.WriteUnitsPerSecond < 0 {
		return nil, errors.New("fhirstore: WriteUnitsPerSecond must not be negative")
	}
	switch opts.Profile {
	case "", ProfileBase, ProfileSeed:
	default:
		return nil, fmt.Errorf("fhirstore: unknown profile %q (want %s or %s)", opts.Profile, ProfileSeed, ProfileBase)
	}
	if opts.UniqueIdentifiers == nil {
		opts.UniqueIdentifiers = DefaultUniqueIdentifiers()
	}
	unique := map[string]bool{}
	for _, t := range opts.UniqueIdentifiers {
		if !knownType(t) {
			return nil, fmt.Errorf("fhirstore: unique identifiers: %q is not an R4 resource type", t)
		}
		unique[t] = true
	}
	if opts.CacheBytes < 0 {
		return nil, errors.New("fhirstore: CacheBytes must not be negative")
	}
	if opts.CacheBytes == 0 {
		opts.CacheBytes = DefaultCacheBytes
	}
	for _, o := range opts.CORSOrigins {
		if o == "" {
			return nil, errors.New("fhirstore: an empty CORS origin")
		}
	}
	now := opts.now
	if now == nil {
		now = time.Now
	}
	s := &Server{opts: opts, log: opts.Logger, now: now,
		in: newIntake(opts.MaxBodyBytes, opts.MaxBufferedBytes, opts.BodyReadTimeout)}
	if s.log == nil {
		s.log = zap.NewNop()
	}
	switch opts.Auth {
	case "", "sigv4":
		keys := opts.Keys
		if len(keys) == 0 {
			id, secret := os.Getenv("AWS_ACCESS_KEY_ID"), os.Getenv("AWS_SECRET_ACCESS_KEY")
			if id == "" || secret == "" {
				return nil, errors.New("fhirstore: sigv4 auth needs keys, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment")
			}
			keys = []Key{{AccessKeyID: id, SecretAccessKey: secret, Scopes: []string{"system/*.*"}}}
		}
		for _, k := range keys {
			if k.AccessKeyID == "" || k.SecretAccessKey == "" {
				return nil, errors.New("fhirstore: every key needs an access key id and a secret")
			}
			for _, sc := range k.Scopes {
				if _, err := parseScope(sc); err != nil {
					return nil, fmt.Errorf("fhirstore: key %s: %w", k.AccessKeyID, err)
				}
			}
		}
		s.ver = newVerifier(opts.Region, keys, now)
	case "none":
	default:
		return nil, fmt.Errorf("fhirstore: unknown auth %q (want sigv4 or none)", opts.Auth)
	}
	if opts.WriteUnitsPerSecond > 0 {
		s.bucket = newBucket(opts.WriteUnitsPerSecond, now)
	}
	seed := opts.ChaosSeed
	if seed == 0 {
		seed = mrand.Uint64()
	}
	s.opts.ChaosSeed = seed
	s.rng = mrand.New(mrand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	s.s3 = &s3Conn{region: opts.Region, c: opts.S3}
	s.capability = capabilityJSON(now(), s.opts)
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("fhirstore: create data directory: %w", err)
	}
	ctl, err := openControl(ctx, opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("fhirstore: %w", err)
	}
	reg, err := openRegistry(ctx, opts.Dir, opts.DatastoreID, ctl, now(), storeConfig{unique: unique, cacheKiB: max(opts.CacheBytes>>10, 64)})
	if err != nil {
		_ = ctl.close()
		return nil, fmt.Errorf("fhirstore: %w", err)
	}
	s.ctl, s.reg = ctl, reg
	s.jobs = startRunner(s)
	return s, nil
}

// BasePath is the path prefix of the FHIR base URL, /datastore/{ID}/r4/.
func (s *Server) BasePath() string { return "/datastore/" + s.opts.DatastoreID + "/r4/" }

// Handler returns the HTTP handler serving the FHIR API under BasePath.
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.serveHTTP) }

// Serve serves HTTP on l until ctx is done, then shuts down gracefully
// (in-flight requests get up to 10 s) and returns. It does not close the
// store; call Close after Serve returns.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	srv := &http.Server{
		Handler: s.Handler(),
		// Headers must arrive within ReadHeaderTimeout and stay under
		// MaxHeaderBytes (AWS's own front doors take less), bodies within
		// Options.BodyReadTimeout (set per request, see intake); an idle
		// keep-alive connection is closed after IdleTimeout.
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    64 << 10,
		IdleTimeout:       2 * time.Minute,
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
		ErrorLog:          zap.NewStdLog(s.log),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case err := <-errc:
		return fmt.Errorf("fhirstore: serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	err := srv.Shutdown(sctx)
	if serr := <-errc; serr != nil && !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("fhirstore: shutdown: %w", err)
	}
	return nil
}

// Close closes the store. It is safe to call more than once.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.jobs.stop()
		if err := errors.Join(s.reg.close(), s.ctl.close()); err != nil {
			s.closeErr = fmt.Errorf("fhirstore: close: %w", err)
		}
	})
	return s.closeErr
}

// chance draws from the chaos random source.
func (s *Server) chance(p float64) bool {
	if p <= 0 {
		return false
	}
	s.rngMu.Lock()
	defer s.rngMu.Unlock()
	return s.rng.Float64() < p
}

func (s *Server) latency() time.Duration {
	if s.opts.ChaosLatency <= 0 {
		return 0
	}
	s.rngMu.Lock()
	defer s.rngMu.Unlock()
	return time.Duration(s.rng.Int64N(int64(s.opts.ChaosLatency)))
}

// chaos returns the injected failure for one request or batch entry, if any.
func (s *Server) chaos() *fhirError {
	if s.chance(s.opts.Chaos429) {
		return &fhirError{status: http.StatusTooManyRequests, code: "throttled", text: "Rate exceeded (injected by chaos-429).", retryAfter: 1}
	}
	if s.chance(s.opts.Chaos500) {
		return &fhirError{status: http.StatusInternalServerError, code: "exception", text: "Internal server error (injected by chaos-500)."}
	}
	return nil
}

// newID returns a random UUID (version 4), used for server-assigned ids.
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var out [36]byte
	hex.Encode(out[0:8], b[0:4])
	out[8] = '-'
	hex.Encode(out[9:13], b[4:6])
	out[13] = '-'
	hex.Encode(out[14:18], b[6:8])
	out[18] = '-'
	hex.Encode(out[19:23], b[8:10])
	out[23] = '-'
	hex.Encode(out[24:], b[10:])
	return string(out[:])
}
