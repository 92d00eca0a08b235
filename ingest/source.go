package ingest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// The sources. Each hands out Objects through Next until it returns io.EOF
// (batch sources) or its context ends (the queue); pipeline.Source is the
// interface they satisfy (through a one-line adapter, since pipeline adds
// its own object kind for dead-letter replay).

// Paths is the source of local files: paths, folders (walked for the
// configured suffixes) and globs, resolved when it is made so that a missing
// path is an error before anything is read.
type Paths struct {
	objs []Object
	next int
}

// NewPaths resolves patterns (see Local).
func NewPaths(patterns []string, opts LocalOptions) (*Paths, error) {
	objs, err := Local(patterns, opts)
	if err != nil {
		return nil, err
	}
	return &Paths{objs: objs}, nil
}

// Next returns the next file, in URI order, or io.EOF.
func (p *Paths) Next(ctx context.Context) (Object, error) {
	if err := ctx.Err(); err != nil {
		return Object{}, err
	}
	if p.next >= len(p.objs) {
		return Object{}, io.EOF
	}
	p.next++
	return p.objs[p.next-1], nil
}

// Size is the total size of the files, for progress.
func (p *Paths) Size() int64 {
	var n int64
	for _, o := range p.objs {
		n += o.Size
	}
	return n
}

// Close does nothing.
func (p *Paths) Close() error { return nil }

// StdinURI is the URI of the object read from standard input, as it appears
// in reports and dead-letter entries.
const StdinURI = "stdin"

// Stdin is the source of one object: standard input (`fhirload run -`).
// The object can be opened once; a replay of its dead letters works from the
// lines kept in the entries.
type Stdin struct {
	r    io.Reader
	once sync.Once
	done bool
}

// NewStdin returns the source reading r (os.Stdin when nil).
func NewStdin(r io.Reader) *Stdin {
	if r == nil {
		r = os.Stdin
	}
	return &Stdin{r: r}
}

// Next returns the stdin object once, then io.EOF.
func (s *Stdin) Next(ctx context.Context) (Object, error) {
	if err := ctx.Err(); err != nil {
		return Object{}, err
	}
	if s.done {
		return Object{}, io.EOF
	}
	s.done = true
	return Object{URI: StdinURI, Size: -1, Open: func(context.Context) (io.ReadCloser, error) {
		opened := false
		s.once.Do(func() { opened = true })
		if !opened {
			return nil, fmt.Errorf("%w: standard input can be read only once", ErrUnreadable)
		}
		return io.NopCloser(s.r), nil
	}}, nil
}

// Close does nothing (standard input belongs to the process).
func (s *Stdin) Close() error { return nil }

// S3Prefix is the source of the objects under S3 prefixes, listed page by
// page as they are needed (a prefix of millions of objects is never held in
// memory).
type S3Prefix struct {
	src  *S3Source
	uris []string

	pages *s3.ListObjectsV2Paginator
	cur   string // the uri being listed
	buf   []Object
}

// NewS3Prefix checks the URIs ("s3://bucket/prefix") and returns their source.
func NewS3Prefix(src *S3Source, uris []string) (*S3Prefix, error) {
	for _, u := range uris {
		if _, _, err := ParseS3URI(u); err != nil {
			return nil, err
		}
	}
	return &S3Prefix{src: src, uris: uris}, nil
}

// Next returns the next object, in key order per prefix, or io.EOF. A
// listing error is returned as is (the run stops: a prefix that cannot be
// listed is not skipped).
func (p *S3Prefix) Next(ctx context.Context) (Object, error) {
	for len(p.buf) == 0 {
		if err := ctx.Err(); err != nil {
			return Object{}, err
		}
		if p.pages == nil || !p.pages.HasMorePages() {
			if len(p.uris) == 0 {
				return Object{}, io.EOF
			}
			p.cur, p.uris = p.uris[0], p.uris[1:]
			p.pages = p.src.paginator(p.cur)
			continue
		}
		page, err := p.pages.NextPage(ctx)
		if err != nil {
			return Object{}, fmt.Errorf("list %s: %w", p.cur, err)
		}
		bucket, _, _ := ParseS3URI(p.cur)
		for _, o := range page.Contents {
			key := aws.ToString(o.Key)
			if p.src.takes(key) {
				p.buf = append(p.buf, p.src.Object(bucket, key, aws.ToString(o.ETag), aws.ToInt64(o.Size)))
			}
		}
	}
	o := p.buf[0]
	p.buf = p.buf[1:]
	return o, nil
}

// Close does nothing.
func (p *S3Prefix) Close() error { return nil }

// Queue is the source of the objects named by S3 event notifications on an
// SQS queue (see SQSSource.Receive). Next blocks until a message brings an
// object or ctx ends; the receiving loop starts with the first Next and runs
// in that call's context until Close.
type Queue struct {
	q      *SQSSource
	out    chan Object
	start  sync.Once
	stopRx context.CancelFunc
	err    error // Receive's result, set before out is closed
}

// NewQueue returns the source of q's objects.
func NewQueue(q *SQSSource) *Queue {
	return &Queue{q: q, out: make(chan Object)}
}

// errNotTaken acks the objects received after the runner stopped taking any.
var errNotTaken = errors.New("not taken: the worker is stopping")

// Next returns the next announced object. It returns ctx's error once ctx
// ends, and the queue's error when it cannot be read at all.
func (s *Queue) Next(ctx context.Context) (Object, error) {
	s.start.Do(func() {
		rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		s.stopRx = cancel
		go func() {
			s.err = s.q.Receive(rctx, s.out)
			close(s.out)
		}()
	})
	select {
	case o, ok := <-s.out:
		if ok {
			return o, nil
		}
		if s.err != nil {
			return Object{}, s.err
		}
		return Object{}, context.Canceled
	case <-ctx.Done():
		return Object{}, ctx.Err()
	}
}

// Close stops receiving and then closes the SQS source (its heartbeats end:
// unsettled messages reappear after their visibility timeout). Call it after
// the last Ack.
func (s *Queue) Close() error {
	if s.stopRx != nil {
		s.stopRx()
		// An object Receive hands over now has no taker: settle it as not
		// taken, so that its message is released at once.
		for o := range s.out {
			if o.Ack != nil {
				_ = o.Ack(context.Background(), errNotTaken)
			}
		}
	}
	return s.q.Close()
}
