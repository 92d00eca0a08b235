package deadletter

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	"go.uber.org/zap"
)

// S3 layout: PREFIX/segments/<time>-<pid>-<rand>.ndjson, one immutable
// object per flush, and PREFIX/locks/<name>.json lease objects.
type s3Backend struct {
	c        *s3.Client
	bucket   string
	prefix   string // "" or ending in "/"
	sse      types.ServerSideEncryption
	kmsKeyID string
}

// s3ReadConcurrency bounds parallel GetObject calls while folding.
const s3ReadConcurrency = 8

func openS3(ctx context.Context, loc string, opts Options) (*s3Backend, error) {
	if opts.S3 == nil {
		return nil, errors.New("dead-letter s3 url: no S3 client configured")
	}
	bucket, prefix, _ := strings.Cut(loc, "/")
	if bucket == "" {
		return nil, fmt.Errorf("dead-letter url s3://%s: missing bucket", loc)
	}
	prefix = strings.Trim(prefix, "/")
	if prefix != "" {
		prefix += "/"
	}
	b := &s3Backend{c: opts.S3, bucket: bucket, prefix: prefix}
	switch opts.SSE {
	case "", SSES3:
		if opts.KMSKeyID != "" {
			return nil, errors.New("dead-letter: a KMS key id needs sse aws:kms")
		}
		b.sse = types.ServerSideEncryptionAes256
	case SSEKMS:
		b.sse = types.ServerSideEncryptionAwsKms
		b.kmsKeyID = opts.KMSKeyID
	default:
		return nil, fmt.Errorf("dead-letter sse %q: want %s or %s", opts.SSE, SSES3, SSEKMS)
	}
	return b, nil
}

func (b *s3Backend) put(ctx context.Context, key string, body []byte, cond func(*s3.PutObjectInput)) (*s3.PutObjectOutput, error) {
	in := &s3.PutObjectInput{
		Bucket:               aws.String(b.bucket),
		Key:                  aws.String(key),
		Body:                 bytes.NewReader(body),
		ContentLength:        aws.Int64(int64(len(body))),
		ContentType:          aws.String("application/x-ndjson"),
		ServerSideEncryption: b.sse,
	}
	if b.kmsKeyID != "" {
		in.SSEKMSKeyId = aws.String(b.kmsKeyID)
	}
	if cond != nil {
		cond(in)
	}
	return b.c.PutObject(ctx, in)
}

// s3PutTimeout bounds one group commit's PutObject (with the SDK's retries)
// and the clean-up after it: a commit has no caller context of its own.
const s3PutTimeout = 2 * time.Minute

// commit puts the group as one new segment object: S3 stores it whole or not
// at all. When the outcome is uncertain (a 5xx after the SDK's retries, a
// timeout, a cut connection: the object may have been stored all the same)
// the key is deleted before the error is returned, so that a write reported
// as failed never shows up later.
func (b *s3Backend) commit(group []*batch) error {
	size := 0
	for _, x := range group {
		size += len(x.data)
	}
	data := make([]byte, 0, size)
	for _, x := range group {
		data = append(data, x.data...)
	}
	name, err := segmentName(time.Now(), os.Getpid())
	if err != nil {
		return err
	}
	key := b.prefix + segmentsDir + "/" + name
	ctx, cancel := context.WithTimeout(context.Background(), s3PutTimeout)
	defer cancel()
	_, err = b.put(ctx, key, data, nil)
	if err == nil {
		return nil
	}
	err = fmt.Errorf("dead-letter put s3://%s/%s: %w", b.bucket, key, err)
	if refused(err) {
		return err
	}
	dctx, dcancel := context.WithTimeout(context.Background(), s3PutTimeout)
	defer dcancel()
	if _, derr := b.c.DeleteObject(dctx, &s3.DeleteObjectInput{Bucket: aws.String(b.bucket), Key: aws.String(key)}); derr != nil {
		return errors.Join(err, fmt.Errorf("the segment may have been stored all the same and could not be removed: %w", derr))
	}
	return err
}

// refused reports whether err is an answer of S3 that means the object was
// not stored: a 4xx (AccessDenied, NoSuchBucket, …).
func refused(err error) bool {
	var re *awshttp.ResponseError
	return errors.As(err, &re) && re.HTTPStatusCode() >= 400 && re.HTTPStatusCode() < 500
}

func (b *s3Backend) segments(ctx context.Context) ([]string, error) {
	pfx := b.prefix + segmentsDir + "/"
	p := s3.NewListObjectsV2Paginator(b.c, &s3.ListObjectsV2Input{Bucket: aws.String(b.bucket), Prefix: aws.String(pfx)})
	var names []string
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("dead-letter list s3://%s/%s: %w", b.bucket, pfx, err)
		}
		for _, o := range page.Contents {
			name := strings.TrimPrefix(aws.ToString(o.Key), pfx)
			if strings.HasSuffix(name, ".ndjson") && !strings.Contains(name, "/") {
				names = append(names, name)
			}
		}
	}
	slices.Sort(names)
	return names, nil
}

