package fhirstore

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
)

// S3API is what import jobs need of Amazon S3; *s3.Client satisfies it.
type S3API interface {
	ListObjectsV2(ctx context.Context, in *s3.ListObjectsV2Input, opts ...func(*s3.Options)) (*s3.ListObjectsV2Output, error)
	GetObject(ctx context.Context, in *s3.GetObjectInput, opts ...func(*s3.Options)) (*s3.GetObjectOutput, error)
	PutObject(ctx context.Context, in *s3.PutObjectInput, opts ...func(*s3.Options)) (*s3.PutObjectOutput, error)
	HeadBucket(ctx context.Context, in *s3.HeadBucketInput, opts ...func(*s3.Options)) (*s3.HeadBucketOutput, error)
}

// s3Conn builds the S3 client of import jobs once, on first use.
type s3Conn struct {
	region string
	mu     sync.Mutex
	c      S3API
}

// client returns Options.S3, or a client built from the standard AWS SDK
// configuration: region, credentials and endpoint from the environment and
// shared files (AWS_REGION, the credential chain, AWS_ENDPOINT_URL_S3 or
// AWS_ENDPOINT_URL). An endpoint URL, as emulators need, turns on
// path-style addressing.
func (c *s3Conn) client(ctx context.Context) (S3API, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.c != nil {
		return c.c, nil
	}
	cfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		return nil, fmt.Errorf("AWS configuration: %w", err)
	}
	if cfg.Region == "" {
		cfg.Region = c.region
	}
	c.c = s3.NewFromConfig(cfg, func(o *s3.Options) {
		o.UsePathStyle = o.BaseEndpoint != nil
		// A client of its own, not through the config: an AWS_CA_BUNDLE
		// meant for real endpoints must not apply to a loopback emulator.
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = 8
		o.HTTPClient = &http.Client{Transport: t}
	})
	return c.c, nil
}

// s3URIPattern is the S3Uri constraint of the HealthLake API.
var s3URIPattern = regexp.MustCompile(`^s3://[a-z0-9][\.\-a-z0-9]{1,61}[a-z0-9](/.*)?$`)

// splitS3URI splits s3://bucket/prefix.
func splitS3URI(uri string) (bucket, prefix string, ok bool) {
	if !s3URIPattern.MatchString(uri) || len(uri) > 1024 {
		return "", "", false
	}
	bucket, prefix, _ = strings.Cut(strings.TrimPrefix(uri, "s3://"), "/")
	return bucket, prefix, true
}

// s3Reason is an S3 error for a job's message or a failure record: the
// API error code and message (no object content), or the error text.
func s3Reason(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		if m := ae.ErrorMessage(); m != "" {
			return ae.ErrorCode() + ": " + m
		}
		return ae.ErrorCode()
	}
	return err.Error()
}
