package deadletter

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"
)

// phiEntries are entries whose lines carry identifying values that no
// listing may print.
func phiEntries() []Entry {
	a := entry("invalid", "file:///data/Patient.ndjson", 12, "run1", t0)
	a.ID = "20250301T020000.000000000Z-aaaaaaaa"
	a.Line = `{"resourceType":"Patient","id":"p12","name":[{"family":"Zimmermannova"}],"birthDate":"1961-07-04"}`
	a.Message = "Patient.name.family\nis required"
	b := entry("retries-exhausted", "s3://b/in/Observation.ndjson.gz", 7, "run1", t0)
	b.ID = "20250301T020000.000000001Z-bbbbbbbb"
	b.ResourceType, b.ResourceID, b.HTTPStatus = "Observation", "o7", 503
	b.Line, b.LineBase64 = MakeLine([]byte("{\"valueQuantity\":{\"value\":187.5},\"note\":\"Zimmermannova\xff\"}"))
	c := entry("invalid", "file:///data/Patient.ndjson", 13, "run1", t0)
	c.ID = "20250301T020000.000000002Z-cccccccc"
	c.ResourceType, c.ResourceID, c.HTTPStatus, c.Message = "", "", 0, ""
	return []Entry{a, b, c}
}

func TestWriteListText(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteList(&buf, phiEntries(), false); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, phi := range []string{"Zimmermannova", "1961-07-04", "187.5", "WmltbWVy"} {
		if strings.Contains(out, phi) {
			t.Errorf("listing shows line contents %q:\n%s", phi, out)
		}
	}
	want := []string{
		// counts per reason first, most frequent first
		"REASON             COUNT",
		"invalid            2",
		"retries-exhausted  1",
		"total              3",
		"",
		"ID                                   REASON             SOURCE:LINE                        RESOURCE        STATUS  MESSAGE",
		"20250301T020000.000000000Z-aaaaaaaa  invalid            file:///data/Patient.ndjson:12     Patient/p12     400     Patient.name.family is required",
		"20250301T020000.000000001Z-bbbbbbbb  retries-exhausted  s3://b/in/Observation.ndjson.gz:7  Observation/o7  503     rejected by target",
		"20250301T020000.000000002Z-cccccccc  invalid            file:///data/Patient.ndjson:13     -               -       -",
	}
	if got := strings.Split(strings.TrimSuffix(out, "\n"), "\n"); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	buf.Reset()
	if err := WriteList(&buf, nil, false); err != nil {
		t.Fatal(err)
	}
	if buf.String() != "REASON  COUNT\ntotal   0\n" {
		t.Errorf("empty listing = %q", buf.String())
	}
}

func TestWriteListJSON(t *testing.T) {
	in := phiEntries()
	var buf bytes.Buffer
	if err := WriteList(&buf, in, true); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(&buf)
	n := 0
	for sc.Scan() {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %d: %v", n+1, err)
		}
		for _, k := range []string{"line", "line_base64"} {
			if _, ok := m[k]; ok {
				t.Errorf("line %d has %q", n+1, k)
			}
		}
		var e Entry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatal(err)
		}
		want := in[n]
		want.Line, want.LineBase64 = "", ""
		if e.ID != want.ID || e.Source != want.Source || e.Reason != want.Reason || e.Transform != want.Transform ||
			!e.FirstFailed.Equal(want.FirstFailed) || string(e.OperationOutcome) != string(want.OperationOutcome) {
			t.Errorf("line %d = %+v, want %+v", n+1, e, want)
		}
		n++
	}
	if n != len(in) {
		t.Errorf("%d JSON lines, want %d", n, len(in))
	}
}

func TestWriteEntry(t *testing.T) {
	e := phiEntries()[0]
	e.Attempts = 2
	e.OperationOutcome = json.RawMessage(`{"resourceType":"OperationOutcome","issue":[
		{"severity":"error","code":"required","diagnostics":"family name missing",
		 "details":{"text":"Patient.name.family: minimum required = 1"},"expression":["Patient.name[0].family"]},
		{"severity":"warning","code":"informational","location":["Patient.birthDate"]}]}`)
	var buf bytes.Buffer
	if err := WriteEntry(&buf, e); err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile("testdata/show.golden")
	if err != nil {
		t.Fatal(err)
	}
	if buf.String() != string(want) {
		t.Errorf("got:\n%s\nwant:\n%s", buf.String(), want)
	}
}

func TestWriteEntryOddOutcomes(t *testing.T) {
	tests := []struct {
		name, outcome, want string
	}{
		{"proxy page kept as a string", `"<html>502</html>"`, "  (not an OperationOutcome) <html>502</html>\n"},
		{"other JSON", `{"message":"Internal"}`, "  (not an OperationOutcome) {\"message\":\"Internal\"}\n"},
		{"issue without fields", `{"resourceType":"OperationOutcome","issue":[{}]}`, "  1. ? ?\n"},
	}
	for _, tc := range tests {
		e := phiEntries()[1]
		e.OperationOutcome = json.RawMessage(tc.outcome)
		var buf bytes.Buffer
		if err := WriteEntry(&buf, e); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(buf.String(), "OperationOutcome:\n"+tc.want) {
			t.Errorf("%s: got\n%s", tc.name, buf.String())
		}
		if !strings.Contains(buf.String(), "not valid UTF-8, base64):\n"+e.LineBase64+"\n") {
			t.Errorf("%s: base64 line missing:\n%s", tc.name, buf.String())
		}
	}
}