// read fetches segments concurrently in windows and hands them to fn in
// order, so memory is bounded by one window.
func (b *s3Backend) read(ctx context.Context, names []string, fn func(segment) error) error {
	for start := 0; start < len(names); start += s3ReadConcurrency {
		window := names[start:min(start+s3ReadConcurrency, len(names))]
		bodies := make([][]byte, len(window))
		errs := make([]error, len(window))
		var wg sync.WaitGroup
		for i, name := range window {
			wg.Go(func() { bodies[i], errs[i] = b.get(ctx, b.prefix+segmentsDir+"/"+name) })
		}
		wg.Wait()
		for i, name := range window {
			if errs[i] != nil {
				return errs[i]
			}
			if err := fn(segment{name: name, r: bytes.NewReader(bodies[i])}); err != nil {
				return err
			}
		}
	}
	return nil
}

func (b *s3Backend) get(ctx context.Context, key string) ([]byte, error) {
	out, err := b.c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(b.bucket), Key: aws.String(key)})
	if err != nil {
		return nil, fmt.Errorf("dead-letter get s3://%s/%s: %w", b.bucket, key, err)
	}
	defer out.Body.Close()
	data, err := io.ReadAll(out.Body)
	if err != nil {
		return nil, fmt.Errorf("dead-letter read s3://%s/%s: %w", b.bucket, key, err)
	}
	return data, nil
}

func (b *s3Backend) close() error { return nil }

// leaseBody is the content of a lease object.
type leaseBody struct {
	Owner   string    `json:"owner"`
	PID     int       `json:"pid"`
	Host    string    `json:"host"`
	Expires time.Time `json:"expires"`
	// Acquired is when the holder took the lease (kept by renewals).
	Acquired time.Time `json:"acquired"`
	// Boot and PIDNS say which kernel boot and PID namespace PID belongs
	// to (Linux; empty elsewhere): with Host they let a process on the same
	// machine see that the holder has died without waiting for Expires.
	Boot  string `json:"boot,omitempty"`
	PIDNS string `json:"pidns,omitempty"`
}

// lock takes the lease object PREFIX/locks/NAME.json with a conditional
// create (If-None-Match: *). An expired lease (not renewed for ttl: its
// holder died) is taken over with a conditional overwrite (If-Match: its
// ETag), so of two processes racing for it only one wins. The holder renews
// the lease every ttl/3, also with If-Match.
func (b *s3Backend) lock(ctx context.Context, name string, ttl time.Duration, now func() time.Time, log *zap.Logger) (lease, error) {
	owner, err := randHex(8)
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	l := &s3Lease{b: b, key: b.prefix + locksDir + "/" + name + ".json", name: name, ttl: ttl, now: now, log: log,
		body: leaseBody{Owner: owner, PID: os.Getpid(), Host: host, Boot: bootID(), PIDNS: pidNamespace(),
			Acquired: now().UTC()}}
	// A lease may vanish between the failed create and the read: try again.
	for range 3 {
		etag, err := l.write(ctx, func(in *s3.PutObjectInput) { in.IfNoneMatch = aws.String("*") })
		if err == nil {
			l.start(etag)
			return l, nil
		}
		if !isPrecondition(err) {
			return nil, fmt.Errorf("dead-letter lock %s: %w", name, err)
		}
		cur, curTag, err := b.readLease(ctx, l.key)
		if isNotFound(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("dead-letter lock %s: %w", name, err)
		}
		dead := holderDead(cur, l.body)
		if now().Before(cur.Expires) && !dead {
			return nil, &LockedError{Name: name, PID: cur.PID, Host: cur.Host, Since: cur.Acquired, Expires: cur.Expires}
		}
		etag, err = l.write(ctx, func(in *s3.PutObjectInput) { in.IfMatch = aws.String(curTag) })
		if err == nil {
			why := "expired"
			if dead {
				why = "holder process gone"
			}
			log.Warn("dead-letter: took over a stale lease", zap.String("lock", name), zap.String("why", why),
				zap.Int("previous_pid", cur.PID), zap.String("previous_host", cur.Host))
			l.start(etag)
			return l, nil
		}
		if isPrecondition(err) || isNotFound(err) {
			// Someone else took it over or released it first.
			continue
		}
		return nil, fmt.Errorf("dead-letter lock %s: %w", name, err)
	}
	return nil, &LockedError{Name: name}
}

