package pipeline_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/fhirload/fhirload/deadletter"
	"github.com/fhirload/fhirload/pipeline"
	"github.com/fhirload/fhirload/transform"
)

// utf16le encodes ASCII s as UTF-16 LE with a BOM.
func utf16le(s string) []byte {
	b := []byte{0xFF, 0xFE}
	for _, c := range []byte(s) {
		b = append(b, c, 0)
	}
	return b
}

// TestRunnerEncodings is issue 14, defect 5: an object in an encoding or
// shape that is not NDJSON gets one object-level entry that says what it is
// (instead of a dead letter per "line" with a parse error at byte 0); CR-only
// line ends are split on CR; a UTF-8 BOM is accepted.
func TestRunnerEncodings(t *testing.T) {
	two := patient("p1") + "\n" + patient("p2") + "\n"
	tests := []struct {
		name   string
		data   []byte
		lines  int64
		loaded int64
		msg    string // the one dead letter's message
	}{
		{"UTF-16 LE with a BOM", utf16le(two), 1, 0, "UTF-16 LE (BOM): NDJSON must be UTF-8"},
		{"a JSON array", []byte("[" + patient("p1") + ",\n" + patient("p2") + "]\n"), 1, 0, "a JSON array, not NDJSON"},
		{"a pretty-printed resource", []byte("{\n  \"resourceType\": \"Patient\",\n  \"id\": \"p1\"\n}\n"), 1, 0, "a multi-line JSON document (a pretty-printed Patient)"},
		{"CR line ends", []byte(patient("p1") + "\r" + patient("p2") + "\r"), 2, 2, ""},
		{"UTF-8 BOM", append([]byte{0xEF, 0xBB, 0xBF}, two...), 2, 2, ""},
		{"a damaged first line", []byte("garbage\n" + two), 3, 2, "parse"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var a acks
			dl := &memDeadLetters{}
			r := pipeline.NewRunner(pipeline.Deps{Config: testConfig(), Sink: &memSink{}, DeadLetters: dl})
			rep := r.Run(context.Background(), newSource(&a, memObject{uri: "file:///in/x.ndjson", data: tt.data}))
			checkReconciles(t, rep)
			if rep.Lines != tt.lines || rep.Loaded != tt.loaded {
				t.Fatalf("lines %d loaded %d, want %d %d", rep.Lines, rep.Loaded, tt.lines, tt.loaded)
			}
			if tt.msg == "" {
				if len(dl.entries) != 0 {
					t.Fatalf("dead letters %+v", dl.entries)
				}
				return
			}
			if len(dl.entries) != 1 || !strings.Contains(dl.entries[0].Message, tt.msg) {
				t.Fatalf("dead letters %+v, want one saying %q", dl.entries, tt.msg)
			}
		})
	}
}

// bundleDoc is a pretty-printed transaction Bundle of n Patients with
// urn:uuid fullUrls and no ids, and one Observation referring to the first.
func bundleDoc(n int) string {
	var b strings.Builder
	b.WriteString("{\n  \"resourceType\": \"Bundle\",\n  \"type\": \"transaction\",\n  \"entry\": [\n")
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "    {\n      \"fullUrl\": \"urn:uuid:00000000-0000-4000-8000-%012d\",\n      \"resource\": {\n        \"resourceType\": \"Patient\",\n        \"name\": [{\"family\": \"F\", \"given\": [\"G\"]}]\n      },\n      \"request\": {\"method\": \"POST\", \"url\": \"Patient\"}\n    },\n", i)
	}
	b.WriteString("    {\n      \"fullUrl\": \"urn:uuid:10000000-0000-4000-8000-000000000001\",\n      \"resource\": {\"resourceType\": \"Observation\", \"status\": \"final\", \"code\": {\"text\": \"t\"},\n        \"subject\": {\"reference\": \"urn:uuid:00000000-0000-4000-8000-000000000001\"}}\n    },\n")
	b.WriteString("    {\"fullUrl\": \"urn:uuid:10000000-0000-4000-8000-000000000002\", \"resource\": {\"resourceType\": \"Patient\"}}\n  ]\n}\n")
	return b.String()
}

// TestRunnerBundleFile: a Bundle document is read entry by entry; the
// fullUrl gives ids, an entry's "line" is its position in Bundle.entry, and
// a bad entry is dead-lettered alone, with its fullUrl kept for replay.
func TestRunnerBundleFile(t *testing.T) {
	var a acks
	dl := &memDeadLetters{}
	sink := &memSink{}
	r := pipeline.NewRunner(pipeline.Deps{Config: testConfig(), Sink: sink, DeadLetters: dl})
	rep := r.Run(context.Background(), newSource(&a, memObject{uri: "file:///in/Bernie.json", data: []byte(bundleDoc(5))}))
	checkReconciles(t, rep)
	if rep.Lines != 7 || rep.Loaded != 6 || rep.DeadLettered != 1 {
		t.Fatalf("report %+v", rep)
	}
	if sink.written["00000000-0000-4000-8000-000000000003"] != 1 || sink.written["10000000-0000-4000-8000-000000000001"] != 1 {
		t.Fatalf("written %v", sink.written)
	}
	e := dl.entries[0]
	if e.Source.Line != 7 || e.Source.FullURL != "urn:uuid:10000000-0000-4000-8000-000000000002" ||
		e.Reason != deadletter.ReasonInvalid || !strings.Contains(e.Line, `"resourceType": "Patient"`) {
		t.Fatalf("entry %+v", e)
	}
	if calls := a.of("file:///in/Bernie.json"); len(calls) != 1 || calls[0] != nil {
		t.Fatalf("acks %v", calls)
	}
}

