package transform

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

func TestScanID(t *testing.T) {
	tests := []struct {
		line, typ, id string
		ok            bool
	}{
		{`{"resourceType":"Patient","id":"p1","name":[]}`, "Patient", "p1", true},
		{`{"id":"p1","resourceType":"Patient"}`, "Patient", "p1", true},
		{"\ufeff{ \"resourceType\" : \"Claim\" ,\n \"id\" : \"c\" }", "Claim", "c", true},
		{`{"resourceType":"Patient","meta":{"id":"no","x":[{"id":"no"}]},"text":"}{\"id\":\"no\"","id":"yes"}`, "Patient", "yes", true},
		{`{"resourceType":"Patient","n":12.5e3,"b":true,"z":null,"id":"p"}`, "Patient", "p", true},
		{`{"resourceType":"Patient"}`, "Patient", "", true},
		{`{"id":"p1"}`, "", "p1", false},
		{`{"resourceType":42,"id":"p1"}`, "", "p1", false},
		{`["resourceType","Patient"]`, "", "", false},
		{`{"resourceType":"Patient","text":"unterminated`, "", "", false},
		{`{"resourceType":"Patient","x":{"a":[1,2}`, "", "", false},
		{``, "", "", false},
	}
	for _, tt := range tests {
		typ, id, ok := ScanID([]byte(tt.line))
		if string(typ) != tt.typ || string(id) != tt.id || ok != tt.ok {
			t.Errorf("%s: got %q %q %v, want %q %q %v", tt.line, typ, id, ok, tt.typ, tt.id, tt.ok)
		}
	}
}

// buildIndex scans every line of the population (in the given file order) into an index.
func buildIndex(t testing.TB, opts IndexOptions, files []string) (*Index, map[string]string) {
	t.Helper()
	lines := allLines(t)
	x := NewIndex(opts)
	t.Cleanup(func() { x.Close() })
	truth := map[string]string{}
	for _, f := range files {
		for _, l := range lines[f] {
			typ, id, ok := ScanID(l)
			if !ok {
				t.Fatalf("%s: ScanID failed", f)
			}
			if added, err := x.Add(typ, id); err != nil || !added {
				t.Fatalf("%s: Add %v %v", f, added, err)
			}
			truth[string(id)] = string(typ)
		}
	}
	if err := x.Freeze(); err != nil {
		t.Fatal(err)
	}
	return x, truth
}

func sortedFiles(t testing.TB) []string {
	var files []string
	for f := range allLines(t) {
		files = append(files, f)
	}
	slices.Sort(files)
	return files
}

// TestResolveAcrossTypes: with an index of the whole population, every urn:uuid
// reference of every line becomes Type/id of its actual target, whatever the file
// order — Claim.provider → Organization, Encounter.participant.individual →
// Practitioner — and none is left unresolved.
func TestResolveAcrossTypes(t *testing.T) {
	files := sortedFiles(t)
	reversed := slices.Clone(files)
	slices.Reverse(reversed)
	x, truth := buildIndex(t, IndexOptions{}, reversed)
	if x.Len() != 38472 || x.Spilled() {
		t.Fatalf("index holds %d ids (spilled %v), want the population's 38,472 unique ids", x.Len(), x.Spilled())
	}
	tr := mustNew(t, Options{Resolver: x})
	lines := allLines(t)
	checked := map[string]int{}
	for _, f := range files {
		st := tr.NewStream(f)
		for i, l := range lines[f] {
			if raceEnabled && i%4 != 0 && i >= 200 {
				continue // see raceEnabled
			}
			res, _, err := st.Next(l)
			if err != nil {
				t.Fatalf("%s:%d: %v", f, i+1, err)
			}
			if res.Unresolved != 0 {
				t.Fatalf("%s:%d: %d unresolved references", f, i+1, res.Unresolved)
			}
			if strings.Contains(string(res.Body), "urn:uuid:") {
				t.Fatalf("%s:%d: a urn:uuid: reference is left", f, i+1)
			}
			// Every reference points at a resource of the population, of the right type.
			for _, ref := range scanReferences(res.Body) {
				typ, id, _ := strings.Cut(ref, "/")
				if truth[id] != typ {
					t.Fatalf("%s:%d: reference %s, but %s is a %s", f, i+1, ref, id, truth[id])
				}
			}
			// And by element, for a sample of each type.
			if i < 200 {
				for _, ref := range references(t, res.Body) {
					typ, _, _ := strings.Cut(ref.value, "/")
					checked[res.Type+"."+ref.path+" → "+typ]++
				}
			}
		}
	}
	for _, want := range []string{"Claim.provider → Organization", "Encounter.participant.individual → Practitioner",
		"Claim.patient → Patient", "ExplanationOfBenefit.provider → Practitioner", "Observation.encounter → Encounter"} {
		if checked[want] == 0 {
			t.Errorf("no reference %s checked; seen %v", want, checked)
		}
	}
}