func (b *s3Backend) readLease(ctx context.Context, key string) (leaseBody, string, error) {
	out, err := b.c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(b.bucket), Key: aws.String(key)})
	if err != nil {
		return leaseBody{}, "", err
	}
	defer out.Body.Close()
	var lb leaseBody
	if err := json.NewDecoder(out.Body).Decode(&lb); err != nil {
		// An unreadable lease counts as expired.
		lb = leaseBody{}
	}
	return lb, aws.ToString(out.ETag), nil
}

type s3Lease struct {
	b    *s3Backend
	key  string
	name string
	ttl  time.Duration
	now  func() time.Time
	log  *zap.Logger
	body leaseBody

	mu   sync.Mutex
	etag string
	lost error

	stop chan struct{}
	done chan struct{}
}

// write puts the lease with a fresh expiry under the given condition.
func (l *s3Lease) write(ctx context.Context, cond func(*s3.PutObjectInput)) (string, error) {
	body := l.body
	body.Expires = l.now().Add(l.ttl).UTC()
	data, err := json.Marshal(body)
	if err != nil {
		return "", err
	}
	out, err := l.b.put(ctx, l.key, data, cond)
	if err != nil {
		return "", err
	}
	return aws.ToString(out.ETag), nil
}

func (l *s3Lease) start(etag string) {
	l.etag = etag
	l.stop = make(chan struct{})
	l.done = make(chan struct{})
	go l.renew()
}

// renew keeps the lease alive until release or abandon.
func (l *s3Lease) renew() {
	defer close(l.done)
	t := time.NewTicker(max(l.ttl/3, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		l.mu.Lock()
		etag := l.etag
		l.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), l.ttl/3+time.Second)
		next, err := l.write(ctx, func(in *s3.PutObjectInput) { in.IfMatch = aws.String(etag) })
		cancel()
		l.mu.Lock()
		switch {
		case err == nil:
			l.etag = next
		case isPrecondition(err) || isNotFound(err):
			l.lost = fmt.Errorf("dead-letter lock %s: lease lost to another holder", l.name)
			l.log.Error("dead-letter: lease lost", zap.String("lock", l.name))
			l.mu.Unlock()
			return
		default:
			// Transient: try again at the next tick, before ttl runs out.
			l.log.Warn("dead-letter: lease renewal failed", zap.String("lock", l.name), zap.Error(err))
		}
		l.mu.Unlock()
	}
}

func (l *s3Lease) halt() {
	close(l.stop)
	<-l.done
}

func (l *s3Lease) release() error {
	l.halt()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lost != nil {
		return l.lost
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := l.b.c.DeleteObject(ctx, &s3.DeleteObjectInput{
		Bucket: aws.String(l.b.bucket), Key: aws.String(l.key), IfMatch: aws.String(l.etag)})
	if isPrecondition(err) || isNotFound(err) {
		return fmt.Errorf("dead-letter lock %s: lease lost to another holder", l.name)
	}
	if err != nil {
		return fmt.Errorf("dead-letter unlock %s: %w", l.name, err)
	}
	return nil
}

func (l *s3Lease) abandon() { l.halt() }

func isPrecondition(err error) bool {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "PreconditionFailed", "ConditionalRequestConflict":
			return true
		}
	}
	return false
}

func isNotFound(err error) bool {
	var nsk *types.NoSuchKey
	if errors.As(err, &nsk) {
		return true
	}
	var ae smithy.APIError
	return errors.As(err, &ae) && (ae.ErrorCode() == "NoSuchKey" || ae.ErrorCode() == "NotFound")
}

// holderDead reports whether the lease cur was taken by a process of this
// machine, boot and PID namespace (self) that no longer exists. Anything
// uncertain (another machine, a container with its own PID namespace, no
// /proc) is "not dead": such a lease is taken over only once it expires.
func holderDead(cur, self leaseBody) bool {
	if cur.PID <= 0 || cur.Host == "" || cur.Boot == "" || cur.PIDNS == "" {
		return false
	}
	if cur.Host != self.Host || cur.Boot != self.Boot || cur.PIDNS != self.PIDNS || cur.PID == self.PID {
		return false
	}
	return !processExists(cur.PID)
}

// bootID is the kernel's boot id, "" when unknown.
func bootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// pidNamespace names this process's PID namespace, "" when unknown.
func pidNamespace() string {
	ns, err := os.Readlink("/proc/self/ns/pid")
	if err != nil {
		return ""
	}
	return ns
}

// processExists reports whether a process with this pid exists (in this
// PID namespace): /proc/PID is there. A reused pid reads as alive, which
// only delays a takeover until the lease expires.
func processExists(pid int) bool {
	_, err := os.Stat("/proc/" + strconv.Itoa(pid))
	return err == nil
}
