package transform

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/fhirload/fhirload/internal/testlines"
)

type corpusCase struct {
	line   int
	reason string // "ok" for a valid line
	loc    string
	body   []byte
}

func loadCorpus(t testing.TB) []corpusCase {
	raw, err := os.ReadFile("testdata/invalid.txt")
	if err != nil {
		t.Fatal(err)
	}
	var cases []corpusCase
	for i, l := range strings.Split(string(raw), "\n") {
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		parts := strings.SplitN(l, "\t", 3)
		if len(parts) != 3 {
			t.Fatalf("testdata/invalid.txt:%d: want 3 tab-separated fields", i+1)
		}
		cases = append(cases, corpusCase{i + 1, parts[0], parts[1], []byte(parts[2])})
	}
	return cases
}

func TestInvalidCorpus(t *testing.T) {
	tr := mustNew(t, Options{})
	for _, c := range loadCorpus(t) {
		_, _, err := tr.NewStream("corpus").Next(c.body)
		if c.reason == "ok" {
			if err != nil {
				t.Errorf("line %d: valid resource rejected: %v", c.line, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("line %d: accepted, want %s at %q", c.line, c.reason, c.loc)
			continue
		}
		e := asError(t, err)
		if e.Reason != c.reason || e.Location != c.loc {
			t.Errorf("line %d: got %s at %q (%s), want %s at %q", c.line, e.Reason, e.Location, e.Message, c.reason, c.loc)
		}
	}
}

func TestHostileInput(t *testing.T) {
	tr := mustNew(t, Options{Profile: ProfileBase})
	obs := `{"resourceType":"Observation","id":"o1","status":"final","code":{"text":"c"}`
	tests := []struct {
		name   string
		line   []byte
		reason string
		msg    string
	}{
		{"100000 deep arrays", []byte(obs + `,"valueString":` + strings.Repeat("[", 100000) + strings.Repeat("]", 100000) + "}"), ReasonParse, "nested deeper"},
		{"100000 deep objects", []byte(obs + `,"extension":[` + strings.Repeat(`{"url":"http://x","extension":[`, 50000) + strings.Repeat("]}", 50000) + "]}"), ReasonParse, "nested deeper"},
		{"100000 deep unknown", []byte(obs + `,"x":` + strings.Repeat("[", 100000) + strings.Repeat("]", 100000) + "}"), ReasonParse, "nested deeper"},
		{"100000 deep contained", []byte(obs + `,"contained":[{"resourceType":"Basic","x":` + strings.Repeat("[", 100000) + strings.Repeat("]", 100000) + "}]}"), ReasonParse, "nested deeper"},
		{"10000-digit decimal", []byte(obs + `,"valueQuantity":{"value":1` + strings.Repeat("0", 10000) + "}}"), "", ""},
		{"10000-digit integer", []byte(obs + `,"valueInteger":` + strings.Repeat("9", 10000) + "}"), ReasonInvalid, "32-bit"},
		{"10000-digit exponent", []byte(obs + `,"valueQuantity":{"value":1e` + strings.Repeat("9", 10000) + "}}"), "", ""},
		{"invalid UTF-8", []byte(obs + ",\"valueString\":\"a\xff\"}"), ReasonParse, "UTF-8"},
		{"invalid UTF-8 in unknown key", []byte(obs + ",\"\xc3\x28\":1}"), ReasonParse, "UTF-8"},
		{"control char", []byte(obs + ",\"valueString\":\"a\x01\"}"), ReasonParse, "control"},
		{"BOM", append([]byte("\xef\xbb\xbf"), obs+"}"...), "", ""},
		{"empty", []byte(""), ReasonParse, "empty"},
		{"truncated escape", []byte(obs + `,"valueString":"\u12`), ReasonParse, "escape"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := tr.NewStream("x").Next(tt.line)
			if tt.reason == "" {
				if err != nil {
					t.Fatalf("rejected: %v", err)
				}
				return
			}
			e := asError(t, err)
			if e.Reason != tt.reason || !strings.Contains(e.Message, tt.msg) {
				t.Fatalf("got %v, want %s containing %q", e, tt.reason, tt.msg)
			}
		})
	}
}

// TestErrorsCarryNoValues: the values of rejected elements never appear in errors.
func TestErrorsCarryNoValues(t *testing.T) {
	tr := mustNew(t, Options{})
	secret := "Zyxwvut9876"
	lines := []string{
		`{"resourceType":"Patient","id":"p1","name":[{"family":"F","given":["G"]}],"birthDate":"` + secret + `"}`,
		`{"resourceType":"Patient","id":"p1","name":[{"family":"F","given":["G"]}],"gender":"` + secret + `"}`,
		`{"resourceType":"Patient","id":"` + secret + `!","name":[{"family":"F","given":["G"]}]}`,
		`{"resourceType":"Patient","id":"p1","name":[{"family":"F","given":["G"]}],"` + secret + ` x":"y"}`,
		`{"resourceType":"Patient","id":"p1","name":[{"family":"F","given":["G"]}],"managingOrganization":{"reference":"` + secret + `"}}`,
		`{"resourceType":"` + secret + `","id":"p1"}`,
		`{"resourceType":"Patient","id":"p1","name":[{"family":"F","given":["G"]}],"birthDate":"` + secret + `}`,
		`{"resourceType":"Condition","id":"c1","subject":{"reference":"Patient/p1"},"clinicalStatus":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/condition-clinical","code":"` + secret + `"}]}}`,
		`{"resourceType":"Claim","id":"c1","status":"active","type":{"text":"t"},"use":"claim","patient":{"reference":"Patient/p1"},"created":"2020-01-01","provider":{"reference":"Organization/o1"},"priority":{"text":"normal"},"insurance":[{"sequence":1,"focal":true,"coverage":{"reference":"Coverage/c"}}],"total":{"value":1,"currency":"` + secret + `"}}`,
		`{"resourceType":"Encounter","id":"e1","status":"finished","class":{"code":"AMB"},"contained":[{"resourceType":"` + secret + `"}]}`,
		`{"resourceType":"DocumentReference","id":"d1","status":"current","content":[{"attachment":{"contentType":"` + secret + `"}}]}`,
	}
	for i, l := range lines {
		_, _, err := tr.NewStream("x").Next([]byte(l))
		if err == nil {
			t.Fatalf("line %d accepted", i)
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("line %d: error %q leaks the value", i, err)
		}
	}
	// Bundle documents and format sniffing.
	docs := []string{
		`{"resourceType":"` + secret + `","entry":[]}`,
		`{"resourceType":"Bundle","entry":[{"resource":"` + secret + `"},{"request":{"method":"` + secret + `"}}]}`,
		`{"resourceType":"Bundle","entry":[{"resource":{"x":"` + secret + "\x01" + `"}}]}`,
	}
	for i, doc := range docs {
		d := NewBundleDecoder(strings.NewReader(doc), BundleOptions{})
		for {
			e, err := d.Next()
			if err != nil {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("document %d: error %q leaks a value", i, err)
				}
				break
			}
			if e.Err != nil && strings.Contains(e.Err.Error(), secret) {
				t.Errorf("document %d: entry error %q leaks a value", i, e.Err)
			}
		}
	}
	if _, err := Sniff([]byte("{\n \"resourceType\": \""+secret+"\"\n}"), "x.json"); err == nil || strings.Contains(err.Error(), secret) {
		t.Errorf("Sniff: %v", err)
	}
}

