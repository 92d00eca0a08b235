// Command fhirload moves bulk NDJSON healthcare data into FHIR R4 servers
// (AWS HealthLake first). See README.md and DESIGN.md for the contracts.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"
)

// Set with -ldflags "-X main.version=... -X main.commit=...".
var (
	version = "dev"
	commit  = ""
)

const usage = `fhirload moves bulk NDJSON healthcare data into FHIR R4 servers.

Usage:
  fhirload run      [--config FILE] [--report FILE] [--verify] [SOURCE ...]   paths, dirs, globs, s3://bucket/prefix
  fhirload validate [--config FILE] [--report FILE] [SOURCE ...]   transform only, no writes
  fhirload verify   [--config FILE] [--report FILE] [SOURCE ...]   read back: does the target hold the source?
  fhirload watch    [--config FILE] [--queue URL] [--metrics-addr ADDR]
  fhirload enqueue  [--config FILE] --queue URL s3://bucket/prefix
  fhirload replay   [--config FILE] [--reason R] [--source GLOB] [--run ID] [--since T] [--dry-run] [--report FILE]
  fhirload deadletter ls|show|purge [--config FILE] ...
  fhirload serve    [--addr HOST:PORT] [--data DIR] ...           local HealthLake-compatible FHIR server
  fhirload config check [--config FILE]
  fhirload version

Exit codes (run, replay, validate): 0 all loaded, 2 some lines dead-lettered, 1 fatal,
130/143 interrupted by SIGINT/SIGTERM. verify: 0 every resource matches, 2 some missing or
different, 1 fatal or incomplete (resources that could not be read back).
`

func main() {
	softMemoryLimit(os.Args[1:])
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
}

// streamingMemoryLimit is the soft limit of the Go heap of a loading process
// whose store is not in it (target.url not embedded): with the batches in
// flight bounded in bytes, it keeps the process under 64 MiB RSS whatever
// the size of the input (docs/PERFORMANCE.md). GOMEMLIMIT overrides it.
const streamingMemoryLimit = 48 << 20

// softMemoryLimit sets streamingMemoryLimit for the commands that stream
// data, unless GOMEMLIMIT is set. (Only the process does this, never the
// in-process tests: a limit applies to the whole process.) A process that
// also runs the embedded store is limited later, more loosely (embedded).
func softMemoryLimit(args []string) {
	if len(args) == 0 || os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	switch args[0] {
	case "run", "validate", "replay", "watch", "verify":
		debug.SetMemoryLimit(streamingMemoryLimit)
	}
}

// embeddedMemoryLimit replaces streamingMemoryLimit in a process that runs
// the embedded store: the store parses and indexes what the run sends, in
// the same heap.
const embeddedMemoryLimit = 128 << 20

func realMain(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 1
	}
	sig := newSignals()
	defer sig.stop()
	ctx := sig.ctx
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "run":
		return runCmd(ctx, sig, "run", rest, stderr)
	case "validate":
		return runCmd(ctx, sig, "validate", rest, stderr)
	case "verify":
		return verifyCmd(ctx, sig, rest, stderr)
	case "watch":
		return watchCmd(ctx, sig, rest, stderr)
	case "enqueue":
		return enqueueCmd(ctx, rest, stdout, stderr)
	case "replay":
		return replayCmd(ctx, sig, rest, stderr)
	case "deadletter":
		return deadletterCmd(ctx, rest, stdout, stderr)
	case "serve":
		// A server has nothing to drain: the first signal stops it (closing the store).
		go func() {
			select {
			case <-sig.graceful:
				sig.cancel()
			case <-sig.done:
			}
		}()
		return serveCmd(ctx, rest, stderr)
	case "config":
		return configCmd(rest, stdout, stderr)
	case "version", "--version":
		fmt.Fprintf(stdout, "fhirload %s", version)
		if c := buildCommit(); c != "" {
			fmt.Fprintf(stdout, " (commit %s)", c)
		}
		fmt.Fprintf(stdout, " %s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "fhirload: unknown command %q\n\n%s", cmd, usage)
	return 1
}

func buildCommit() string {
	if commit != "" {
		return commit
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				return s.Value
			}
		}
	}
	return ""
}

// signals turns SIGINT/SIGTERM into a graceful stop (first signal) and an
// immediate exit (second signal).
type signals struct {
	ctx      context.Context
	cancel   context.CancelFunc
	ch       chan os.Signal
	graceful chan os.Signal // receives the first signal
	done     chan struct{}
	received os.Signal // the signal that stopped the command, if any
}

func newSignals() *signals {
	ctx, cancel := context.WithCancel(context.Background())
	s := &signals{ctx: ctx, cancel: cancel, ch: make(chan os.Signal, 2), graceful: make(chan os.Signal, 1), done: make(chan struct{})}
	signal.Notify(s.ch, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		select {
		case first := <-s.ch:
			s.graceful <- first
		case <-s.done:
			return
		}
		select {
		case second := <-s.ch:
			fmt.Fprintf(os.Stderr, "fhirload: second %v, exiting now\n", second)
			os.Exit(exitCodeFor(second))
		case <-s.done:
		}
	}()
	return s
}

func (s *signals) stop() {
	signal.Stop(s.ch)
	close(s.done)
	s.cancel()
}

func exitCodeFor(sig os.Signal) int {
	if sig == syscall.SIGTERM {
		return 143
	}
	return 130
}