// scanReferences returns the values of every "reference" key of a compact body except
// #contained ones, without parsing it.
func scanReferences(body []byte) []string {
	var out []string
	const key = `"reference":"`
	for b := body; ; {
		i := bytes.Index(b, []byte(key))
		if i < 0 {
			return out
		}
		b = b[i+len(key):]
		end := bytes.IndexByte(b, '"')
		if end < 0 {
			return out
		}
		if b[0] != '#' {
			out = append(out, string(b[:end]))
		}
		b = b[end:]
	}
}

type refAt struct{ path, value string }

// references lists the Reference.reference values of a resource with their paths
// (array indexes left out).
func references(t testing.TB, body []byte) []refAt {
	var doc any
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatal(err)
	}
	var out []refAt
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, c := range v {
				if s, ok := c.(string); ok && k == "reference" {
					if !strings.HasPrefix(s, "#") {
						out = append(out, refAt{path, s})
					}
					continue
				}
				if k == "contained" {
					continue
				}
				p := k
				if path != "" {
					p = path + "." + k
				}
				walk(p, c)
			}
		case []any:
			for _, c := range v {
				walk(path, c)
			}
		}
	}
	walk("", doc)
	return out
}

// TestIndexSpill: an index that spills to disk (a bound of 2,000 entries, so about 20
// runs) answers exactly like the in-memory one, for every id and for absent ones.
func TestIndexSpill(t *testing.T) {
	files := sortedFiles(t)
	mem, truth := buildIndex(t, IndexOptions{}, files)
	dir := t.TempDir()
	disk, _ := buildIndex(t, IndexOptions{MaxMemory: 2000 * entrySize, Dir: dir}, files)
	if !disk.Spilled() || disk.Len() != mem.Len() || disk.Repeats() != mem.Repeats() {
		t.Fatalf("spilled %v, %d ids and %d repeats, want %d and %d", disk.Spilled(), disk.Len(), disk.Repeats(), mem.Len(), mem.Repeats())
	}
	if names, _ := filepath.Glob(filepath.Join(dir, "*")); len(names) != 1 {
		t.Fatalf("after Freeze the runs must be merged into one file: %v", names)
	}
	for id, typ := range truth {
		got, ok := disk.TypeOf([]byte(id))
		if !ok || got != typ {
			t.Fatalf("%s: %q %v, want %s", id, got, ok, typ)
		}
	}
	for i := 0; i < 1000; i++ {
		id := []byte(fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i))
		if _, ok := disk.TypeOf(id); ok {
			t.Fatalf("absent id %s found", id)
		}
		if _, ok := mem.TypeOf(id); ok {
			t.Fatalf("absent id %s found in memory", id)
		}
	}
	if err := disk.Close(); err != nil {
		t.Fatal(err)
	}
	if names, _ := filepath.Glob(filepath.Join(dir, "*")); len(names) != 0 {
		t.Fatalf("Close left files: %v", names)
	}
}