func TestNumberLiteralsKept(t *testing.T) {
	for _, ids := range []string{IDsKeep, IDsDerive} {
		tr := mustNew(t, Options{IDs: ids})
		for _, line := range testlines.All(t, "../testdata/sample/Patient.ndjson.gz")[:5] {
			if !bytes.Contains(line, []byte(`"valueDecimal":`)) {
				continue
			}
			res, _, err := tr.NewStream("p").Next(line)
			if err != nil {
				t.Fatal(err)
			}
			for _, lit := range [][]byte{[]byte(`"valueDecimal":56.0`), []byte(`"valueDecimal":0.0`)} {
				if bytes.Contains(line, lit) != bytes.Contains(res.Body, lit) {
					t.Errorf("ids=%s: literal %s not kept", ids, lit)
				}
			}
		}
		line := []byte(`{"resourceType":"Observation","id":"o1","status":"final","code":{"text":"c"},"valueQuantity":{"value":1.50E+3},"subject":{"reference":"urn:uuid:6b3c1e52-8a4d-4b0e-9d27-51c38e0a7f14"},"component":[{"code":{"text":"c"},"valueQuantity":{"value":-0.041849059593142224}}]}`)
		res, _, err := tr.NewStream("o").Next(line)
		if err != nil {
			t.Fatal(err)
		}
		for _, lit := range []string{`"value":1.50E+3`, `"value":-0.041849059593142224`} {
			if !bytes.Contains(res.Body, []byte(lit)) {
				t.Errorf("ids=%s: %s not kept in %s", ids, lit, res.Body)
			}
		}
	}
}

func TestBodyDoesNotAliasLine(t *testing.T) {
	tr := mustNew(t, Options{})
	line := []byte(`{"resourceType":"Observation","id":"o1","status":"final","code":{"text":"c"}}`)
	res, _, err := tr.NewStream("o").Next(line)
	if err != nil {
		t.Fatal(err)
	}
	want := string(line)
	for i := range line {
		line[i] = 'x'
	}
	if string(res.Body) != want || res.ID != "o1" || res.Type != "Observation" {
		t.Fatalf("result changed with the line buffer: %+v", res)
	}
}
