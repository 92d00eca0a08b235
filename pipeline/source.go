package pipeline

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"go.uber.org/zap"

	"github.com/fhirload/fhirload/deadletter"
	"github.com/fhirload/fhirload/ingest"
)

// Source hands out Objects, each with its own ack (in the spirit of Benthos'
// input + AckFunc): the runner calls an Object's Ack exactly once, when every
// line of it has a final outcome (nil) or when it cannot be finished (an
// error: the source arranges redelivery where it can).
type Source interface {
	// Next returns the next object. It returns io.EOF when the source is
	// exhausted and ctx's error once ctx ends; any other error is fatal for
	// the run (a prefix that cannot be listed, a queue that cannot be read).
	Next(ctx context.Context) (Object, error)
	// Close releases the source. The runner calls it after the last Ack.
	Close() error
}

// Object is one unit of work: the bytes of an ingest.Object, or — from the
// dead-letter source only — entries to redo, each with its own origin.
type Object struct {
	ingest.Object
	// Replay holds dead-letter entries to run again instead of bytes to
	// read. A replayed line that loads retires its entry; one that fails
	// again replaces it (one more attempt, the new reason).
	Replay []deadletter.Entry
	// ReplayOf is the object-level entry (unreadable-object, missing-object)
	// this object is read again for: it is retired when the object is read
	// to its end, and replaced when it fails again.
	ReplayOf *deadletter.Entry
	// ResumeAfter skips the object's first lines (they were settled before).
	ResumeAfter int64
}

// sized is implemented by sources that may know their total size in bytes
// up front (local files), for the progress line's ETA; -1 means unknown.
type sized interface{ Size() int64 }

// SourceSize returns the total size of src's objects when it is known.
func SourceSize(src Source) (int64, bool) {
	if s, ok := src.(sized); ok {
		if n := s.Size(); n >= 0 {
			return n, true
		}
	}
	return 0, false
}

// ingestSource is what the sources of package ingest implement.
type ingestSource interface {
	Next(ctx context.Context) (ingest.Object, error)
	Close() error
}

// fromIngest adapts a source of package ingest.
type fromIngest struct{ ingestSource }

func (f fromIngest) Next(ctx context.Context) (Object, error) {
	o, err := f.ingestSource.Next(ctx)
	return Object{Object: o}, err
}

func (f fromIngest) Size() int64 {
	if s, ok := f.ingestSource.(sized); ok {
		return s.Size()
	}
	return -1
}

// FromIngest returns the Source of an ingest source (ingest.Paths,
// ingest.Stdin, ingest.S3Prefix, ingest.Queue).
func FromIngest(s interface {
	Next(ctx context.Context) (ingest.Object, error)
	Close() error
}) Source {
	return fromIngest{s}
}

// SourceEnv gives the source constructors what they may need. The clients
// are made on first use (a run over local files never loads AWS settings).
type SourceEnv struct {
	Config Config
	Logger *zap.Logger
	// S3 returns the S3 client (for s3:// sources).
	S3 func(ctx context.Context) (*s3.Client, error)
	// Stdin is read by the "-" source; nil means os.Stdin.
	Stdin io.Reader
}

// sourceKinds is the table of SOURCE arguments: a new kind of source is one
// implementation in ingest and one row here. Rows are tried in order; the
// last one takes anything (local paths, folders and globs).
var sourceKinds = []struct {
	name  string
	match func(arg string) bool
	open  func(ctx context.Context, env SourceEnv, args []string) (Source, error)
}{
	{"stdin", func(a string) bool { return a == "-" }, openStdin},
	{"s3", func(a string) bool { return strings.HasPrefix(a, "s3://") }, openS3Prefix},
	{"local", func(string) bool { return true }, openPaths},
}

func openStdin(_ context.Context, env SourceEnv, args []string) (Source, error) {
	if len(args) > 1 {
		return nil, fmt.Errorf("source -: standard input can be named once")
	}
	return FromIngest(ingest.NewStdin(env.Stdin)), nil
}

func openS3Prefix(ctx context.Context, env SourceEnv, args []string) (Source, error) {
	for _, a := range args {
		if _, _, err := ingest.ParseS3URI(a); err != nil {
			return nil, err
		}
	}
	c, err := env.S3(ctx)
	if err != nil {
		return nil, err
	}
	p, err := ingest.NewS3Prefix(&ingest.S3Source{Client: c, Suffixes: env.Config.SourceSuffixes(), Logger: env.Logger}, args)
	if err != nil {
		return nil, err
	}
	return FromIngest(p), nil
}

func openPaths(_ context.Context, env SourceEnv, args []string) (Source, error) {
	p, err := ingest.NewPaths(args, ingest.LocalOptions{Suffixes: env.Config.SourceSuffixes()})
	if err != nil {
		return nil, err
	}
	return FromIngest(p), nil
}

// OpenSources returns the Source of the SOURCE arguments of `run`, `validate`
// and `verify`: paths, folders, globs, "-" (standard input) and
// s3://bucket/prefix, in the order given (arguments of one kind are read
// together, kinds in the order they first appear). Everything that can be
// checked up front is (a missing path, a malformed URI): the error names it.
func OpenSources(ctx context.Context, env SourceEnv, args []string) (Source, error) {
	var order []int
	groups := map[int][]string{}
	for _, a := range args {
		for i, k := range sourceKinds {
			if k.match(a) {
				if _, seen := groups[i]; !seen {
					order = append(order, i)
				}
				groups[i] = append(groups[i], a)
				break
			}
		}
	}
	var srcs []Source
	for _, i := range order {
		s, err := sourceKinds[i].open(ctx, env, groups[i])
		if err != nil {
			for _, o := range srcs {
				_ = o.Close()
			}
			return nil, err
		}
		srcs = append(srcs, s)
	}
	if len(srcs) == 1 {
		return srcs[0], nil
	}
	return &concat{srcs: srcs}, nil
}

// concat reads its sources one after the other.
type concat struct {
	srcs []Source
	next int
}

func (c *concat) Next(ctx context.Context) (Object, error) {
	for c.next < len(c.srcs) {
		o, err := c.srcs[c.next].Next(ctx)
		if err == io.EOF {
			c.next++
			continue
		}
		return o, err
	}
	return Object{}, io.EOF
}

// Size is known when it is known for every part.
func (c *concat) Size() int64 {
	var n int64
	for _, s := range c.srcs {
		sz, ok := SourceSize(s)
		if !ok {
			return -1
		}
		n += sz
	}
	return n
}

func (c *concat) Close() error {
	var first error
	for _, s := range c.srcs {
		if err := s.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}
