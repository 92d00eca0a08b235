package ingest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	"go.uber.org/zap"

	"github.com/fhirload/fhirload/internal/ctxtime"
)

// maxResumes bounds how many times in a row an S3 read is resumed without
// making progress before the error is returned.
const maxResumes = 5

// ParseS3URI splits "s3://bucket/prefix" into its bucket and prefix (which
// may be empty). The prefix is taken verbatim: S3 URIs are not URL-encoded.
func ParseS3URI(uri string) (bucket, prefix string, err error) {
	rest, ok := strings.CutPrefix(uri, "s3://")
	if !ok {
		return "", "", fmt.Errorf("s3 uri %q: want s3://bucket/prefix", uri)
	}
	bucket, prefix, _ = strings.Cut(rest, "/")
	if bucket == "" {
		return "", "", fmt.Errorf("s3 uri %q: no bucket", uri)
	}
	return bucket, prefix, nil
}

// S3Source lists and opens S3 objects.
type S3Source struct {
	Client *s3.Client
	// Suffixes filter listed keys (case-insensitive); empty means
	// DefaultSuffixes(). Objects named by notifications are not filtered.
	Suffixes []string
	// Logger receives resumed reads; nil means no logging.
	Logger *zap.Logger
	// PageSize is ListObjectsV2's MaxKeys; 0 means the service default (1000).
	PageSize int32
}

func (s *S3Source) logger() *zap.Logger {
	if s.Logger == nil {
		return zap.NewNop()
	}
	return s.Logger
}

// List calls fn for every object under uri ("s3://bucket/prefix") whose key
// has one of the suffixes, in key order, page by page. Folder markers (keys
// ending in "/") are skipped. An error from fn stops the listing and is
// returned.
func (s *S3Source) List(ctx context.Context, uri string, fn func(Object) error) error {
	p, err := NewS3Prefix(s, []string{uri})
	if err != nil {
		return err
	}
	for {
		o, err := p.Next(ctx)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := fn(o); err != nil {
			return err
		}
	}
}

// paginator lists uri (already checked by ParseS3URI).
func (s *S3Source) paginator(uri string) *s3.ListObjectsV2Paginator {
	bucket, prefix, _ := ParseS3URI(uri)
	in := &s3.ListObjectsV2Input{Bucket: aws.String(bucket)}
	if prefix != "" {
		in.Prefix = aws.String(prefix)
	}
	if s.PageSize > 0 {
		in.MaxKeys = aws.Int32(s.PageSize)
	}
	return s3.NewListObjectsV2Paginator(s.Client, in)
}

// takes reports whether a listed key is an object to read: not a folder
// marker, and with one of the suffixes.
func (s *S3Source) takes(key string) bool {
	suffixes := s.Suffixes
	if len(suffixes) == 0 {
		suffixes = DefaultSuffixes()
	}
	return !strings.HasSuffix(key, "/") && hasSuffix(key, suffixes)
}

// Object returns the Object for bucket/key. etag (quoted or not; "" when
// unknown) pins the version read: Open sends If-Match, and an object that is
// gone or was overwritten since is an error wrapping ErrMissingObject. Size
// is -1 when unknown. The Object's ETag is unquoted so that listings and
// event notifications give the same Key. Ack is nil.
func (s *S3Source) Object(bucket, key, etag string, size int64) Object {
	etag = strings.Trim(etag, `"`)
	return Object{
		URI:  "s3://" + bucket + "/" + key,
		ETag: etag,
		Size: size,
		Open: func(ctx context.Context) (io.ReadCloser, error) {
			r := &s3Reader{ctx: ctx, src: s, bucket: bucket, key: key, etag: etag}
			if err := r.get(); err != nil {
				return nil, err
			}
			return r, nil
		},
	}
}

// s3Reader streams one object. A read that fails mid-object is resumed with a
// Range request from the last byte consumed, pinned to the same ETag.
type s3Reader struct {
	ctx         context.Context
	src         *S3Source
	bucket, key string
	etag        string // unquoted; learnt from the first response when unknown
	body        io.ReadCloser
	off         int64 // bytes handed to the caller
	size        int64 // object size from the first response, -1 unknown
	resumes     int   // consecutive resumes without progress
	done        bool
}

func (r *s3Reader) uri() string { return "s3://" + r.bucket + "/" + r.key }

