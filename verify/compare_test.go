package verify

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/fhirload/fhirload/internal/jsonscan"
	"github.com/fhirload/fhirload/internal/testlines"
)

func TestCompare(t *testing.T) {
	const obs = `{"resourceType":"Observation","id":"o1","status":"final","valueQuantity":{"value":170.0,"unit":"cm"}}`
	cases := []struct {
		name      string
		want, got string
		paths     []string // nil: equal
	}{
		{"identical", obs, obs, nil},
		{"server meta only", obs,
			`{"resourceType":"Observation","id":"o1","meta":{"versionId":"3","lastUpdated":"2026-01-01T00:00:00.000Z"},"status":"final","valueQuantity":{"value":170.0,"unit":"cm"}}`, nil},
		{"key order and whitespace", obs,
			"{ \"valueQuantity\" : {\"unit\":\"cm\",\n\"value\":170.0}, \"status\":\"final\",\"id\":\"o1\",\"resourceType\":\"Observation\"}\n", nil},
		{"number precision is not value", obs,
			`{"resourceType":"Observation","id":"o1","status":"final","valueQuantity":{"value":170,"unit":"cm"}}`, nil},
		{"number in exponent form", obs,
			`{"resourceType":"Observation","id":"o1","status":"final","valueQuantity":{"value":1.7E2,"unit":"cm"}}`, nil},
		{"number value changed", obs,
			`{"resourceType":"Observation","id":"o1","status":"final","valueQuantity":{"value":170.01,"unit":"cm"}}`,
			[]string{"Observation.valueQuantity.value"}},
		{"number no float rounding",
			`{"resourceType":"Observation","id":"o1","valueQuantity":{"value":0.1}}`,
			`{"resourceType":"Observation","id":"o1","valueQuantity":{"value":0.10000000000000001}}`,
			[]string{"Observation.valueQuantity.value"}},
		{"negative zero is zero",
			`{"resourceType":"Observation","id":"o1","valueInteger":0}`,
			`{"resourceType":"Observation","id":"o1","valueInteger":-0.0}`, nil},
		{"sign matters",
			`{"resourceType":"Observation","id":"o1","valueInteger":5}`,
			`{"resourceType":"Observation","id":"o1","valueInteger":-5}`,
			[]string{"Observation.valueInteger"}},
		{"number versus string",
			`{"resourceType":"Observation","id":"o1","valueInteger":5}`,
			`{"resourceType":"Observation","id":"o1","valueInteger":"5"}`,
			[]string{"Observation.valueInteger"}},
		{"string escapes decode", `{"resourceType":"Patient","id":"p","name":[{"family":"Ren\u00e9e/"}]}`,
			`{"resourceType":"Patient","id":"p","name":[{"family":"Renée\/"}]}`, nil},
		{"surrogate pair", `{"resourceType":"Patient","id":"p","name":[{"text":"\ud83d\ude00"}]}`,
			`{"resourceType":"Patient","id":"p","name":[{"text":"😀"}]}`, nil},
		{"string changed", `{"resourceType":"Patient","id":"p","name":[{"family":"Doe","given":["Jane","Ann"]}]}`,
			`{"resourceType":"Patient","id":"p","name":[{"family":"Doe","given":["Jane","Anne"]}]}`,
			[]string{"Patient.name[0].given[1]"}},
		{"array order matters", `{"resourceType":"Patient","id":"p","name":[{"given":["Jane","Ann"]}]}`,
			`{"resourceType":"Patient","id":"p","name":[{"given":["Ann","Jane"]}]}`,
			[]string{"Patient.name[0].given[0]", "Patient.name[0].given[1]"}},
		{"array element missing", `{"resourceType":"Patient","id":"p","name":[{"family":"A"},{"family":"B"}]}`,
			`{"resourceType":"Patient","id":"p","name":[{"family":"A"}]}`,
			[]string{"Patient.name[1]"}},
		{"array element extra", `{"resourceType":"Patient","id":"p","name":[{"family":"A"}]}`,
			`{"resourceType":"Patient","id":"p","name":[{"family":"A"},{"family":"B"}]}`,
			[]string{"Patient.name[1]"}},
		{"element missing at the target", `{"resourceType":"Patient","id":"p","gender":"female","birthDate":"1970-01-01"}`,
			`{"resourceType":"Patient","id":"p","gender":"female"}`,
			[]string{"Patient.birthDate"}},
		{"element extra at the target", `{"resourceType":"Patient","id":"p","gender":"female"}`,
			`{"resourceType":"Patient","id":"p","gender":"female","birthDate":"1970-01-01"}`,
			[]string{"Patient.birthDate"}},
		{"empty object versus absent", `{"resourceType":"Patient","id":"p","gender":"female"}`,
			`{"resourceType":"Patient","id":"p","gender":"female","text":{}}`,
			[]string{"Patient.text"}},
		{"extension values", `{"resourceType":"Patient","id":"p","extension":[{"url":"http://x/a","valueString":"a"},{"url":"http://x/b","valueDecimal":1.50}]}`,
			`{"resourceType":"Patient","id":"p","extension":[{"url":"http://x/a","valueString":"a"},{"url":"http://x/b","valueDecimal":1.5}]}`, nil},
		{"extension order matters", `{"resourceType":"Patient","id":"p","extension":[{"url":"http://x/a","valueString":"a"},{"url":"http://x/b","valueString":"b"}]}`,
			`{"resourceType":"Patient","id":"p","extension":[{"url":"http://x/b","valueString":"b"},{"url":"http://x/a","valueString":"a"}]}`,
			[]string{"Patient.extension[0].url", "Patient.extension[0].valueString", "Patient.extension[1].url", "Patient.extension[1].valueString"}},
		{"extension dropped", `{"resourceType":"Patient","id":"p","birthDate":"1970-01-01","_birthDate":{"extension":[{"url":"http://x/t","valueDateTime":"1970-01-01T08:00:00Z"}]}}`,
			`{"resourceType":"Patient","id":"p","birthDate":"1970-01-01"}`,
			[]string{"Patient._birthDate"}},
		{"null in primitive array", `{"resourceType":"Patient","id":"p","name":[{"given":["A",null],"_given":[null,{"id":"g"}]}]}`,
			`{"resourceType":"Patient","id":"p","name":[{"given":["A",null],"_given":[null,{"id":"g"}]}]}`, nil},
		{"boolean changed", `{"resourceType":"Patient","id":"p","active":true}`,
			`{"resourceType":"Patient","id":"p","active":false}`, []string{"Patient.active"}},
		{"source meta kept, server fields ignored",
			`{"resourceType":"Patient","id":"p","meta":{"versionId":"9","profile":["http://x/p"],"tag":[{"system":"s","code":"a"}]}}`,
			`{"resourceType":"Patient","id":"p","meta":{"versionId":"1","lastUpdated":"2026-01-01T00:00:00Z","source":"#abc","tag":[{"system":"srv","code":"z"},{"code":"a","system":"s"}],"profile":["http://x/p","http://srv/q"]}}`, nil},
		{"source tag lost",
			`{"resourceType":"Patient","id":"p","meta":{"tag":[{"system":"s","code":"a"},{"system":"s","code":"b"}]}}`,
			`{"resourceType":"Patient","id":"p","meta":{"versionId":"1","tag":[{"system":"s","code":"a"}]}}`,
			[]string{"Patient.meta.tag[1]"}},
		{"source meta element lost",
			`{"resourceType":"Patient","id":"p","meta":{"source":"urn:src"}}`,
			`{"resourceType":"Patient","id":"p","meta":{"versionId":"1"}}`,
			[]string{"Patient.meta.source"}},
		{"source meta with only server fields, target without meta",
			`{"resourceType":"Patient","id":"p","meta":{"versionId":"1"}}`,
			`{"resourceType":"Patient","id":"p"}`, nil},
		{"meta of a contained resource is compared",
			`{"resourceType":"Observation","id":"o","contained":[{"resourceType":"Patient","id":"c","meta":{"versionId":"1"}}]}`,
			`{"resourceType":"Observation","id":"o","contained":[{"resourceType":"Patient","id":"c","meta":{"versionId":"2"}}]}`,
			[]string{"Observation.contained[0].meta.versionId"}},
		{"key that is not an identifier is not printed",
			`{"resourceType":"Patient","id":"p"}`,
			`{"resourceType":"Patient","id":"p","Jane Doe 1970":1}`,
			[]string{"Patient.?"}},
		{"target not JSON", obs, `{"resourceType":"Observation",`, []string{"Observation"}},
		{"target not an object", obs, `[1]`, []string{"Observation"}},
		{"malformed nested value", obs, `{"resourceType":"Observation","id":"o1","status":"final","valueQuantity":{"value":170.0,"unit":}}`,
			[]string{"Observation"}},
	}
	var c Comparer
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := c.Compare(typeOf(tc.want), []byte(tc.want), []byte(tc.got))
			if !slices.Equal(d.Paths, tc.paths) || d.Omitted != 0 {
				t.Fatalf("paths %q (+%d omitted), want %q", d.Paths, d.Omitted, tc.paths)
			}
			if d.Equal() != (tc.paths == nil) {
				t.Fatalf("Equal() = %v with paths %q", d.Equal(), d.Paths)
			}
		})
	}
}

