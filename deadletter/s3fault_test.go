package deadletter

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/fhirload/fhirload/internal/testutil"
)

// s3Gate is a reverse proxy in front of moto that answers segment PUTs the
// way S3 does when it refuses them, or fails after storing them; every other
// request goes through untouched.
type s3Gate struct {
	rp *httputil.ReverseProxy

	mu   sync.Mutex
	mode string // "": pass; "deny": 403 AccessDenied; "fail": 500; "store-then-fail": forward, then 500
	puts int    // segment PUTs seen
	dels int    // segment DELETEs seen
}

func newS3Gate(t *testing.T, upstream string) (*s3Gate, *s3.Client) {
	t.Helper()
	u, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	g := &s3Gate{rp: httputil.NewSingleHostReverseProxy(u)}
	srv := httptest.NewServer(g)
	t.Cleanup(srv.Close)
	c := s3.NewFromConfig(testutil.AWSConfig(srv.URL), func(o *s3.Options) {
		o.UsePathStyle = true
		o.HTTPClient = &http.Client{Timeout: 30 * time.Second}
		// The SDK's standard retries (3 attempts), with short waits.
		o.Retryer = retry.NewStandard(func(so *retry.StandardOptions) { so.MaxBackoff = 10 * time.Millisecond })
	})
	return g, c
}

func (g *s3Gate) set(mode string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.mode, g.puts, g.dels = mode, 0, 0
}

func (g *s3Gate) seen() (puts, dels int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.puts, g.dels
}

func (g *s3Gate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	mode := g.mode
	segPut := r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/segments/")
	if segPut {
		g.puts++
	}
	if r.Method == http.MethodDelete && strings.Contains(r.URL.Path, "/segments/") {
		g.dels++
	}
	g.mu.Unlock()
	if !segPut || mode == "" {
		g.rp.ServeHTTP(w, r)
		return
	}
	switch mode {
	case "deny":
		s3Error(w, http.StatusForbidden, "AccessDenied", "Access Denied")
	case "fail":
		s3Error(w, http.StatusInternalServerError, "InternalError", "We encountered an internal error. Please try again.")
	case "store-then-fail":
		g.rp.ServeHTTP(httptest.NewRecorder(), r)
		s3Error(w, http.StatusInternalServerError, "InternalError", "We encountered an internal error. Please try again.")
	}
}

func s3Error(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	w.Write([]byte(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>` + code + `</Code><Message>` + msg +
		`</Message><RequestId>test</RequestId></Error>`))
}

// segmentObjects lists the keys under a store's segments/ prefix.
func segmentObjects(t *testing.T, c *s3.Client, bucket, prefix string) []string {
	t.Helper()
	return testutil.Keys(t, c, bucket, prefix+"/segments/")
}

// TestS3RefusedPutsAreNotStored: when S3 refuses a segment (AccessDenied, as
// for a bucket policy that denies PutObject on the prefix), fails it past the
// SDK's retries (500), or stores it and then answers 500 (the outcome a
// client cannot tell from a failure), Put returns the error, no segment
// object is left and nothing is listed. Once S3 accepts again the same
// store writes normally.
func TestS3RefusedPutsAreNotStored(t *testing.T) {
	ep := testutil.Moto(t)
	direct := testutil.S3(ep)
	tests := []struct {
		mode     string
		wantErr  string
		wantPuts int // attempts the SDK made
		wantDels int // clean-ups: only when the outcome is open (5xx)
	}{
		{"deny", "AccessDenied", 1, 0},
		{"fail", "InternalError", 3, 1},
		{"store-then-fail", "InternalError", 3, 1},
	}
	for _, tc := range tests {
		t.Run(tc.mode, func(t *testing.T) {
			ctx := context.Background()
			gate, c := newS3Gate(t, ep)
			bucket := testutil.Bucket(t, direct)
			s := open(t, "s3://"+bucket+"/dl", Options{S3: c})
			if err := s.Put(ctx, batchOf(1, 2)...); err != nil {
				t.Fatal(err)
			}
			gate.set(tc.mode)
			err := s.Put(ctx, batchOf(10, 3)...)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Put = %v, want an error with %s", err, tc.wantErr)
			}
			if puts, dels := gate.seen(); puts != tc.wantPuts || dels != tc.wantDels {
				t.Errorf("%d segment PUTs and %d DELETEs, want %d and %d", puts, dels, tc.wantPuts, tc.wantDels)
			}
			if keys := segmentObjects(t, direct, bucket, "dl"); len(keys) != 1 {
				t.Errorf("segment objects %v, want only the first one", keys)
			}
			if got := listedLines(t, open(t, "s3://"+bucket+"/dl", Options{S3: direct})); !slices.Equal(got, []int64{1, 2}) {
				t.Fatalf("listed %v, want [1 2]", got)
			}
			gate.set("")
			if err := s.Put(ctx, batchOf(20, 1)...); err != nil {
				t.Fatalf("Put once S3 accepts again: %v", err)
			}
			if got := listedLines(t, s); !slices.Equal(got, []int64{1, 2, 20}) {
				t.Fatalf("listed %v, want [1 2 20]", got)
			}
		})
	}
}

// TestS3MissingBucket: a store whose bucket does not exist fails every Put
// with the reason; once the bucket is there, it writes.
func TestS3MissingBucket(t *testing.T) {
	ctx := context.Background()
	c := testutil.S3(testutil.Moto(t))
	bucket := "missing-" + strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-")) + time.Now().Format("150405.000000000")
	bucket = strings.ReplaceAll(bucket, ".", "-")
	s := open(t, "s3://"+bucket+"/dl", Options{S3: c})
	if err := s.Put(ctx, batchOf(1, 2)...); err == nil || !strings.Contains(err.Error(), "NoSuchBucket") {
		t.Fatalf("Put = %v, want NoSuchBucket", err)
	}
	if _, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
		t.Fatal(err)
	}
	if keys := segmentObjects(t, c, bucket, "dl"); len(keys) != 0 {
		t.Fatalf("segments %v", keys)
	}
	if err := s.Put(ctx, batchOf(3, 1)...); err != nil {
		t.Fatal(err)
	}
	if got := listedLines(t, s); !slices.Equal(got, []int64{3}) {
		t.Fatalf("listed %v, want [3]", got)
	}
}
