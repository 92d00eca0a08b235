// Command noopfhir is a FHIR endpoint that stores nothing, for benchmarks: it
// answers batch Bundles with a batch-response of "201 Created" per entry,
// PUT /{type}/{id} with 201 and GET metadata with a CapabilityStatement. It
// accepts SigV4-signed requests without verifying them. It is a measuring
// tool for scripts/bench.sh, never a place to send real data.
//
//	noopfhir [--addr 127.0.0.1:8090] [--addr-file FILE] [--latency 0]
//
// The base URL is any path: http://ADDR/datastore/noop/r4/ works like
// HealthLake's. On SIGINT/SIGTERM it prints what it received to stderr.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/fhirload/fhirload/internal/benchkit"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stderr))
}

func run(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("noopfhir", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:8090", "listen address `host:port` (port 0 picks a free one)")
	addrFile := fs.String("addr-file", "", "write the listening host:port to this `file` once ready")
	latency := fs.Duration("latency", 0, "added to every answer (a server's think time)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 1
	}
	l, err := (&net.ListenConfig{}).Listen(ctx, "tcp", *addr)
	if err != nil {
		fmt.Fprintf(stderr, "noopfhir: listen: %v\n", err)
		return 1
	}
	h := &benchkit.Noop{Latency: *latency}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	if *addrFile != "" {
		if err := os.WriteFile(*addrFile, []byte(l.Addr().String()+"\n"), 0o600); err != nil {
			fmt.Fprintf(stderr, "noopfhir: %v\n", err)
			_ = srv.Close()
			return 1
		}
	}
	fmt.Fprintf(stderr, "noopfhir: listening on http://%s/datastore/noop/r4/\n", l.Addr())
	select {
	case <-ctx.Done():
	case err := <-done:
		fmt.Fprintf(stderr, "noopfhir: %v\n", err)
		return 1
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	s := h.Stats()
	fmt.Fprintf(stderr, "noopfhir: requests=%d entries=%d signed=%d bytes=%d\n", s.Requests, s.Entries, s.Signed, s.Bytes)
	return 0
}
