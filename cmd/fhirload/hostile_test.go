package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/fhirload/fhirload/deadletter"
	"github.com/fhirload/fhirload/internal/testutil"
)

// hostileDir is the committed hostile-input corpus (small files only; the
// huge cases are generated at run time by the tests below).
var hostileDir = filepath.Join("..", "..", "testdata", "hostile")

// wantDead is the expected dead letter of one line.
type wantDead struct {
	reason  string
	message string // substring of the entry's message ("" = any)
}

// hostileCase is one input: a file, the ids that must load, and the dead
// letter each bad line must end in.
type hostileCase struct {
	name   string
	file   string // in hostileDir, or an absolute path made by gen
	gen    func(t *testing.T, dir string) string
	extra  string // extra pipeline.yaml
	exit   int
	loaded []string // "Type/id" that must be in the store afterwards
	dead   map[int64]wantDead
	blank  int64
	check  func(t *testing.T, w workspace, entries []deadletter.Entry)
}

func TestHostileInput(t *testing.T) {
	cases := []hostileCase{
		{name: "invalid UTF-8", file: "invalid-utf8.ndjson", exit: 2,
			loaded: []string{"Patient/u1", "Patient/u4"},
			dead:   map[int64]wantDead{2: {"parse", "UTF-8"}, 3: {"parse", ""}},
			check: func(t *testing.T, w workspace, entries []deadletter.Entry) {
				// The invalid bytes are kept verbatim (base64), not replaced.
				raw, _ := os.ReadFile(filepath.Join(hostileDir, "invalid-utf8.ndjson"))
				lines := bytes.Split(raw, []byte("\n"))
				for _, e := range entries {
					if !bytes.Equal(e.Bytes(), lines[e.Source.Line-1]) {
						t.Errorf("line %d not kept verbatim: %q", e.Source.Line, e.Bytes())
					}
				}
			}},
		{name: "UTF-8 BOM", file: "bom.ndjson", exit: 0, loaded: []string{"Patient/b1", "Observation/b2"}},
		{name: "CRLF line ends", file: "crlf.ndjson", exit: 0, loaded: []string{"Patient/c1", "Observation/c2"}},
		{name: "NUL bytes", file: "nul.ndjson", exit: 2, loaded: []string{"Patient/n1", "Patient/n4"},
			dead: map[int64]wantDead{2: {"parse", ""}, 3: {"parse", ""}, 4: {"parse", ""}}},
		{name: "truncated gzip stream", file: "truncated.ndjson.gz", exit: 2,
			check: func(t *testing.T, w workspace, entries []deadletter.Entry) {
				// Complete lines before the cut load; one dead letter stands for the rest.
				if len(entries) != 1 || entries[0].Reason != "unreadable-object" || entries[0].Stage != "read" ||
					!strings.Contains(entries[0].Message, "unreadable after line") {
					t.Fatalf("want one unreadable-object entry for the unreadable tail, got %+v", entries)
				}
				st := w.store(t)
				n := st.count("Patient")
				if n < 1 || int64(n) != entries[0].Source.Line-1 {
					t.Fatalf("%d Patients loaded, dead letter at line %d", n, entries[0].Source.Line)
				}
				for i := 1; i <= n; i++ {
					if code := st.get(fmt.Sprintf("Patient/t%d", i), nil); code != 200 {
						t.Errorf("Patient/t%d: %d", i, code)
					}
				}
			}},
		{name: "empty file", file: "empty.ndjson", exit: 0},
		{name: "empty gzip", file: "empty.ndjson.gz", exit: 0},
		{name: "JSON nested 100000 levels", file: "deep-nesting.ndjson.gz", exit: 2, loaded: []string{"Patient/d0"},
			dead: map[int64]wantDead{2: {"parse", "nested"}, 3: {"parse", "nested"}}},
		{name: "numbers with 10000 digits", file: "big-numbers.ndjson", exit: 2,
			// FHIR R4 decimals have no digit limit (the decimal regex): they load
			// with every digit kept; an integer beyond 32 bits is invalid.
			loaded: []string{"Observation/g1", "Observation/g2", "Observation/g3", "Observation/g5"},
			dead:   map[int64]wantDead{4: {"invalid", "32-bit"}},
			check: func(t *testing.T, w workspace, _ []deadletter.Entry) {
				var obs struct {
					ValueQuantity struct {
						Value json.RawMessage
					}
				}
				w.store(t).get("Observation/g1", &obs)
				if string(obs.ValueQuantity.Value) != strings.Repeat("9", 10000) {
					t.Fatalf("stored value has %d bytes, not the 10000 digits sent", len(obs.ValueQuantity.Value))
				}
			}},
		{name: "duplicate JSON keys", file: "duplicate-keys.ndjson", exit: 2, loaded: []string{"Patient/k6"},
			dead: map[int64]wantDead{1: {"parse", "duplicate"}, 2: {"parse", "duplicate"}, 3: {"parse", "duplicate"},
				4: {"parse", "duplicate"}}},
		// Issue 14, defect 5: objects that are not NDJSON get one entry that says
		// what they are; CR-only line ends are split on CR.
		{name: "UTF-16 with a BOM", file: "utf16.ndjson", exit: 2,
			dead: map[int64]wantDead{1: {"parse", "UTF-16 LE (BOM): NDJSON must be UTF-8"}}},
		{name: "a JSON array", file: "array.json", exit: 2,
			dead: map[int64]wantDead{1: {"parse", "a JSON array, not NDJSON"}}},
		{name: "a pretty-printed resource", file: "pretty.json", exit: 2,
			dead: map[int64]wantDead{1: {"parse", "a multi-line JSON document (a pretty-printed Patient)"}}},
		{name: "CR line ends", file: "cr-only.ndjson", exit: 0, loaded: []string{"Patient/r1", "Patient/r2"}},
		// Every R4 type loads (the Encounter); the rest are not resources.
		{name: "resourceType of another type", file: "other-type.ndjson", exit: 2, loaded: []string{"Encounter/e1", "Patient/e5"},
			dead: map[int64]wantDead{2: {"invalid", "unknown resource type"}, 3: {"", ""}, 4: {"", ""}, 5: {"", ""}}},
		{name: "id of 65 characters", file: "long-id.ndjson", exit: 2, loaded: []string{"Patient/" + strings.Repeat("b", 64)},
			dead: map[int64]wantDead{1: {"invalid", ""}, 3: {"invalid", ""}}},
		{name: "gzip bomb", gen: genGzipBomb, extra: "source: {max_decompressed_bytes: 16777216}\n", exit: 2,
			loaded: []string{"Patient/z1"},
			dead:   map[int64]wantDead{2: {"unreadable-object", "too large"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := newWorkspace(t, "", c.extra)
			src := filepath.Join(hostileDir, c.file)
			if c.gen != nil {
				src = c.gen(t, w.dir)
			}
			code, rep, stderr := w.run(t, "run", src)
			if code != c.exit || rep == nil {
				t.Fatalf("exit %d, want %d\n%s", code, c.exit, stderr)
			}
			entries := listDeadLetters(t, w)
			got := map[int64]string{}
			for _, e := range entries {
				if e.Reason == "" || e.Message == "" {
					t.Errorf("line %d: dead letter without a reason or message: %+v", e.Source.Line, e)
				}
				got[e.Source.Line] = string(e.Reason) + ": " + e.Message
			}
			if c.dead != nil {
				if len(got) != len(c.dead) || len(entries) != len(c.dead) {
					t.Fatalf("dead letters %v, want lines %v", got, c.dead)
				}
				for no, want := range c.dead {
					g, ok := got[no]
					if !ok || !strings.HasPrefix(g, want.reason) || !strings.Contains(g, want.message) {
						t.Errorf("line %d: dead letter %q, want reason %q with %q", no, g, want.reason, want.message)
					}
				}
			}
			if rep.DeadLettered != int64(len(entries)) {
				t.Errorf("report says %d dead-lettered, the store holds %d", rep.DeadLettered, len(entries))
			}
			if c.loaded != nil && rep.Loaded != int64(len(c.loaded)) {
				t.Errorf("loaded %d, want %d (%v)", rep.Loaded, len(c.loaded), c.loaded)
			}
			if c.dead != nil && c.loaded != nil && rep.Lines != int64(len(c.dead)+len(c.loaded))+c.blank {
				t.Errorf("lines %d, want %d", rep.Lines, len(c.dead)+len(c.loaded))
			}
			if len(c.loaded) > 0 {
				st := w.store(t)
				for _, ref := range c.loaded {
					if code := st.get(ref, nil); code != 200 {
						t.Errorf("%s: HTTP %d after the run", ref, code)
					}
				}
			}
			if strings.Contains(stderr, "panic") || strings.Contains(stderr, "goroutine ") {
				t.Errorf("stderr shows a panic:\n%s", stderr)
			}
			if c.check != nil {
				c.check(t, w, entries)
			}
		})
	}
}

// listDeadLetters reads the workspace's dead-letter store with the lines.
func listDeadLetters(t *testing.T, w workspace) []deadletter.Entry {
	t.Helper()
	st, err := deadletter.Open(context.Background(), "file://"+filepath.Join(w.dir, "deadletter"), deadletter.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	entries, err := st.List(context.Background(), deadletter.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(entries, func(a, b deadletter.Entry) int {
		return strings.Compare(a.Source.URI+fmt.Sprintf("%012d", a.Source.Line), b.Source.URI+fmt.Sprintf("%012d", b.Source.Line))
	})
	return entries
}

// gen100MBLine writes a file whose second line is 100 MB long.
func gen100MBLine(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "huge-line.ndjson")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fmt.Fprintln(f, patientLine("h1"))
	fmt.Fprint(f, `{"resourceType":"Patient","id":"h2","name":[{"family":"`)
	chunk := bytes.Repeat([]byte("A"), 1<<20)
	for range 100 {
		if _, err := f.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	fmt.Fprintln(f, `","given":["X"]}]}`)
	fmt.Fprintln(f, patientLine("h3"))
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

// genGzipBomb writes a 1 MB gzip file that expands to 1 GiB: one good line,
// then 1024 members of 1 MiB of zeros each (no newline: one endless line).
func genGzipBomb(t *testing.T, dir string) string {
	t.Helper()
	var member bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&member, gzip.BestCompression)
	_, _ = zw.Write(make([]byte, 1<<20))
	_ = zw.Close()
	var first bytes.Buffer
	zw, _ = gzip.NewWriterLevel(&first, gzip.BestCompression)
	_, _ = zw.Write([]byte(patientLine("z1") + "\n"))
	_ = zw.Close()
	p := filepath.Join(dir, "bomb.ndjson.gz")
	data := append(first.Bytes(), bytes.Repeat(member.Bytes(), 1024)...)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if len(data) > 2<<20 {
		t.Fatalf("bomb is %d bytes, meant to be small", len(data))
	}
	return p
}

func patientLine(id string) string {
	return `{"resourceType":"Patient","id":"` + id + `","name":[{"family":"Doe","given":["Jane"]}],"gender":"female","birthDate":"1970-01-01"}`
}

// TestHugeLineMemoryIsBounded loads a file whose second line is 100 MB while
// sampling the heap: the line is dead-lettered (parse, truncated to its first
// 64 KiB), its neighbours load, and the heap grows by far less than the line
// (a reader that held it whole would need more than 100 MiB).
func TestHugeLineMemoryIsBounded(t *testing.T) {
	w := newWorkspace(t, "", "")
	src := gen100MBLine(t, w.dir)
	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	var peak atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			if m.HeapInuse > peak.Load() {
				peak.Store(m.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	})
	code, rep, stderr := w.run(t, "run", src)
	close(stop)
	wg.Wait()
	if code != 2 || rep.Lines != 3 || rep.Loaded != 2 || rep.DeadLettered != 1 {
		t.Fatalf("exit %d %+v\n%s", code, rep, stderr)
	}
	entries := listDeadLetters(t, w)
	if len(entries) != 1 {
		t.Fatalf("%d dead letters, want 1", len(entries))
	}
	e := entries[0]
	if e.Source.Line != 2 || e.Reason != "parse" || e.Stage != "read" || !strings.Contains(e.Message, "max_line_bytes") {
		t.Errorf("dead letter %+v", e)
	}
	if !e.LineTruncated || len(e.Bytes()) > 64<<10 || !bytes.HasPrefix(e.Bytes(), []byte(`{"resourceType":"Patient","id":"h2"`)) {
		t.Errorf("entry keeps %d bytes, truncated=%v; want the first <= 64 KiB", len(e.Bytes()), e.LineTruncated)
	}
	st := w.store(t)
	for _, ref := range []string{"Patient/h1", "Patient/h3"} {
		if code := st.get(ref, nil); code != 200 {
			t.Errorf("%s: HTTP %d", ref, code)
		}
	}
	grew := int64(peak.Load()) - int64(base.HeapInuse)
	t.Logf("heap in use grew by at most %d MiB while reading a 100 MiB line", grew>>20)
	if grew > 64<<20 {
		t.Fatalf("heap grew by %d MiB: the line reader holds too much", grew>>20)
	}
}

// TestHostileS3Key loads an object whose key has spaces, '+', '%' and
// unicode through `run s3://...`: it is listed, read and named correctly.
func TestHostileS3Key(t *testing.T) {
	ep := testutil.Moto(t)
	t.Setenv("AWS_ACCESS_KEY_ID", "testing")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "testing")
	t.Setenv("AWS_SESSION_TOKEN", "")
	c := testutil.S3(ep)
	bucket := testutil.Bucket(t, c)
	keys := []string{
		"in/a b+c%20d %2B ü 患者 ☃.ndjson",
		"in/plus+only.ndjson",
		"in/100%.ndjson",
	}
	for i, k := range keys {
		body := patientLine(fmt.Sprintf("s%d", i)) + "\n" + `{"resourceType":"Patient","id":"bad"` + "\n"
		if _, err := c.PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(k),
			Body: strings.NewReader(body)}); err != nil {
			t.Fatal(err)
		}
	}
	w := newWorkspace(t, "", fmt.Sprintf("aws: {endpoint_url: %q, s3_path_style: true}\n", ep))
	code, rep, stderr := w.run(t, "run", "s3://"+bucket+"/in/")
	if code != 2 || rep.Objects != 3 || rep.Loaded != 3 || rep.DeadLettered != 3 {
		t.Fatalf("exit %d %+v\n%s", code, rep, stderr)
	}
	var uris []string
	for _, e := range listDeadLetters(t, w) {
		if e.Source.Line != 2 || e.Reason != "parse" {
			t.Errorf("entry %+v", e.Source)
		}
		uris = append(uris, e.Source.URI)
	}
	var want []string
	for _, k := range keys {
		want = append(want, "s3://"+bucket+"/"+k)
	}
	slices.Sort(want)
	slices.Sort(uris)
	if !slices.Equal(uris, want) {
		t.Fatalf("dead letters name %q, want %q", uris, want)
	}
	st := w.store(t)
	if n := st.count("Patient"); n != 3 {
		t.Fatalf("%d Patients", n)
	}
}
