package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/fhirload/fhirload/fhirstore"
)

// serveCmd runs `fhirload serve`: the local HealthLake-compatible FHIR
// server, until ctx is canceled. It returns the process exit code.
func serveCmd(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: fhirload serve [flags]

A local HealthLake-compatible FHIR R4 server on SQLite. The FHIR API of each data store is
under /datastore/{id}/r4/; the HealthLake control plane (data stores, import jobs; AWS JSON 1.0,
X-Amz-Target: HealthLake.*) is POST / on the same address, for the aws CLI and the AWS SDKs
with --endpoint-url. Import jobs reach S3 through the standard AWS configuration: AWS_REGION,
the credential chain, and AWS_ENDPOINT_URL_S3 (or AWS_ENDPOINT_URL) for an emulator such as
moto (addressed path-style then).

Flags:
`)
		fs.PrintDefaults()
	}
	addr := fs.String("addr", "127.0.0.1:8080", "listen address `host:port`")
	dir := fs.String("data", ".fhirload", "data `directory`: fhirstore.db (the default data store), control.db, datastores/{id}/ (files 0600)")
	dsID := fs.String("datastore-id", fhirstore.DefaultDatastoreID, "datastore `id` in the base URL /datastore/{id}/r4/")
	auth := fs.String("auth", "sigv4", "request authentication: sigv4 or none")
	keysFile := fs.String("keys", "", "JSON `file` of accepted keys and their scopes (default: the AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY pair, all scopes)")
	region := fs.String("region", fhirstore.DefaultRegion, "`region` requests must be signed for")
	wups := fs.Float64("write-units-per-second", 0, "write units (1 per started KB of body) per second before 429; 0 = unlimited")
	certFile := fs.String("tls-cert", "", "TLS certificate `file` (PEM); with --tls-key serves HTTPS")
	keyFile := fs.String("tls-key", "", "TLS private key `file` (PEM)")
	c429 := fs.Float64("chaos-429", 0, "`probability` of an injected 429 per request and per batch entry")
	c500 := fs.Float64("chaos-500", 0, "`probability` of an injected 500 per request and per batch entry")
	clat := fs.Duration("chaos-latency", 0, "injected latency per request, random in [0, `duration`)")
	cReject := fs.Float64("chaos-import-reject", 0, "`probability` that an import job rejects a line (a FAILURE record with an OperationOutcome)")
	cSeed := fs.Uint64("chaos-seed", 0, "`seed` of the chaos options (the same seed rejects the same import lines); 0 = random")
	maxBody := fs.Int64("max-body-bytes", fhirstore.DefaultMaxBodyBytes, "largest request body accepted (413 beyond), in `bytes`")
	buffered := fs.Int64("max-buffered-bytes", fhirstore.DefaultMaxBufferedBytes,
		"request-body `bytes` held in memory by all requests together; a request that does not fit waits 1 s, then gets 429")
	bodyTimeout := fs.Duration("body-timeout", fhirstore.DefaultBodyReadTimeout, "time a request body may take to arrive after its headers (408 beyond)")
	profile := fs.String("profile", fhirstore.ProfileSeed, "rules for created and updated resources: `seed` (FHIR R4 and HealthLake's required Patient name.family and name.given) or base (FHIR R4)")
	unique := fs.String("unique-identifiers", strings.Join(fhirstore.DefaultUniqueIdentifiers(), ","),
		"comma-separated resource `types` whose identifiers must be unique (422 on a duplicate); \"\" for none")
	corsOrigins := fs.String("cors-origin", "", "comma-separated `origins` browsers may call from (CORS, OPTIONS preflight); * for any; \"\" for none")
	cacheBytes := fs.Int64("cache-bytes", fhirstore.DefaultCacheBytes, "SQLite page cache of each database connection, in `bytes`")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 1
	}
	if err := serve(ctx, stderr, *addr, *certFile, *keyFile, *keysFile, fhirstore.Options{
		Dir: *dir, DatastoreID: *dsID, Auth: *auth, Region: *region, WriteUnitsPerSecond: *wups,
		Chaos429: *c429, Chaos500: *c500, ChaosLatency: *clat, ChaosImportReject: *cReject, ChaosSeed: *cSeed,
		MaxBodyBytes: *maxBody, MaxBufferedBytes: *buffered, BodyReadTimeout: *bodyTimeout,
		Profile: *profile, UniqueIdentifiers: splitList(*unique), CacheBytes: *cacheBytes, Version: version,
		CORSOrigins: splitList(*corsOrigins),
	}, fs.NArg()); err != nil {
		fmt.Fprintf(stderr, "fhirload serve: %v\n", err)
		return 1
	}
	return 0
}

// splitList splits a comma-separated flag value; "" is an empty list (not nil).
func splitList(v string) []string {
	out := []string{}
	for part := range strings.SplitSeq(v, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}

func serve(ctx context.Context, stderr io.Writer, addr, certFile, keyFile, keysFile string, opts fhirstore.Options, nargs int) error {
	if nargs > 0 {
		return errors.New("serve takes no arguments")
	}
	if (certFile == "") != (keyFile == "") {
		return errors.New("--tls-cert and --tls-key go together")
	}
	if keysFile != "" {
		if opts.Auth == "none" {
			return errors.New("--keys needs --auth sigv4")
		}
		keys, err := fhirstore.LoadKeys(keysFile)
		if err != nil {
			return err
		}
		opts.Keys = keys
	}
	var tlsConf *tls.Config
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return fmt.Errorf("load TLS key pair: %w", err)
		}
		tlsConf = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	srv, err := fhirstore.Open(ctx, opts)
	if err != nil {
		return err
	}
	defer srv.Close()
	l, err := (&net.ListenConfig{KeepAlive: 30 * time.Second}).Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	scheme := "http"
	if tlsConf != nil {
		l = tls.NewListener(l, tlsConf)
		scheme = "https"
	}
	fmt.Fprintf(stderr, "fhirload serve: listening on %s://%s%s (HealthLake control plane: %s://%s/)\n", scheme, l.Addr(), srv.BasePath(), scheme, l.Addr())
	if err := srv.Serve(ctx, l); err != nil {
		return err
	}
	return srv.Close()
}