func typeOf(s string) string {
	_, rest, _ := strings.Cut(s, `"resourceType":"`)
	typ, _, _ := strings.Cut(rest, `"`)
	return typ
}

// TestComparePathsAreNeverValues: whatever differs, the paths name elements
// only (no PHI in a report).
func TestComparePathsAreNeverValues(t *testing.T) {
	want := `{"resourceType":"Patient","id":"p","name":[{"family":"Quimby","given":["Ottoline"]}],"birthDate":"1931-02-03","telecom":[{"value":"555-0199"}]}`
	got := `{"resourceType":"Patient","id":"p","name":[{"family":"Zebediah","given":["Ottolina","X"]}],"birthDate":"1931-02-04","telecom":[{"value":"555-0100"}],"note":[{"text":"Quimby"}]}`
	var c Comparer
	d := c.Compare("Patient", []byte(want), []byte(got))
	all := strings.Join(d.Paths, " ")
	for _, v := range []string{"Quimby", "Zebediah", "Ottolin", "1931", "555"} {
		if strings.Contains(all, v) {
			t.Errorf("a path shows the value %q: %q", v, d.Paths)
		}
	}
	if len(d.Paths) != 6 {
		t.Fatalf("paths %q", d.Paths)
	}
}

func TestCompareCapsPaths(t *testing.T) {
	var want, got strings.Builder
	want.WriteString(`{"resourceType":"Observation","id":"o","component":[`)
	got.WriteString(`{"resourceType":"Observation","id":"o","component":[`)
	for i := range 30 {
		if i > 0 {
			want.WriteByte(',')
			got.WriteByte(',')
		}
		fmt.Fprintf(&want, `{"valueInteger":%d}`, i)
		fmt.Fprintf(&got, `{"valueInteger":%d}`, i+1)
	}
	want.WriteString("]}")
	got.WriteString("]}")
	c := Comparer{MaxPaths: 5}
	d := c.Compare("Observation", []byte(want.String()), []byte(got.String()))
	if len(d.Paths) != 5 || d.Omitted != 25 || d.Paths[4] != "Observation.component[4].valueInteger" {
		t.Fatalf("paths %q omitted %d", d.Paths, d.Omitted)
	}
}

