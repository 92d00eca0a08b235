package fhirstore

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestSigV4Refusals(t *testing.T) {
	clock := &fakeClock{t: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)}
	e := newEnv(t, Options{now: clock.now})
	mustStatus(t, e.do("PUT", "Patient/p1", []byte(patientJSON)), http.StatusCreated, "seed")
	body := []byte(patientJSON)
	setAuth := func(v string) reqOpt { return reqOpt{post: func(r *http.Request) { r.Header.Set("Authorization", v) }} }
	for _, c := range []struct {
		name   string
		method string
		opt    reqOpt
		status int
		text   string
	}{
		{"missing Authorization", "GET", reqOpt{unsigned: true}, 401, "Missing Authentication Token"},
		{"other scheme", "GET", setAuth("Bearer abc"), 401, "Malformed Authorization"},
		{"malformed credential", "GET", setAuth("AWS4-HMAC-SHA256 Credential=AKID/20250301/us-east-1/healthlake, SignedHeaders=host, Signature=00"), 401, "Malformed Authorization"},
		{"malformed signature", "GET", reqOpt{post: func(r *http.Request) {
			r.Header.Set("Authorization", r.Header.Get("Authorization")[:len(r.Header.Get("Authorization"))-2]+"zz")
		}}, 401, "Malformed Authorization"},
		{"unknown key", "GET", reqOpt{key: &Key{AccessKeyID: "AKIDNOBODY", SecretAccessKey: testSecret}}, 401, "unknown access key"},
		{"wrong secret", "GET", reqOpt{key: &Key{AccessKeyID: testKeyID, SecretAccessKey: "wrong"}}, 401, "signature we calculated does not match"},
		{"signed path changed", "GET", reqOpt{post: func(r *http.Request) { r.URL.Path = "/datastore/local/r4/Patient/p2" }}, 401, "does not match"},
		{"signed query changed", "GET", reqOpt{post: func(r *http.Request) { r.URL.RawQuery = "x=1" }}, 401, "does not match"},
		{"body changed after signing", "PUT", reqOpt{post: func(r *http.Request) {
			b := bytes.Replace(body, []byte("male"), []byte("female"), 1)
			r.Body, r.ContentLength = nopCloser(b), int64(len(b))
		}}, 401, "does not match"},
		{"x-amz-content-sha256 mismatch", "PUT", reqOpt{post: func(r *http.Request) { r.Header.Set("X-Amz-Content-Sha256", strings.Repeat("0", 64)) }}, 401, "x-amz-content-sha256"},
		{"clock skew past", "GET", reqOpt{at: clock.now().Add(-6 * time.Minute)}, 401, "more than 5 minutes"},
		{"clock skew future", "GET", reqOpt{at: clock.now().Add(6 * time.Minute)}, 401, "more than 5 minutes"},
		{"missing X-Amz-Date", "GET", reqOpt{post: func(r *http.Request) { r.Header.Del("X-Amz-Date") }}, 401, "X-Amz-Date"},
		{"wrong region", "GET", reqOpt{post: func(r *http.Request) {
			r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), "/us-east-1/", "/eu-west-1/", 1))
		}}, 401, "region 'us-east-1'"},
		{"wrong service", "GET", reqOpt{post: func(r *http.Request) {
			r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), "/healthlake/", "/s3/", 1))
		}}, 401, "service 'healthlake'"},
		{"unsigned session token", "GET", reqOpt{post: func(r *http.Request) { r.Header.Set("X-Amz-Security-Token", "tok") }}, 401, "must be a signed header"},
		{"session token changed", "GET", reqOpt{token: "tok", post: func(r *http.Request) { r.Header.Set("X-Amz-Security-Token", "other") }}, 401, "does not match"},
		{"read-only key writes", "PUT", reqOpt{key: &readKey}, 403, "no scope for Patient update"},
		{"Observation key reads Patient", "GET", reqOpt{key: &obsKey}, 403, "no scope for Patient read"},
		{"Patient-write key reads", "GET", reqOpt{key: &patWriteKey}, 403, "no scope for Patient read"},
		{"v2 rs key deletes", "DELETE", reqOpt{key: &v2Key}, 403, "no scope for Patient delete"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var b []byte
			if c.method == "PUT" {
				b = body
			}
			r := e.do(c.method, "Patient/p1", b, c.opt)
			mustStatus(t, r, c.status, c.name)
			var m struct{ Message string }
			if err := json.Unmarshal(r.body, &m); err != nil || !strings.Contains(m.Message, c.text) {
				t.Errorf("message lacks %q: %s", c.text, r.body)
			}
		})
	}
	// Accepted: scopes that cover the interaction, a signed session token,
	// 4 minutes of skew, and x-amz-content-sha256 when it matches.
	for _, c := range []struct {
		name   string
		method string
		path   string
		opt    reqOpt
		status int
	}{
		{"read key reads", "GET", "Patient/p1", reqOpt{key: &readKey}, 200},
		{"read key searches", "GET", "Patient?gender=male", reqOpt{key: &readKey}, 200},
		{"Patient-write key writes", "PUT", "Patient/p1", reqOpt{key: &patWriteKey}, 200},
		{"v2 rs key searches", "GET", "Patient?gender=male", reqOpt{key: &v2Key}, 200},
		{"session token", "GET", "Patient/p1", reqOpt{token: "FwoGZXIvYXdzEJr//////////wEaDH"}, 200},
		{"skew within 5 minutes", "GET", "Patient/p1", reqOpt{at: clock.now().Add(-4 * time.Minute)}, 200},
		{"metadata needs no scope", "GET", "metadata", reqOpt{key: &obsKey}, 200},
		{"matching content hash", "PUT", "Patient/p1", reqOpt{pre: func(r *http.Request) {
			r.Header.Set("X-Amz-Content-Sha256", sha256Hex(body))
		}}, 200},
	} {
		t.Run(c.name, func(t *testing.T) {
			var b []byte
			if c.method == "PUT" {
				b = body
			}
			mustStatus(t, e.do(c.method, c.path, b, c.opt), c.status, c.name)
		})
	}
}

