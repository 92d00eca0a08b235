package fhirstore

import (
	"bytes"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSignatureComparisonIsConstantTime inspects the package source: the
// SigV4 signature is compared with hmac.Equal (constant time), and never
// with ==, != or bytes.Equal/Compare, which return at the first difference
// and leak how much of a forged signature was right.
func TestSignatureComparisonIsConstantTime(t *testing.T) {
	fset := token.NewFileSet()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	mentionsSignature := func(n ast.Node) bool {
		found := false
		ast.Inspect(n, func(n ast.Node) bool {
			switch x := n.(type) {
			case *ast.Ident:
				if strings.Contains(strings.ToLower(x.Name), "signature") || x.Name == "sig" {
					found = true
				}
			case *ast.SelectorExpr:
				if strings.Contains(strings.ToLower(x.Sel.Name), "signature") {
					found = true
				}
			}
			return true
		})
		return found
	}
	constantTime := 0
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			switch x := n.(type) {
			case *ast.BinaryExpr:
				if (x.Op == token.EQL || x.Op == token.NEQ) && (mentionsSignature(x.X) || mentionsSignature(x.Y)) {
					// Comparing the parsed length with a constant is fine; content is not.
					if !isLenCall(x.X) && !isLenCall(x.Y) && !isNilOrEmpty(x.X) && !isNilOrEmpty(x.Y) {
						t.Errorf("%s: signature compared with %s", fset.Position(x.Pos()), x.Op)
					}
				}
			case *ast.CallExpr:
				sel, ok := x.Fun.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				pkg, _ := sel.X.(*ast.Ident)
				if pkg == nil {
					return true
				}
				call := pkg.Name + "." + sel.Sel.Name
				anySig := false
				for _, a := range x.Args {
					anySig = anySig || mentionsSignature(a)
				}
				switch call {
				case "bytes.Equal", "bytes.Compare", "strings.EqualFold", "strings.Compare", "reflect.DeepEqual", "slices.Equal":
					if anySig {
						t.Errorf("%s: signature compared with %s", fset.Position(x.Pos()), call)
					}
				case "hmac.Equal", "subtle.ConstantTimeCompare":
					if anySig {
						constantTime++
					}
				}
			}
			return true
		})
	}
	if constantTime == 0 {
		t.Fatal("no constant-time comparison of the signature found (hmac.Equal or subtle.ConstantTimeCompare)")
	}
}

func isLenCall(e ast.Expr) bool {
	c, ok := e.(*ast.CallExpr)
	if !ok {
		return false
	}
	id, ok := c.Fun.(*ast.Ident)
	return ok && id.Name == "len"
}

func isNilOrEmpty(e ast.Expr) bool {
	if id, ok := e.(*ast.Ident); ok && id.Name == "nil" {
		return true
	}
	if l, ok := e.(*ast.BasicLit); ok && l.Value == `""` {
		return true
	}
	return false
}

