package fhirstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"
)

const (
	testKeyID  = "AKIDTESTFULL"
	testSecret = "secret-full-0123456789"
	testRegion = "us-east-1"
)

// Keys with narrower scopes than the full-scope test key.
var (
	obsKey      = Key{AccessKeyID: "AKIDOBS", SecretAccessKey: "secret-obs", Scopes: []string{"system/Observation.*"}}
	readKey     = Key{AccessKeyID: "AKIDREAD", SecretAccessKey: "secret-read", Scopes: []string{"system/*.read"}}
	patWriteKey = Key{AccessKeyID: "AKIDPATW", SecretAccessKey: "secret-patw", Scopes: []string{"system/Patient.write"}}
	v2Key       = Key{AccessKeyID: "AKIDV2", SecretAccessKey: "secret-v2", Scopes: []string{"system/Patient.rs", "system/Observation.cu"}}
)

// testEnv is a Server on an httptest listener with a signing client.
type testEnv struct {
	t    testing.TB
	srv  *Server
	ts   *httptest.Server
	base string // absolute base URL, ending in /
	dir  string
	// clock is the server's clock; requests are signed at clock().
	clock func() time.Time
}

// newEnv opens a Server in a temporary directory. opts.Dir, Keys and the
// clock are filled in unless set.
func newEnv(t testing.TB, opts Options) *testEnv {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	if opts.Keys == nil && opts.Auth != "none" {
		opts.Keys = []Key{{AccessKeyID: testKeyID, SecretAccessKey: testSecret, Scopes: []string{"system/*.*"}}, obsKey, readKey, patWriteKey, v2Key}
	}
	if opts.now == nil {
		opts.now = time.Now
	}
	srv, err := Open(context.Background(), opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(func() {
		ts.Close()
		if err := srv.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	ts.Client().Transport.(*http.Transport).MaxIdleConnsPerHost = 16
	return &testEnv{t: t, srv: srv, ts: ts, base: ts.URL + srv.BasePath(), dir: opts.Dir, clock: opts.now}
}

// resp is a response, read whole.
type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r *resp) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("response is not JSON (%d): %v: %s", r.status, err, r.body)
	}
	return m
}

// issueCode returns the first issue's code of an OperationOutcome body.
func (r *resp) issueCode(t *testing.T) string {
	t.Helper()
	m := r.json(t)
	if m["resourceType"] != "OperationOutcome" {
		t.Fatalf("want OperationOutcome, got %s", r.body)
	}
	return m["issue"].([]any)[0].(map[string]any)["code"].(string)
}

// reqOpt adjusts a request before (pre) or after (post) signing.
type reqOpt struct {
	pre, post func(*http.Request)
	key       *Key
	at        time.Time
	token     string
	unsigned  bool
}

// do sends a request signed with the full-scope test key (or o.key).
func (e *testEnv) do(method, path string, body []byte, opts ...reqOpt) *resp {
	e.t.Helper()
	url := path
	if !strings.HasPrefix(path, "http") {
		url = e.base + path
	}
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", contentTypeFHIR)
	}
	var o reqOpt
	for _, x := range opts {
		if x.pre != nil {
			o.pre = x.pre
		}
		if x.post != nil {
			o.post = x.post
		}
		if x.key != nil {
			o.key = x.key
		}
		if !x.at.IsZero() {
			o.at = x.at
		}
		if x.token != "" {
			o.token = x.token
		}
		o.unsigned = o.unsigned || x.unsigned
	}
	if o.pre != nil {
		o.pre(req)
	}
	if !o.unsigned {
		k := Key{AccessKeyID: testKeyID, SecretAccessKey: testSecret}
		if o.key != nil {
			k = *o.key
		}
		at := o.at
		if at.IsZero() {
			at = e.clock()
		}
		signRequest(req, body, k.AccessKeyID, k.SecretAccessKey, testRegion, o.token, at)
	}
	if o.post != nil {
		o.post(req)
	}
	res, err := e.ts.Client().Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return &resp{status: res.StatusCode, header: res.Header, body: b}
}

// mustStatus fails the test unless r has status want.
func mustStatus(t *testing.T, r *resp, want int, what string) {
	t.Helper()
	if r.status != want {
		t.Fatalf("%s: status %d, want %d: %s", what, r.status, want, r.body)
	}
}

// signRequest signs r for healthlake in region with the given key. It is the
// test-side and tooling-side counterpart of verify.
func signRequest(r *http.Request, body []byte, accessKey, secret, region, sessionToken string, t time.Time) {
	amzDate := t.UTC().Format(amzDateFormat)
	r.Header.Set("X-Amz-Date", amzDate)
	if sessionToken != "" {
		r.Header.Set("X-Amz-Security-Token", sessionToken)
	}
	sum := sha256.Sum256(body)
	payloadHash := hex.EncodeToString(sum[:])
	names := []string{"host", "x-amz-date"}
	if r.Header.Get("Content-Type") != "" {
		names = append(names, "content-type")
	}
	if sessionToken != "" {
		names = append(names, "x-amz-security-token")
	}
	slices.Sort(names)
	host := r.Host
	if host == "" {
		host = r.URL.Host
	}
	sr := &http.Request{Host: host, Header: r.Header}
	headers := canonicalHeaders(sr, names)
	creq := r.Method + "\n" + awsEscape(r.URL.EscapedPath(), true) + "\n" + canonicalQueryEncoded(r.URL.RawQuery) + "\n" +
		headers + "\n" + strings.Join(names, ";") + "\n" + payloadHash
	crSum := sha256.Sum256([]byte(creq))
	scope := amzDate[:8] + "/" + region + "/" + sigv4Service + "/aws4_request"
	sts := sigv4Algorithm + "\n" + amzDate + "\n" + scope + "\n" + hex.EncodeToString(crSum[:])
	sig := hmacSHA256(deriveSigningKey(secret, amzDate[:8], region, sigv4Service), sts)
	r.Header.Set("Authorization", sigv4Algorithm+" Credential="+accessKey+"/"+scope+", SignedHeaders="+
		strings.Join(names, ";")+", Signature="+hex.EncodeToString(sig))
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func nopCloser(b []byte) io.ReadCloser { return io.NopCloser(bytes.NewReader(b)) }

// verify checks r, whose body is body, the way the server does in two steps
// (begin from the headers, finish with the body's hash).
func (v *verifier) verify(r *http.Request, body []byte) (grants, *fhirError) {
	c, e := v.begin(r)
	if e != nil {
		return nil, e
	}
	sum := sha256.Sum256(body)
	return c.finish(sum[:])
}

// indexKey is the idx.k of the main rows of a search parameter of one
// part.
func indexKey(typ, code string) int64 {
	tp := searchCatalog().types[typ]
	p := tp.byCode[code]
	if p == nil || len(p.parts) != 1 {
		panic("not a parameter of one part: " + typ + "." + code)
	}
	return tp.key(p.parts[0].atom, subMain)
}

// rowString shows an index row of a resource of type typ as
// code[:sub]=a|b.
func rowString(typ string, r indexRow) string {
	tp := searchCatalog().types[typ]
	slot, sub := int(r.k&0xffff)/subsPerSP, int(r.k&0xffff)%subsPerSP
	name := tp.atoms[slot].name
	switch sub {
	case subText:
		name += ":text"
	case subExtra:
		name += ":extra"
	}
	a, b := r.values()
	return fmt.Sprintf("%s=%v|%v", name, a, b)
}
