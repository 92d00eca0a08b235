package importjob

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/fhirload/fhirload/pipeline"
)

// idxRecord is the size of one index record: the item's token (8 bytes),
// its source line (4) and its source's number in the batch (4), little
// endian. Record n of part-K.idx is line n of part-K.ndjson.
const idxRecord = 16

// part is the staged object being written.
type part struct {
	name         string // part-000001.ndjson
	data, idx    *os.File
	dw, iw       *bufio.Writer
	lines, bytes int64
}

func partName(n int) string { return fmt.Sprintf("part-%06d.ndjson", n) }

func idxName(name string) string { return strings.TrimSuffix(name, ".ndjson") + ".idx" }

// stager writes the items of one run into staged objects: NDJSON files in
// its folder, cut at Options.ObjectBytes and uploaded under its prefix as
// they fill (Options.Uploads at a time), and the index that maps each
// staged line back to its item.
type stager struct {
	s3                S3
	dir               string // staging-{run}/, then batches/{key}/
	bucket, keyPrefix string // the objects' keys start with keyPrefix (ending in "/")
	prefix            string // s3://bucket/keyPrefix: the job's input
	objectBytes       int64

	mu         sync.Mutex
	cur        *part
	parts      []partRecord // sealed, in order
	sources    map[string]uint32
	sourceList []string
	fp         fingerprint
	lines      int64
	bytes      int64
	sealed     bool // finish was called: no more writes

	errMu sync.Mutex
	err   error // the first failure: the batch cannot be staged whole

	slots    chan struct{} // uploads in flight
	uploads  sync.WaitGroup
	uploaded atomic.Int64
	ctx      context.Context // of the uploads; canceled by abort
	cancel   context.CancelFunc
}

func newStager(c S3, dir, bucket, keyPrefix string, objectBytes int64, uploads int) *stager {
	ctx, cancel := context.WithCancel(context.Background())
	return &stager{s3: c, dir: dir, bucket: bucket, keyPrefix: keyPrefix, prefix: "s3://" + bucket + "/" + keyPrefix,
		objectBytes: objectBytes, sources: map[string]uint32{}, slots: make(chan struct{}, uploads), ctx: ctx, cancel: cancel}
}

func (st *stager) setErr(err error) {
	st.errMu.Lock()
	defer st.errMu.Unlock()
	if st.err == nil {
		st.err = err
	}
}

func (st *stager) failure() error {
	st.errMu.Lock()
	defer st.errMu.Unlock()
	return st.err
}

// write appends items (with their bodies, one line each) to the batch and
// adds their digests to its fingerprint.
func (st *stager) write(ctx context.Context, items []pipeline.Item, bodies [][]byte, fp fingerprint) error {
	if err := st.failure(); err != nil {
		return err
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.sealed {
		return errors.New("stage: the batch is already sealed")
	}
	var rec [idxRecord]byte
	for i, it := range items {
		if it.Line < 0 || it.Line > math.MaxUint32 {
			return fmt.Errorf("stage: %s line %d: line numbers beyond %d are not supported in import mode", it.Source, it.Line, uint32(math.MaxUint32))
		}
		src, ok := st.sources[it.Source]
		if !ok {
			src = uint32(len(st.sourceList))
			st.sources[it.Source] = src
			st.sourceList = append(st.sourceList, it.Source)
		}
		if st.cur == nil {
			p, err := st.newPart(len(st.parts) + 1)
			if err != nil {
				st.setErr(err)
				return err
			}
			st.cur = p
		}
		p := st.cur
		binary.LittleEndian.PutUint64(rec[0:8], it.Token)
		binary.LittleEndian.PutUint32(rec[8:12], uint32(it.Line))
		binary.LittleEndian.PutUint32(rec[12:16], src)
		// bufio's errors are sticky: seal's Flush reports them.
		_, _ = p.dw.Write(bodies[i])
		_ = p.dw.WriteByte('\n')
		_, _ = p.iw.Write(rec[:])
		p.lines++
		p.bytes += int64(len(bodies[i])) + 1
		if p.bytes >= st.objectBytes {
			if err := st.seal(ctx); err != nil {
				return err
			}
		}
	}
	st.fp.merge(fp)
	st.lines += int64(len(items))
	return nil
}

func (st *stager) newPart(n int) (*part, error) {
	name := partName(n)
	data, err := os.OpenFile(filepath.Join(st.dir, name), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("stage: %w", err)
	}
	idx, err := os.OpenFile(filepath.Join(st.dir, idxName(name)), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		data.Close()
		return nil, fmt.Errorf("stage: %w", err)
	}
	return &part{name: name, data: data, idx: idx, dw: bufio.NewWriterSize(data, 1<<20), iw: bufio.NewWriterSize(idx, 64<<10)}, nil
}

// seal closes the current part (its index fsynced: it is what maps the
// job's output back) and uploads it in the background; it blocks while
// Options.Uploads uploads are in flight (back-pressure on the writers, and
// a bound on the disk the staging holds). Called with mu held.
func (st *stager) seal(ctx context.Context) error {
	p := st.cur
	st.cur = nil
	err := p.dw.Flush()
	if cerr := p.data.Close(); err == nil {
		err = cerr
	}
	if ferr := p.iw.Flush(); err == nil {
		err = ferr
	}
	if serr := p.idx.Sync(); err == nil {
		err = serr
	}
	if cerr := p.idx.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		err = fmt.Errorf("stage %s: %w", p.name, err)
		st.setErr(err)
		return err
	}
	st.parts = append(st.parts, partRecord{Name: p.name, Lines: p.lines, Bytes: p.bytes})
	st.bytes += p.bytes
	select {
	case st.slots <- struct{}{}:
	case <-st.ctx.Done():
		st.setErr(st.ctx.Err())
		return st.ctx.Err()
	case <-ctx.Done():
		// The part is not uploaded: the batch can never be whole.
		st.setErr(ctx.Err())
		return ctx.Err()
	}
	st.uploads.Add(1)
	go func() {
		defer st.uploads.Done()
		defer func() { <-st.slots }()
		if err := st.upload(p.name, p.bytes); err != nil {
			st.setErr(err)
		}
	}()
	return nil
}