// TestScopesOnEveryInteraction: a key scoped to Observations gets 403 for
// every interaction on Patients — directly and as an entry of a batch or
// transaction Bundle — and nothing is written.
func TestScopesOnEveryInteraction(t *testing.T) {
	e := newEnv(t, Options{})
	mustStatus(t, e.do("PUT", "Patient/p1", []byte(patientJSON)), http.StatusCreated, "seed")
	p2 := strings.Replace(patientJSON, `"id":"p1"`, `"id":"p2"`, 1)
	form := func(r *http.Request) { r.Header.Set("Content-Type", "application/x-www-form-urlencoded") }
	for _, c := range []struct {
		method, path, body string
		opt                reqOpt
	}{
		{"GET", "Patient/p1", "", reqOpt{}},
		{"HEAD", "Patient/p1", "", reqOpt{}},
		{"GET", "Patient/p1/_history/1", "", reqOpt{}},
		{"GET", "Patient/p1/_history", "", reqOpt{}},
		{"GET", "Patient?gender=male", "", reqOpt{}},
		{"GET", "Patient/_search?gender=male", "", reqOpt{}},
		{"POST", "Patient/_search", "gender=male", reqOpt{pre: form}},
		{"POST", "Patient", p2, reqOpt{}},
		{"PUT", "Patient/p2", p2, reqOpt{}},
		{"PUT", "Patient/p1", patientJSON, reqOpt{}},
		{"DELETE", "Patient/p1", "", reqOpt{}},
	} {
		var b []byte
		if c.body != "" {
			b = []byte(c.body)
		}
		opt := c.opt
		opt.key = &obsKey
		r := e.do(c.method, c.path, b, opt)
		if r.status != http.StatusForbidden {
			t.Errorf("%s %s with an Observation-only key: %d, want 403: %s", c.method, c.path, r.status, r.body)
		}
	}
	entries := []string{
		`{"request":{"method":"GET","url":"Patient/p1"}}`,
		`{"request":{"method":"GET","url":"Patient/p1/_history/1"}}`,
		`{"request":{"method":"GET","url":"Patient?gender=male"}}`,
		`{"resource":` + p2 + `,"request":{"method":"POST","url":"Patient"}}`,
		`{"resource":` + p2 + `,"request":{"method":"PUT","url":"Patient/p2"}}`,
		`{"request":{"method":"DELETE","url":"Patient/p1"}}`,
	}
	batch := `{"resourceType":"Bundle","type":"batch","entry":[` + strings.Join(entries, ",") + `]}`
	r := e.do("POST", "", []byte(batch), reqOpt{key: &obsKey})
	mustStatus(t, r, http.StatusOK, "batch")
	b := parseBundleResp(t, r)
	if len(b.Entry) != len(entries) {
		t.Fatalf("%d entries answered, want %d", len(b.Entry), len(entries))
	}
	for i, en := range b.Entry {
		if !strings.HasPrefix(en.Response.Status, "403") {
			t.Errorf("batch entry %d (%s): %s, want 403", i, entries[i], en.Response.Status)
		}
	}
	for _, en := range entries[3:] {
		tx := `{"resourceType":"Bundle","type":"transaction","entry":[` + en + `]}`
		mustStatus(t, e.do("POST", "", []byte(tx), reqOpt{key: &obsKey}), http.StatusForbidden, "transaction "+en)
	}
	// Nothing was written or deleted.
	mustStatus(t, e.do("GET", "Patient/p2", nil), http.StatusNotFound, "p2 not created")
	r = e.do("GET", "Patient/p1", nil)
	mustStatus(t, r, http.StatusOK, "p1 kept")
	if v := r.json(t)["meta"].(map[string]any)["versionId"]; v != "1" {
		t.Errorf("p1 is at version %v, want 1", v)
	}
}

// TestBodyLimits: bodies past MaxBodyBytes get 413 whether they announce
// their length or are chunked, for resources and Bundles alike.
func TestBodyLimits(t *testing.T) {
	const limit = 64 << 10
	e := newEnv(t, Options{MaxBodyBytes: limit})
	big := `{"resourceType":"Patient","id":"p1","name":[{"family":"` + strings.Repeat("a", limit) + `"}]}`
	bundle := `{"resourceType":"Bundle","type":"batch","entry":[{"resource":` + big + `,"request":{"method":"PUT","url":"Patient/p1"}}]}`
	chunked := func(r *http.Request) { r.ContentLength = -1; r.Body = io.NopCloser(strings.NewReader(big)) }
	for _, c := range []struct {
		name, method, path, body string
		opt                      reqOpt
	}{
		{"resource", "PUT", "Patient/p1", big, reqOpt{}},
		{"bundle", "POST", "", bundle, reqOpt{}},
		{"chunked resource", "PUT", "Patient/p1", big, reqOpt{post: chunked}},
		{"unsigned", "PUT", "Patient/p1", big, reqOpt{unsigned: true}},
	} {
		r := e.do(c.method, c.path, []byte(c.body), c.opt)
		if r.status != http.StatusRequestEntityTooLarge {
			t.Errorf("%s: status %d, want 413: %.200s", c.name, r.status, r.body)
		}
	}
	mustStatus(t, e.do("GET", "Patient/p1", nil), http.StatusNotFound, "nothing written")
	mustStatus(t, e.do("PUT", "Patient/p1", []byte(patientJSON)), http.StatusCreated, "a body under the limit")
}