func TestIndexIDs(t *testing.T) {
	for _, spill := range []bool{false, true} {
		opts := IndexOptions{Dir: t.TempDir()}
		if spill {
			opts.MaxMemory = 2 * entrySize
		}
		x := NewIndex(opts)
		add := func(typ, id string) {
			if ok, err := x.Add([]byte(typ), []byte(id)); err != nil || !ok {
				t.Fatalf("Add %s %s: %v %v", typ, id, ok, err)
			}
		}
		add("Patient", "example")
		add("Organization", "example") // the same id under two types: ambiguous
		add("Organization", "o1")
		add("Organization", "o1") // repeated (Synthea repeats providers): fine
		add("Practitioner", "6B3C1E52-8A4D-4B0E-9D27-51C38E0A7F14")
		add("Patient", "example")                                   // repeated, and when spilling in another run than the first
		add("Practitioner", "6b3c1e52-8a4d-4b0e-9d27-51c38e0a7f14") // the same UUID
		if ok, _ := x.Add([]byte("NotAType"), []byte("x")); ok {
			t.Fatal("unknown type added")
		}
		if _, ok := x.TypeOf([]byte("o1")); ok {
			t.Fatal("answers before Freeze")
		}
		if err := x.Freeze(); err != nil {
			t.Fatal(err)
		}
		if _, err := x.Add([]byte("Patient"), []byte("late")); err == nil {
			t.Fatal("Add after Freeze accepted")
		}
		tests := []struct {
			id, typ string
			ok      bool
		}{
			{"example", "", false},
			{"o1", "Organization", true},
			{"6b3c1e52-8a4d-4b0e-9d27-51c38e0a7f14", "Practitioner", true}, // UUIDs match in either case
			{"o2", "", false},
		}
		for _, tt := range tests {
			typ, ok := x.TypeOf([]byte(tt.id))
			if typ != tt.typ || ok != tt.ok {
				t.Errorf("spill=%v %s: %q %v, want %q %v", spill, tt.id, typ, ok, tt.typ, tt.ok)
			}
		}
		// Organization/o1, Patient/example and the Practitioner each once
		// more; Organization/example is another resource than Patient/example.
		if got := x.Repeats(); got != 3 {
			t.Errorf("spill=%v: %d repeats, want 3", spill, got)
		}
		if got := x.Len(); got != 3 {
			t.Errorf("spill=%v: %d ids, want 3", spill, got)
		}
		x.Close()
	}
}

// TestUnresolvedKept: with a resolver, a urn:uuid reference to a resource not in the run
// is kept as written and counted; a target of a type the element does not allow is
// invalid; the type element must agree with the target.
func TestUnresolvedKept(t *testing.T) {
	x := NewIndex(IndexOptions{})
	defer x.Close()
	x.Add([]byte("Organization"), []byte(uuidX))
	x.Freeze()
	tr := mustNew(t, Options{Resolver: x})
	other := "11111111-2222-4333-8444-555555555555"
	obs := func(extra string) []byte {
		return []byte(`{"resourceType":"Observation","id":"o1","status":"final","code":{"text":"c"}` + extra + `}`)
	}
	res, _, err := tr.NewStream("x").Next(obs(`,"subject":{"reference":"urn:uuid:` + other + `"},"performer":[{"reference":"urn:uuid:` + uuidX + `"}],"focus":[{"reference":"urn:uuid:` + other + `"}]`))
	if err != nil {
		t.Fatal(err)
	}
	if res.Unresolved != 2 || !strings.Contains(string(res.Body), `"subject":{"reference":"urn:uuid:`+other+`"}`) ||
		!strings.Contains(string(res.Body), `"performer":[{"reference":"Organization/`+uuidX+`"}]`) {
		t.Fatalf("unresolved %d, body %s", res.Unresolved, res.Body)
	}
	for _, tt := range []struct{ extra, loc string }{
		{`,"subject":{"reference":"urn:uuid:` + uuidX + `"}`, "Observation.subject.reference"},                           // Organization is not a subject type
		{`,"performer":[{"reference":"urn:uuid:` + uuidX + `","type":"Practitioner"}]`, "Observation.performer[0].type"}, // type disagrees
	} {
		_, _, err := tr.NewStream("x").Next(obs(tt.extra))
		if e := asError(t, err); e.Reason != ReasonInvalid || e.Location != tt.loc {
			t.Errorf("%s: got %v, want invalid at %s", tt.extra, err, tt.loc)
		}
	}
}

