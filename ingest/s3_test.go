package ingest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/fhirload/fhirload/internal/testutil"
)

func put(t testing.TB, c *s3.Client, bucket, key string, body []byte) {
	t.Helper()
	_, err := c.PutObject(context.Background(), &s3.PutObjectInput{
		Bucket: aws.String(bucket), Key: aws.String(key), Body: bytes.NewReader(body),
	})
	if err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
}

// readObject opens o and returns its lines joined by "\n".
func readObject(t testing.TB, o Object) (string, error) {
	t.Helper()
	rc, err := o.Open(context.Background())
	if err != nil {
		return "", err
	}
	defer rc.Close()
	lines, err := readAll(t, rc, LineOptions{})
	var sb strings.Builder
	for _, l := range lines {
		sb.Write(l.Bytes)
		sb.WriteByte('\n')
	}
	return sb.String(), err
}

func TestParseS3URI(t *testing.T) {
	tests := []struct {
		uri, bucket, prefix string
		ok                  bool
	}{
		{"s3://b/p/q", "b", "p/q", true},
		{"s3://b", "b", "", true},
		{"s3://b/", "b", "", true},
		{"s3://b/a b+c%20", "b", "a b+c%20", true},
		{"s3:///p", "", "", false},
		{"http://b/p", "", "", false},
		{"b/p", "", "", false},
	}
	for _, tt := range tests {
		b, p, err := ParseS3URI(tt.uri)
		if (err == nil) != tt.ok || b != tt.bucket || p != tt.prefix {
			t.Errorf("ParseS3URI(%q) = %q, %q, %v", tt.uri, b, p, err)
		}
	}
}

// hostileKeys are object keys that URL encoding gets wrong easily.
var hostileKeys = []string{
	"in/a b.ndjson",
	"in/a+b.ndjson",
	"in/100%.ndjson",
	"in/%20literal.ndjson",
	"in/ünïcødé 患者.ndjson",
	"in/semi;colon=eq&amp?.ndjson.gz",
}

func TestS3ListAndOpen(t *testing.T) {
	ep := testutil.Moto(t)
	c := testutil.S3(ep)
	bucket := testutil.Bucket(t, c)
	want := map[string]string{}
	for i, k := range hostileKeys {
		body := fmt.Sprintf("{\"n\":%d}\n{\"k\":%q}\n", i, k)
		data := []byte(body)
		if strings.HasSuffix(k, ".gz") {
			data = gz(t, body)
		}
		put(t, c, bucket, k, data)
		want["s3://"+bucket+"/"+k] = body
	}
	for i := range 7 {
		k := fmt.Sprintf("in/many/%02d.ndjson", i)
		body := fmt.Sprintf("{\"i\":%d}\n", i)
		put(t, c, bucket, k, []byte(body))
		want["s3://"+bucket+"/"+k] = body
	}
	put(t, c, bucket, "in/skip.txt", []byte("x\n"))
	put(t, c, bucket, "in/folder/", nil)
	put(t, c, bucket, "other/x.ndjson", []byte("x\n"))

	src := &S3Source{Client: c, PageSize: 2} // forces several pages
	var got []Object
	err := src.List(context.Background(), "s3://"+bucket+"/in/", func(o Object) error {
		got = append(got, o)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("listed %d objects, want %d", len(got), len(want))
	}
	for _, o := range got {
		body, err := readObject(t, o)
		if err != nil {
			t.Fatalf("%s: %v", o.URI, err)
		}
		if body != want[o.URI] {
			t.Errorf("%s = %q, want %q", o.URI, body, want[o.URI])
		}
		if o.ETag == "" || strings.Contains(o.ETag, `"`) || o.Size <= 0 {
			t.Errorf("%s: etag %q size %d", o.URI, o.ETag, o.Size)
		}
		if o.Key() != o.URI+"@"+o.ETag {
			t.Errorf("Key() = %q", o.Key())
		}
	}

	t.Run("listing stops at fn error", func(t *testing.T) {
		stop := errors.New("stop")
		n := 0
		err := src.List(context.Background(), "s3://"+bucket+"/in/", func(Object) error { n++; return stop })
		if !errors.Is(err, stop) || n != 1 {
			t.Fatalf("err %v after %d objects", err, n)
		}
	})
	t.Run("missing bucket is an error", func(t *testing.T) {
		err := src.List(context.Background(), "s3://no-such-bucket-x/", func(Object) error { return nil })
		if err == nil {
			t.Fatal("no error")
		}
	})
}

func TestS3MissingObject(t *testing.T) {
	ep := testutil.Moto(t)
	c := testutil.S3(ep)
	bucket := testutil.Bucket(t, c)
	src := &S3Source{Client: c}
	put(t, c, bucket, "v.ndjson", []byte("v1\n"))
	var listed Object
	if err := src.List(context.Background(), "s3://"+bucket+"/", func(o Object) error { listed = o; return nil }); err != nil {
		t.Fatal(err)
	}
	put(t, c, bucket, "v.ndjson", []byte("version 2\n")) // overwritten: listed ETag is gone

	tests := []struct {
		name string
		obj  Object
	}{
		{"no such key", src.Object(bucket, "absent.ndjson", "", -1)},
		{"no such key with etag", src.Object(bucket, "absent.ndjson", "abc", 3)},
		{"overwritten since listed", listed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := readObject(t, tt.obj)
			if !errors.Is(err, ErrMissingObject) {
				t.Fatalf("err = %v, want ErrMissingObject", err)
			}
		})
	}
}