func TestParseDecimal(t *testing.T) {
	cases := []struct {
		in     string
		digits string
		exp    int64
		neg    bool
		ok     bool
	}{
		{"0", "", 0, false, true},
		{"-0.000", "", 0, false, true},
		{"170.0", "17", 1, false, true},
		{"1.7E2", "17", 1, false, true},
		{"17e+1", "17", 1, false, true},
		{"0.0100", "1", -2, false, true},
		{"-12.50e-3", "125", -4, true, true},
		{"007", "7", 0, false, true},
		{"1.", "", 0, false, false},
		{".5", "", 0, false, false},
		{"1e", "", 0, false, false},
		{"1e99999999999999999", "", 0, false, false},
		{"1x", "", 0, false, false},
	}
	for _, tc := range cases {
		d, ok := parseDecimal([]byte(tc.in))
		if ok != tc.ok || ok && (string(d.digits) != tc.digits || d.exp != tc.exp || d.neg != tc.neg) {
			t.Errorf("%s: got %q e%d neg=%v ok=%v", tc.in, d.digits, d.exp, d.neg, ok)
		}
	}
}

// TestCompareSampleAgainstServeShape: every resource of the shared sample
// equals itself as fhirload serve returns it (id, meta first, then the
// source's members, compacted).
func TestCompareSampleAgainstServeShape(t *testing.T) {
	var c Comparer
	n := 0
	for _, f := range []string{"Patient.ndjson.gz", "Observation.ndjson.gz"} {
		eachLine(t, "../testdata/sample/"+f, 2000, func(line []byte) {
			got := serveShape(t, line)
			if d := c.Compare("X", line, got); !d.Equal() {
				t.Fatalf("line %d differs from its stored form at %q", n+1, d.Paths)
			}
			n++
		})
	}
	if n < 2000 {
		t.Fatalf("only %d lines read", n)
	}
}