// TestBundleFullURLResolves: the entries of a Synthea Bundle indexed by their fullUrl
// resolve each other's references; the run needs nothing else.
func TestBundleFullURLResolves(t *testing.T) {
	for _, f := range bundleFiles(t) {
		x := NewIndex(IndexOptions{})
		d := NewBundleDecoder(openGzip(t, f), BundleOptions{})
		for {
			e, err := d.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			typ, _, ok := ScanID(e.Resource)
			if !ok || !strings.HasPrefix(e.FullURL, "urn:uuid:") {
				t.Fatalf("%s entry %d: %q", f, e.Index, e.FullURL)
			}
			x.Add(typ, []byte(strings.TrimPrefix(e.FullURL, "urn:uuid:")))
		}
		x.Freeze()
		tr := mustNew(t, Options{Resolver: x, IDs: IDsDerive})
		st := tr.NewStream(f)
		d = NewBundleDecoder(openGzip(t, f), BundleOptions{})
		unresolved := 0
		for {
			e, err := d.Next()
			if err == io.EOF {
				break
			}
			res, err := st.NextEntry(e)
			if err != nil {
				t.Fatal(err)
			}
			unresolved += res.Unresolved
			if strings.Contains(string(res.Body), "urn:uuid:") {
				t.Fatalf("%s entry %d: urn:uuid: left", filepath.Base(f), e.Index)
			}
		}
		if unresolved != 0 {
			t.Fatalf("%s: %d unresolved", f, unresolved)
		}
		x.Close()
	}
}

// TestIndexCrowdedPrefix: ids sharing their first 16 bits (a crowded bucket of the
// in-place sort) are all found, in memory and spilled.
func TestIndexCrowdedPrefix(t *testing.T) {
	for _, mem := range []int64{0, 50 * entrySize} {
		x := NewIndex(IndexOptions{MaxMemory: mem, Dir: t.TempDir()})
		var ids []string
		for i := 0; i < 500; i++ {
			id := fmt.Sprintf("abcd%04x-0000-4000-8000-%012x", (i*7919)%65536, i)
			ids = append(ids, id)
			typ := []string{"Patient", "Encounter", "Claim"}[i%3]
			if ok, err := x.Add([]byte(typ), []byte(id)); !ok || err != nil {
				t.Fatal(ok, err)
			}
		}
		if err := x.Freeze(); err != nil {
			t.Fatal(err)
		}
		for i, id := range ids {
			typ, ok := x.TypeOf([]byte(id))
			if want := []string{"Patient", "Encounter", "Claim"}[i%3]; !ok || typ != want {
				t.Fatalf("mem %d: %s: %q %v, want %s", mem, id, typ, ok, want)
			}
		}
		if x.Len() != 500 {
			t.Fatalf("%d ids", x.Len())
		}
		x.Close()
	}
}

// TestIndexConcurrent: Add from several goroutines, then TypeOf from several (run with
// -race).
func TestIndexConcurrent(t *testing.T) {
	x := NewIndex(IndexOptions{MaxMemory: 300 * entrySize, Dir: t.TempDir()})
	defer x.Close()
	id := func(g, i int) []byte { return []byte(fmt.Sprintf("%08x-0000-4000-8000-%012x", g, i)) }
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 500; i++ {
				if _, err := x.Add([]byte("Location"), id(g, i)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := x.Freeze(); err != nil {
		t.Fatal(err)
	}
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 500; i++ {
				if typ, ok := x.TypeOf(id(g, i)); !ok || typ != "Location" {
					t.Errorf("%s: %q %v", id(g, i), typ, ok)
					return
				}
			}
		}()
	}
	wg.Wait()
}
