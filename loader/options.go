package loader

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"go.uber.org/zap"
)

// Defaults of Options and RetryOptions.
const (
	DefaultBatchSize   = 100
	MaxBatchSize       = 500 // HealthLake's limit of entries per batch Bundle
	DefaultConcurrency = 16
	DefaultRegion      = "us-east-1"
	DefaultService     = "healthlake"
	DefaultInitial     = 200 * time.Millisecond
	DefaultMax         = 30 * time.Second
	DefaultMaxElapsed  = 10 * time.Minute
)

// Auth and write modes accepted by Options.
const (
	AuthSigV4  = "sigv4"
	AuthNone   = "none"
	ModeBatch  = "batch"
	ModeSingle = "single"
)

// RetryOptions is the exponential backoff of retryable failures (with jitter). Zero values take the
// defaults: Initial 200ms, Max 30s, MaxElapsed 10m.
type RetryOptions struct {
	Initial    time.Duration // first wait
	Max        time.Duration // cap of one wait
	MaxElapsed time.Duration // give up (dead-letter retries-exhausted) after this long for one batch
}

// Options configures a Writer. Zero values take the documented defaults.
type Options struct {
	BaseURL     string                  // FHIR base, e.g. https://healthlake.us-east-1.amazonaws.com/datastore/ID/r4/
	Auth        string                  // AuthSigV4 (default) or AuthNone
	Region      string                  // signing region, default us-east-1
	Service     string                  // signing service, default "healthlake"
	Credentials aws.CredentialsProvider // required for sigv4; wrap in aws.NewCredentialsCache for refresh
	Mode        string                  // ModeBatch (default) or ModeSingle
	BatchSize   int                     // items per Write, default 100, at most 500
	// Concurrency is the most requests in flight, default 16; the adaptive limit moves in [1, Concurrency].
	Concurrency int
	// WriteUnitsPerSecond caps the client's send rate: 1 unit per started KB of request body;
	// 0 means no configured cap (the adaptive rate still applies once the server throttles).
	WriteUnitsPerSecond float64
	Retry               RetryOptions
	HTTPClient          *http.Client        // nil: a tuned client owned (and closed) by the Writer
	Logger              *zap.Logger         // nil: no logging; resource bodies are never logged
	ObserveLatency      func(time.Duration) // optional, called once per HTTP request
	clock               clock               // tests inject a fake clock
	noJitter            bool                // tests make backoff deterministic
}

// FatalError is a condition that stops the whole run (exit 1): credentials refused, permission
// denied, data store not found, target unreachable. Its text is one PHI-free line.
type FatalError struct {
	Status  int    // HTTP status, 0 for a transport failure
	Message string // what is wrong and what to check
}

// Error returns the one-line description.
func (e *FatalError) Error() string { return e.Message }

func fatalFor(status int, d Decision) *FatalError {
	switch status {
	case 401:
		return &FatalError{Status: status, Message: "target refused credentials: HTTP 401 (check AWS credentials / region)"}
	case 403:
		return &FatalError{Status: status, Message: "target denied access: HTTP 403 (check IAM permissions, credentials and region)"}
	case 404:
		return &FatalError{Status: status, Message: "data store not found: HTTP 404 (check the target url and data store id)"}
	case 0:
		return &FatalError{Message: "target unusable: " + d.Message}
	}
	return &FatalError{Status: status, Message: "target refused the request: " + d.Message}
}

func (o *Options) normalize() error {
	if o.Auth == "" {
		o.Auth = AuthSigV4
	}
	if o.Auth != AuthSigV4 && o.Auth != AuthNone {
		return fmt.Errorf("loader: auth %q: want %q or %q", o.Auth, AuthSigV4, AuthNone)
	}
	if o.Region == "" {
		o.Region = DefaultRegion
	}
	if o.Service == "" {
		o.Service = DefaultService
	}
	if o.Auth == AuthSigV4 && o.Credentials == nil {
		return errors.New("loader: auth sigv4 needs credentials")
	}
	if o.Mode == "" {
		o.Mode = ModeBatch
	}
	if o.Mode != ModeBatch && o.Mode != ModeSingle {
		return fmt.Errorf("loader: mode %q: want %q or %q", o.Mode, ModeBatch, ModeSingle)
	}
	if o.BatchSize == 0 {
		o.BatchSize = DefaultBatchSize
	}
	if o.BatchSize < 1 || o.BatchSize > MaxBatchSize {
		return fmt.Errorf("loader: batch size %d: want 1..%d", o.BatchSize, MaxBatchSize)
	}
	if o.Concurrency == 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.Concurrency < 1 {
		return fmt.Errorf("loader: concurrency %d: want at least 1", o.Concurrency)
	}
	if o.WriteUnitsPerSecond < 0 {
		return fmt.Errorf("loader: write units per second %g: want >= 0", o.WriteUnitsPerSecond)
	}
	if o.Retry.Initial <= 0 {
		o.Retry.Initial = DefaultInitial
	}
	if o.Retry.Max <= 0 {
		o.Retry.Max = DefaultMax
	}
	if o.Retry.MaxElapsed <= 0 {
		o.Retry.MaxElapsed = DefaultMaxElapsed
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.clock == nil {
		o.clock = realClock{}
	}
	return nil
}

// parseBase checks the target URL: https anywhere, http only to a loopback host.
func parseBase(raw string) (*url.URL, error) {
	if raw == "" {
		return nil, errors.New("loader: empty target url")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("loader: target url: %w", err)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("loader: target url %q has no host", raw)
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !isLoopback(u.Hostname()) {
			return nil, fmt.Errorf("loader: target %s: plain http is only allowed to loopback hosts, use https", u.Host)
		}
	default:
		return nil, fmt.Errorf("loader: target url scheme %q: want https (or http to loopback)", u.Scheme)
	}
	if u.User != nil {
		return nil, errors.New("loader: target url must not contain user info")
	}
	u.RawQuery, u.Fragment = "", ""
	if !strings.HasSuffix(u.Path, "/") {
		u.Path += "/"
		if u.RawPath != "" {
			u.RawPath += "/"
		}
	}
	return u, nil
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// newHTTPClient builds the tuned client: keep-alive with enough idle connections for the
// concurrency, HTTP/2 where the server offers it, bounded connect/TLS/header waits, TLS 1.2+.
func newHTTPClient(concurrency int) *http.Client {
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           dialer.DialContext,
		ForceAttemptHTTP2:     true,
		TLSClientConfig:       &tls.Config{MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 2 * time.Minute, // a 500-entry Bundle can take a while to commit
		ExpectContinueTimeout: time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConns:          2 * concurrency,
		MaxIdleConnsPerHost:   2 * concurrency,
		WriteBufferSize:       64 << 10,
		ReadBufferSize:        64 << 10,
	}
	return &http.Client{Transport: tr}
}