// get issues the GetObject for the bytes from r.off on.
func (r *s3Reader) get() error {
	in := &s3.GetObjectInput{Bucket: aws.String(r.bucket), Key: aws.String(r.key)}
	if r.etag != "" {
		in.IfMatch = aws.String(`"` + r.etag + `"`)
	}
	if r.off > 0 {
		in.Range = aws.String(fmt.Sprintf("bytes=%d-", r.off))
	}
	out, err := r.src.Client.GetObject(r.ctx, in)
	if err != nil {
		return s3Error(r.uri(), err)
	}
	r.body = out.Body
	if r.etag == "" {
		r.etag = strings.Trim(aws.ToString(out.ETag), `"`)
	}
	if r.off == 0 {
		r.size = aws.ToInt64(out.ContentLength)
		if out.ContentLength == nil {
			r.size = -1
		}
	}
	return nil
}

func (r *s3Reader) Read(p []byte) (int, error) {
	for {
		if r.done {
			return 0, io.EOF
		}
		if r.body == nil {
			if r.size >= 0 && r.off >= r.size {
				r.done = true // broke right at the end: nothing left to range over
				continue
			}
			if err := r.get(); err != nil {
				if errors.Is(err, ErrMissingObject) || !r.retry(err) {
					return 0, err
				}
				continue
			}
		}
		n, err := r.body.Read(p)
		r.off += int64(n)
		if n > 0 {
			r.resumes = 0
		}
		if err == nil {
			return n, nil
		}
		if err == io.EOF && (r.size < 0 || r.off >= r.size) {
			r.done = true
			return n, io.EOF
		}
		// A broken read (or an early EOF): resume from r.off.
		_ = r.body.Close()
		r.body = nil
		if !r.retry(err) {
			return n, fmt.Errorf("read %s at byte %d: %w", r.uri(), r.off, err)
		}
		if n > 0 {
			return n, nil
		}
	}
}

// retry reports whether to resume after err, pausing before every resume but
// the first.
func (r *s3Reader) retry(err error) bool {
	if r.ctx.Err() != nil || r.resumes >= maxResumes {
		return false
	}
	r.resumes++
	r.src.logger().Warn("s3 read broke; resuming with a range request",
		zap.String("uri", r.uri()), zap.Int64("offset", r.off), zap.Int("attempt", r.resumes), zap.Error(err))
	if r.resumes > 1 {
		return ctxtime.Sleep(r.ctx, time.Duration(r.resumes-1)*200*time.Millisecond) == nil
	}
	return true
}

func (r *s3Reader) Close() error {
	if r.body == nil {
		return nil
	}
	err := r.body.Close()
	r.body = nil
	r.done = true
	return err
}

// s3Error classifies a GetObject failure: "no such key/bucket" and a failed
// If-Match (the object was overwritten: the announced version is gone) wrap
// ErrMissingObject; a refusal of the caller's credentials wraps
// ErrCredentials; cancellation is returned as is; anything else (AccessDenied
// on this object, a 5xx that outlasted the SDK's retries) wraps ErrUnreadable.
func s3Error(uri string, err error) error {
	var nsk *types.NoSuchKey
	var nsb *types.NoSuchBucket
	if errors.As(err, &nsk) || errors.As(err, &nsb) {
		return fmt.Errorf("get %s: %w: %w", uri, ErrMissingObject, err)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	var api smithy.APIError
	if errors.As(err, &api) {
		switch api.ErrorCode() {
		case "NoSuchKey", "NoSuchBucket", "NotFound", "PreconditionFailed":
			return fmt.Errorf("get %s: %w: %w", uri, ErrMissingObject, err)
		case "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "TokenRefreshRequired":
			return fmt.Errorf("get %s: %w: %w", uri, ErrCredentials, err)
		}
	}
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		switch re.HTTPStatusCode() {
		case http.StatusNotFound, http.StatusPreconditionFailed:
			return fmt.Errorf("get %s: %w: %w", uri, ErrMissingObject, err)
		}
	}
	if strings.Contains(err.Error(), "failed to retrieve credentials") { // the SDK's wording; no typed error
		return fmt.Errorf("get %s: %w: %w", uri, ErrCredentials, err)
	}
	return fmt.Errorf("get %s: %w: %w", uri, ErrUnreadable, err)
}