// serveShape renders a resource the way fhirload serve stores it:
// resourceType, id, meta {versionId, lastUpdated} first, then the other
// members in their order.
func serveShape(t testing.TB, line []byte) []byte {
	ms, ok := jsonscan.AppendMembers(nil, line)
	if !ok {
		t.Fatalf("not an object: %.40s", line)
	}
	var typ, id []byte
	for _, m := range ms {
		switch string(m.Key) {
		case "resourceType":
			typ = m.Value
		case "id":
			id = m.Value
		}
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, `{"resourceType":%s,"id":%s,"meta":{"versionId":"2","lastUpdated":"2026-11-26T10:00:00.000Z"}`, typ, id)
	for _, m := range ms {
		if k := string(m.Key); k != "resourceType" && k != "id" && k != "meta" {
			fmt.Fprintf(&b, `,"%s":%s`, m.Key, m.Value)
		}
	}
	b.WriteByte('}')
	return b.Bytes()
}

func eachLine(t testing.TB, path string, limit int, fn func([]byte)) {
	t.Helper()
	i := 0
	testlines.Each(t, path, func(line []byte) bool {
		if limit > 0 && i == limit {
			return false
		}
		i++
		fn(line)
		return true
	})
}

func FuzzCompare(f *testing.F) {
	f.Add([]byte(`{"resourceType":"Patient","id":"p","meta":{"tag":[{"code":"a"}]},"name":[{"given":["A"]}]}`),
		[]byte(`{"id":"p","resourceType":"Patient","meta":{"versionId":"1"},"name":[{"given":["B",1.0e3]}]}`))
	f.Add([]byte(`{"a":"\u00e9\ud83d"}`), []byte(`{"a":"é"}`))
	f.Add([]byte(`{"a":[[[[1]]]]}`), []byte(`{"a":[[[[1.0]]]],"b":{}}`))
	f.Fuzz(func(t *testing.T, a, b []byte) {
		var c Comparer
		d := c.Compare("X", a, b)
		for _, p := range d.Paths {
			if !strings.HasPrefix(p, "X") {
				t.Fatalf("path %q", p)
			}
		}
		// A value always equals itself.
		if d := c.Compare("X", a, a); !d.Equal() && validNested(a) {
			t.Fatalf("%q differs from itself at %q", a, d.Paths)
		}
	})
}

// validNested reports whether b is an object whose every nested value scans.
func validNested(b []byte) bool {
	b = jsonscan.Trim(b)
	end, ok := jsonscan.ValueEnd(b, 0)
	return ok && end == len(b) && isObject(b)
}