// TestPrepassResolvesAcrossObjects: with the index of a pre-pass, a
// urn:uuid reference on an element that allows several types becomes the
// type of its target in another object, read after it; one to a resource
// not in the run is kept and counted.
func TestPrepassResolvesAcrossObjects(t *testing.T) {
	claim := `{"resourceType":"Claim","id":"c1","status":"active","type":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/claim-type","code":"institutional"}]},"use":"claim","patient":{"reference":"urn:uuid:aaaaaaaa-0000-4000-8000-000000000001"},"created":"2020-01-01","provider":{"reference":"urn:uuid:bbbbbbbb-0000-4000-8000-000000000001"},"priority":{"coding":[{"code":"normal"}]},"insurance":[{"sequence":1,"focal":true,"coverage":{"reference":"urn:uuid:cccccccc-0000-4000-8000-000000000001"}}]}`
	org := `{"resourceType":"Organization","id":"bbbbbbbb-0000-4000-8000-000000000001","name":"Hospital"}`
	pat := `{"resourceType":"Patient","id":"aaaaaaaa-0000-4000-8000-000000000001","name":[{"family":"F","given":["G"]}]}`
	objs := func(a *acks) *memSource {
		return newSource(a, memObject{uri: "file:///in/Claim.ndjson", data: []byte(claim + "\n")},
			memObject{uri: "file:///in/Organization.ndjson", data: []byte(org + "\n" + pat + "\n")})
	}
	idx := transform.NewIndex(transform.IndexOptions{})
	defer idx.Close()
	var a acks
	st, err := pipeline.Prepass(context.Background(), testConfig(), objs(&a), idx, nil)
	if err != nil || st.Objects != 2 || st.Resources != 3 {
		t.Fatalf("prepass %+v %v", st, err)
	}
	tr, err := transform.New(transform.Options{Resolver: idx})
	if err != nil {
		t.Fatal(err)
	}
	var bodies []string
	sink := &memSink{decide: func(it pipeline.Item) (pipeline.Outcome, error) {
		bodies = append(bodies, string(it.Body))
		return pipeline.Outcome{Status: pipeline.Loaded}, nil
	}}
	cfg := testConfig()
	cfg.Target.Concurrency = 1
	r := pipeline.NewRunner(pipeline.Deps{Config: cfg, Transformer: tr, Sink: sink, DeadLetters: &memDeadLetters{}})
	rep := r.Run(context.Background(), objs(&a))
	checkReconciles(t, rep)
	if rep.Loaded != 3 || rep.UnresolvedRefs != 1 {
		t.Fatalf("loaded %d unresolved %d", rep.Loaded, rep.UnresolvedRefs)
	}
	got := strings.Join(bodies, "\n")
	for _, want := range []string{`"provider":{"reference":"Organization/bbbbbbbb-0000-4000-8000-000000000001"}`,
		`"patient":{"reference":"Patient/aaaaaaaa-0000-4000-8000-000000000001"}`,
		`"coverage":{"reference":"urn:uuid:cccccccc-0000-4000-8000-000000000001"}`} {
		if !strings.Contains(got, want) {
			t.Errorf("no %s in\n%s", want, got)
		}
	}
}

// TestRunnerRulesAndUnknowns: a line that breaks one of the specification's
// rules is dead-lettered naming it (entry.rule, the report's
// dead_letter_rules); extensions and declared profiles transform does not
// know are accepted and counted per URL.
func TestRunnerRulesAndUnknowns(t *testing.T) {
	obs := func(id, extra string) string {
		return `{"resourceType":"Observation","id":"` + id + `","status":"final","code":{"text":"t"}` + extra + `}`
	}
	data := strings.Join([]string{
		obs("o1", `,"valueString":"x","dataAbsentReason":{"text":"unknown"}`), // obs-6
		obs("o2", `,"extension":[{"url":"http://example.org/fhir/ext/unknown","valueString":"x"}]`),
		obs("o3", `,"meta":{"profile":["http://example.org/fhir/StructureDefinition/not-here"]}`),
		obs("o4", `,"extension":[{"url":"http://example.org/fhir/ext/unknown","valueString":"y"}]`),
	}, "\n") + "\n"
	var a acks
	dl := &memDeadLetters{}
	r := pipeline.NewRunner(pipeline.Deps{Config: testConfig(), Sink: &memSink{}, DeadLetters: dl})
	rep := r.Run(context.Background(), newSource(&a, memObject{uri: "file:///in/o.ndjson", data: []byte(data)}))
	checkReconciles(t, rep)
	if rep.Loaded != 3 || rep.DeadLettered != 1 || dl.entries[0].Rule != "obs-6" || rep.DeadLetterRules["obs-6"] != 1 {
		t.Fatalf("report %+v, entries %+v", rep, dl.entries)
	}
	if rep.UnknownExtensions["http://example.org/fhir/ext/unknown"] != 2 ||
		rep.UnknownProfiles["http://example.org/fhir/StructureDefinition/not-here"] != 1 {
		t.Fatalf("unknown extensions %v, profiles %v", rep.UnknownExtensions, rep.UnknownProfiles)
	}
}