// upload puts one staged object (encrypted at rest, SSE-S3) and removes its
// local file.
func (st *stager) upload(name string, n int64) error {
	path := filepath.Join(st.dir, name)
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("stage %s: %w", name, err)
	}
	defer f.Close()
	// An *os.File is seekable: the SDK can sign and retry the body.
	_, err = st.s3.PutObject(st.ctx, &s3.PutObjectInput{Bucket: aws.String(st.bucket), Key: aws.String(st.keyPrefix + name),
		Body: f, ContentLength: aws.Int64(n), ContentType: aws.String("application/x-ndjson"),
		ServerSideEncryption: s3types.ServerSideEncryptionAes256})
	if err != nil {
		return fmt.Errorf("stage: put s3://%s/%s%s: %w", st.bucket, st.keyPrefix, name, err)
	}
	st.uploaded.Add(1)
	_ = os.Remove(path)
	return nil
}

// finish seals the last part and waits for every upload. After it the
// batch is whole in S3, or the error says why not.
func (st *stager) finish(ctx context.Context) error {
	st.mu.Lock()
	st.sealed = true
	var err error
	if st.cur != nil {
		err = st.seal(ctx)
	}
	st.mu.Unlock()
	if err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { st.uploads.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return ctx.Err()
	}
	return st.failure()
}

// abortGrace is how long abort lets the uploads in flight end on their own.
var abortGrace = 15 * time.Second

// abort deletes what was staged, in S3 and here. The uploads in flight
// (Options.Uploads at most) are let end first: a PUT cut short on the
// client may still be stored by the server after the listing below, and
// no object may outlive its staging. Past abortGrace they are canceled;
// then the local folder is kept, so that the next run's cleanLeftovers
// lists and deletes the prefix again.
func (st *stager) abort(ctx context.Context) error {
	var cut atomic.Bool
	cutShort := func() { cut.Store(true); st.cancel() }
	grace := time.AfterFunc(abortGrace, cutShort)
	stop := context.AfterFunc(ctx, cutShort)
	st.mu.Lock()
	if p := st.cur; p != nil {
		p.data.Close()
		p.idx.Close()
		st.cur = nil
	}
	st.sealed = true
	st.mu.Unlock()
	st.uploads.Wait()
	grace.Stop()
	stop()
	st.cancel()
	err := deletePrefix(ctx, st.s3, st.bucket, st.keyPrefix)
	if cut.Load() {
		if err == nil {
			err = errors.New("stage: uploads were cut short; the next run deletes the staging again")
		}
		return err
	}
	if rerr := os.RemoveAll(st.dir); err == nil {
		err = rerr
	}
	return err
}

// deletePrefix deletes every object whose key starts with prefix.
func deletePrefix(ctx context.Context, c S3, bucket, prefix string) error {
	if prefix == "" || !strings.HasSuffix(prefix, "/") {
		return fmt.Errorf("refusing to delete under %q: not a folder", prefix)
	}
	p := s3.NewListObjectsV2Paginator(c, &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String(prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("list s3://%s/%s: %w", bucket, prefix, err)
		}
		if len(page.Contents) == 0 {
			continue
		}
		ids := make([]s3types.ObjectIdentifier, len(page.Contents))
		for i, o := range page.Contents {
			ids[i] = s3types.ObjectIdentifier{Key: o.Key}
		}
		out, err := c.DeleteObjects(ctx, &s3.DeleteObjectsInput{Bucket: aws.String(bucket),
			Delete: &s3types.Delete{Objects: ids, Quiet: aws.Bool(true)}})
		if err != nil {
			return fmt.Errorf("delete under s3://%s/%s: %w", bucket, prefix, err)
		}
		if len(out.Errors) > 0 {
			e := out.Errors[0]
			return fmt.Errorf("delete s3://%s/%s: %s", bucket, aws.ToString(e.Key), aws.ToString(e.Code))
		}
	}
	return nil
}