// TestErrorBodiesShowNoInternals sends malformed and hostile requests, and a
// request after the database is closed (an internal failure): every answer
// is an OperationOutcome without SQL, stack traces or file names.
func TestErrorBodiesShowNoInternals(t *testing.T) {
	e := newEnv(t, Options{})
	mustStatus(t, e.do("PUT", "Patient/p1", []byte(patientJSON)), http.StatusCreated, "seed")
	deep := strings.Repeat(`{"a":`, 100000) + "1" + strings.Repeat("}", 100000)
	manyEntries := `{"resourceType":"Bundle","type":"batch","entry":[` +
		strings.TrimSuffix(strings.Repeat(`{"request":{"method":"GET","url":"Patient/p1"}},`, MaxBundleEntries+1), ",") + `]}`
	ct := func(v string) reqOpt {
		return reqOpt{pre: func(r *http.Request) { r.Header.Set("Content-Type", v) }}
	}
	for _, c := range []struct {
		method, path, body string
		opt                reqOpt
	}{
		{"PUT", "Patient/p1", `{"resourceType":"Patient","id":"p1"`, reqOpt{}},
		{"PUT", "Patient/p1", `{"resourceType":"Patient","id":"p1","id":"p2"}`, reqOpt{}},
		{"PUT", "Patient/p1", deep, reqOpt{}},
		{"PUT", "Patient/p1", "\xff\xfe\x00", reqOpt{}},
		{"PUT", "Patient/p1", `[]`, reqOpt{}},
		{"PUT", "Patient/p1", patientJSON, ct("text/plain")},
		{"PUT", "Patient/p1", `{"resourceType":"Observation","id":"p1"}`, reqOpt{}},
		{"PUT", "Patient/" + strings.Repeat("x", 65), patientJSON, reqOpt{}},
		{"PUT", "Patient/p1'--", patientJSON, reqOpt{}},
		{"GET", "Patient/p1/_history/abc", "", reqOpt{}},
		{"GET", "Patient/p1/_history/99999999999999999999999", "", reqOpt{}},
		{"GET", "NotAType/p1", "", reqOpt{}},
		{"GET", "Patient?name=%zz", "", reqOpt{}},
		{"GET", "Patient?_count=abc", "", reqOpt{}},
		{"GET", "Patient?birthdate=ge2015-99-99", "", reqOpt{}},
		{"GET", "Patient?unknown-param=1", "", reqOpt{}},
		{"PATCH", "Patient/p1", `{}`, reqOpt{}},
		{"POST", "", `{"resourceType":"Bundle","type":"history"}`, reqOpt{}},
		{"POST", "", `{"resourceType":"Bundle","type":"batch","entry":[{"request":{"method":"PUT","url":"../../etc/passwd"}}]}`, reqOpt{}},
		{"POST", "", `{"resourceType":"Bundle","type":"batch","entry":[{"request":{"method":"GET","url":"Patient?name=%zz"}}]}`, reqOpt{}},
		{"POST", "", `{"resourceType":"Bundle","type":"transaction","entry":[{"resource":{"resourceType":"Patient"},"request":{"method":"POST","url":"Patient"}},{"fullUrl":"x"}]}`, reqOpt{}},
		{"POST", "", manyEntries, reqOpt{}},
		{"POST", "", deep, reqOpt{}},
	} {
		var b []byte
		if c.body != "" {
			b = []byte(c.body)
		}
		r := e.do(c.method, c.path, b, c.opt)
		if r.status >= 500 {
			t.Errorf("%s %.60s: status %d: %.300s", c.method, c.path, r.status, r.body)
		}
		if len(r.body) > 0 {
			assertNoInternals(t, r.body)
		}
	}

	// An internal failure: the database is closed under the server.
	if err := e.srv.Close(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ method, path, body string }{
		{"GET", "Patient/p1", ""},
		{"GET", "Patient?family=x", ""},
		{"PUT", "Patient/p1", patientJSON},
		{"POST", "", `{"resourceType":"Bundle","type":"batch","entry":[{"request":{"method":"GET","url":"Patient/p1"}}]}`},
	} {
		var b []byte
		if c.body != "" {
			b = []byte(c.body)
		}
		r := e.do(c.method, c.path, b)
		if r.status != http.StatusInternalServerError && !(c.path == "" && r.status == http.StatusOK) {
			t.Errorf("%s %s on a closed database: %d", c.method, c.path, r.status)
		}
		assertNoInternals(t, r.body)
		if bytes.Contains(r.body, []byte("closed")) {
			t.Errorf("%s %s: error text shows the cause: %s", c.method, c.path, r.body)
		}
	}
}

// TestDataDirIsPrivate: a data folder created by Open is 0700 and the
// database files in it 0600, also after writes created the WAL.
func TestDataDirIsPrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new", "data")
	e := newEnv(t, Options{Dir: dir})
	for i := range 20 {
		id := fmt.Sprintf("p%d", i)
		mustStatus(t, e.do("PUT", "Patient/"+id, []byte(`{"resourceType":"Patient","id":"`+id+`"}`)), http.StatusCreated, "PUT")
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("data dir mode %o, want 700", fi.Mode().Perm())
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, en := range entries {
		info, err := en.Info()
		if err != nil {
			t.Fatal(err)
		}
		if info.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s mode %o: readable by others", en.Name(), info.Mode().Perm())
		}
	}
}