// Without keys, the key pair in the environment is accepted with all scopes.
func TestSigV4EnvironmentKey(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDENV")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
	e := newEnv(t, Options{Keys: []Key{}})
	env := Key{AccessKeyID: "AKIDENV", SecretAccessKey: "env-secret"}
	mustStatus(t, e.do("PUT", "Patient/p1", []byte(patientJSON), reqOpt{key: &env}), http.StatusCreated, "env key writes")
	mustStatus(t, e.do("GET", "Patient/p1", nil), http.StatusUnauthorized, "test key is not configured")

	t.Setenv("AWS_ACCESS_KEY_ID", "")
	if _, err := Open(t.Context(), Options{Dir: t.TempDir()}); err == nil {
		t.Error("Open without keys or environment succeeded")
	}
}

// Requests signed by botocore (an independent SigV4 implementation) are
// accepted: reads, searches with encoded queries, writes, Bundles, and a
// session token; a wrong secret is refused.
func TestSigV4Botocore(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Fatal("python3 with botocore is required for the independent SigV4 check")
	}
	e := newEnv(t, Options{})
	bundle := `{"resourceType":"Bundle","type":"batch","entry":[{"resource":{"resourceType":"Patient","id":"b1"},"request":{"method":"PUT","url":"Patient/b1"}}]}`
	reqs := []map[string]any{
		{"method": "PUT", "path": "Patient/p1", "body": patientJSON},
		{"method": "GET", "path": "Patient/p1"},
		{"method": "GET", "path": "Patient?identifier=urn%3Atest%3Amrn%7CMRN-1&_count=5"},
		{"method": "GET", "path": "Patient?family=lem&gender=male"},
		{"method": "POST", "path": "", "body": bundle},
		{"method": "GET", "path": "metadata", "session_token": "IQoJb3JpZ2luX2VjEJr//////////token=="},
	}
	want := []int{201, 200, 200, 200, 200, 200}
	run := func(secret string) []int {
		var in bytes.Buffer
		for _, r := range reqs {
			b, _ := json.Marshal(r)
			in.Write(append(b, '\n'))
		}
		cmd := exec.CommandContext(t.Context(), "python3", "testdata/botocore_client.py", e.base, testRegion)
		cmd.Env = append(cmd.Environ(), "AWS_ACCESS_KEY_ID="+testKeyID, "AWS_SECRET_ACCESS_KEY="+secret)
		cmd.Stdin = &in
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("botocore client: %v: %s", err, stderr.String())
		}
		var got []int
		sc := bufio.NewScanner(bytes.NewReader(out))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var r struct {
				Status int
				Body   string
			}
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				t.Fatal(err)
			}
			if r.Status >= 400 {
				t.Logf("botocore request %d: %d %s", len(got), r.Status, r.Body)
			}
			got = append(got, r.Status)
		}
		return got
	}
	got := run(testSecret)
	if len(got) != len(want) {
		t.Fatalf("got %d answers, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("request %d (%s %s): status %d, want %d", i, reqs[i]["method"], reqs[i]["path"], got[i], want[i])
		}
	}
	for i, s := range run("not-the-secret") {
		if s != 401 {
			t.Errorf("wrong secret, request %d: status %d, want 401", i, s)
		}
	}
}