// breakingTransport cuts the body of the first `breaks` successful GetObject
// responses after cut bytes, and records every GetObject's Range header.
type breakingTransport struct {
	mu     sync.Mutex
	breaks int   // responses left to break
	cut    int64 // bytes delivered before the break
	ranges []string
}

func (b *breakingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil || req.Method != http.MethodGet || strings.Contains(req.URL.RawQuery, "list-type") {
		return resp, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.ranges = append(b.ranges, req.Header.Get("Range"))
	if b.breaks > 0 && resp.StatusCode/100 == 2 {
		b.breaks--
		resp.Body = &breakingBody{rc: resp.Body, left: b.cut}
	}
	return resp, nil
}

type breakingBody struct {
	rc   io.ReadCloser
	left int64
}

func (b *breakingBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, errors.New("connection reset by test")
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	return n, err
}

func (b *breakingBody) Close() error { return b.rc.Close() }

func TestS3RangeResume(t *testing.T) {
	ep := testutil.Moto(t)
	bucket := testutil.Bucket(t, testutil.S3(ep))
	var plain strings.Builder
	for i := range 2000 {
		fmt.Fprintf(&plain, "{\"resourceType\":\"Observation\",\"id\":\"obs-%04d\"}\n", i)
	}
	put(t, testutil.S3(ep), bucket, "plain.ndjson", []byte(plain.String()))
	put(t, testutil.S3(ep), bucket, "zipped.ndjson.gz", gz(t, plain.String()))

	tests := []struct {
		key    string
		breaks int
		cut    int64
	}{
		{"plain.ndjson", 1, 10_000},
		{"plain.ndjson", 3, 5_000}, // breaks again after each resume
		{"zipped.ndjson.gz", 1, 1_000},
		{"plain.ndjson", 1, 0}, // breaks before the first byte
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%dx%d", tt.key, tt.breaks, tt.cut), func(t *testing.T) {
			bt := &breakingTransport{breaks: tt.breaks, cut: tt.cut}
			c := s3.NewFromConfig(testutil.AWSConfig(ep), func(o *s3.Options) {
				o.UsePathStyle = true
				o.HTTPClient = &http.Client{Transport: bt}
			})
			src := &S3Source{Client: c}
			var obj Object
			err := src.List(context.Background(), "s3://"+bucket+"/"+tt.key, func(o Object) error { obj = o; return nil })
			if err != nil {
				t.Fatal(err)
			}
			got, err := readObject(t, obj)
			if err != nil {
				t.Fatal(err)
			}
			if got != plain.String() {
				t.Fatalf("lines differ after resume: got %d bytes, want %d", len(got), plain.Len())
			}
			bt.mu.Lock()
			defer bt.mu.Unlock()
			if len(bt.ranges) != tt.breaks+1 || bt.ranges[0] != "" {
				t.Fatalf("GetObject ranges = %q, want a plain GET then %d range requests", bt.ranges, tt.breaks)
			}
			for i, r := range bt.ranges[1:] {
				want := fmt.Sprintf("bytes=%d-", int64(i+1)*tt.cut)
				if tt.cut == 0 {
					want = "" // nothing consumed: a plain GET again
				}
				if r != want {
					t.Errorf("resume %d: Range %q, want %q", i+1, r, want)
				}
			}
		})
	}
}

func TestS3ResumeGivesUp(t *testing.T) {
	ep := testutil.Moto(t)
	bucket := testutil.Bucket(t, testutil.S3(ep))
	put(t, testutil.S3(ep), bucket, "x.ndjson", []byte("a\nb\nc\n"))
	bt := &breakingTransport{breaks: 100, cut: 0}
	c := s3.NewFromConfig(testutil.AWSConfig(ep), func(o *s3.Options) {
		o.UsePathStyle = true
		o.HTTPClient = &http.Client{Transport: bt}
	})
	src := &S3Source{Client: c}
	rc, err := src.Object(bucket, "x.ndjson", "", -1).Open(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	_, err = io.ReadAll(rc)
	if err == nil || !strings.Contains(err.Error(), "connection reset by test") {
		t.Fatalf("err = %v, want the read error after bounded resumes", err)
	}
	bt.mu.Lock()
	defer bt.mu.Unlock()
	if len(bt.ranges) != maxResumes+1 {
		t.Fatalf("%d GetObject calls, want %d", len(bt.ranges), maxResumes+1)
	}
}
