package transform

import (
	"io"
	"strings"
	"testing"
)

func TestSniff(t *testing.T) {
	utf16 := func(s string, le bool) string {
		var b []byte
		for _, c := range []byte(s) {
			if le {
				b = append(b, c, 0)
			} else {
				b = append(b, 0, c)
			}
		}
		return string(b)
	}
	obs := `{"resourceType":"Observation","id":"o1","status":"final","code":{"text":"c"}}`
	pretty := "{\n  \"resourceType\": \"Patient\",\n  \"id\": \"p1\"\n}\n"
	bundle := "{\n  \"resourceType\": \"Bundle\",\n  \"type\": \"transaction\",\n  \"entry\": [\n"
	tests := []struct {
		name, head, file string
		format           string
		bom, cr          bool
		err              string
	}{
		{"ndjson", obs + "\n" + obs + "\n", "Observation.ndjson", FormatFHIR, false, false, ""},
		{"ndjson crlf", obs + "\r\n" + obs, "x.ndjson", FormatFHIR, false, false, ""},
		{"ndjson cr only", obs + "\r" + obs + "\r", "x.ndjson", FormatFHIR, false, true, ""},
		{"ndjson bom", "\ufeff" + obs + "\n", "x.ndjson", FormatFHIR, true, false, ""},
		{"ndjson long first line cut by the head", obs[:40], "x.ndjson", FormatFHIR, false, false, ""},
		{"empty", "", "x.ndjson", FormatFHIR, false, false, ""},
		{"blank lines first", "\n\n" + obs, "x.ndjson", FormatFHIR, false, false, ""},
		{"pretty bundle", bundle, "Bernie.json", FormatBundle, false, false, ""},
		{"pretty bundle named ndjson", bundle, "b.ndjson", FormatBundle, false, false, ""},
		{"one-line bundle in a .json file", `{"resourceType":"Bundle","type":"batch","entry":[]}` + "\n", "b.json", FormatBundle, false, false, ""},
		{"one-line bundles in an .ndjson file", `{"resourceType":"Bundle","type":"document"}` + "\n", "b.ndjson.gz", FormatFHIR, false, false, ""},
		{"bundle with resourceType after a long member", "{\n \"id\": \"b\",\n \"meta\": {\"tag\": [{\"code\": \"x\"}]},\n \"resourceType\": \"Bundle\",\n \"entry\": [", "b.json", FormatBundle, false, false, ""},
		{"csv by name", "DATE,PATIENT\n2020,x\n", "observations.csv.gz", FormatCSV, false, false, ""},
		{"csv by header", "Id,BIRTHDATE,FIRST\n", "patients.txt", FormatCSV, false, false, ""},
		{"utf-16 le bom", "\xff\xfe" + utf16(obs, true), "x.ndjson", "", false, false, "UTF-16 LE (BOM): NDJSON must be UTF-8"},
		{"utf-16 be bom", "\xfe\xff" + utf16(obs, false), "x.ndjson", "", false, false, "UTF-16 BE (BOM): NDJSON must be UTF-8"},
		{"utf-32 le bom", "\xff\xfe\x00\x00{\x00\x00\x00", "x.ndjson", "", false, false, "UTF-32 LE (BOM): NDJSON must be UTF-8"},
		{"utf-32 be bom", "\x00\x00\xfe\xff\x00\x00\x00{", "x.ndjson", "", false, false, "UTF-32 BE (BOM): NDJSON must be UTF-8"},
		{"utf-16 le without bom", utf16(obs, true), "x.ndjson", "", false, false, "UTF-16 LE (no BOM)"},
		{"utf-16 be without bom", utf16(obs, false), "x.ndjson", "", false, false, "UTF-16 BE (no BOM)"},
		{"json array", "[\n" + obs + "\n]", "x.json", "", false, false, "a JSON array, not NDJSON"},
		{"pretty resource", pretty, "p.json", "", false, false, "a multi-line JSON document (a pretty-printed Patient), not NDJSON"},
		{"pretty unknown", "{\n \"resourceType\": \"Nope\"\n}", "p.json", "", false, false, "a multi-line JSON document, not NDJSON"},
		{"pretty value is not echoed", "{\n \"resourceType\": \"Jane Doe\"\n}", "p.json", "", false, false, "a multi-line JSON document, not NDJSON"},
		{"binary", "\x1f\x8b\x08\x00", "x.ndjson", "", false, false, "neither NDJSON"},
		{"damaged first line: lines judged one by one", "garbage\n" + obs + "\n", "x.ndjson", "fhir", false, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Sniff([]byte(tt.head), tt.file)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("got %+v, %v; want error %q", s, err, tt.err)
				}
				if e := asError(t, err); e.Reason != ReasonParse || strings.Contains(e.Error(), "Jane") {
					t.Fatalf("error %v", e)
				}
				return
			}
			if err != nil || s.Format != tt.format || s.BOM != tt.bom || s.CROnly != tt.cr {
				t.Fatalf("got %+v, %v; want %s bom=%v cr=%v", s, err, tt.format, tt.bom, tt.cr)
			}
		})
	}
}

// TestBundleDecoder: entries, their index, offset, fullUrl and method; entry errors that
// do not stop the document; document errors that do; a small buffer forces refills.
func TestBundleDecoder(t *testing.T) {
	doc := "\ufeff{\n \"resourceType\": \"Bundle\", \"id\": \"b\", \"meta\": {\"tag\": [{\"code\": \"}]\"}]},\n \"type\": \"transaction\",\n" +
		" \"entry\": [\n" +
		"  {\"fullUrl\": \"urn:uuid:" + uuidX + "\", \"resource\": {\"resourceType\": \"Patient\",\n \"name\": [{\"family\": \"F\\u00e9\", \"given\": [\"G\"]}]}, \"request\": {\"method\": \"POST\", \"url\": \"Patient\"}},\n" +
		"  {\"request\": {\"method\": \"DELETE\", \"url\": \"Patient/x\"}},\n" +
		"  {\"resource\": [1, 2]},\n" +
		"  {\"resource\": {\"resourceType\": \"Observation\", \"id\": \"o1\", \"status\": \"final\", \"code\": {\"text\": \"c\"}, \"valueQuantity\": {\"value\": -1.5e+3}}, \"fullUrl\": \"http://x/Observation/o1\"}\n" +
		" ],\n \"total\": 4\n}\n"
	type want struct {
		index    int
		fullURL  string
		method   string
		resource string
		err      string
	}
	wants := []want{
		{0, "urn:uuid:" + uuidX, "POST", "{\"resourceType\": \"Patient\",\n \"name\": [{\"family\": \"F\\u00e9\", \"given\": [\"G\"]}]}", ""},
		{1, "", "DELETE", "", "Bundle.entry[1]: entry has no resource"},
		{2, "", "", "", "Bundle.entry[2].resource: resource is not a JSON object"},
		{3, "http://x/Observation/o1", "", `{"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "c"}, "valueQuantity": {"value": -1.5e+3}}`, ""},
	}
	for _, chunk := range []int{1, 7, 1 << 20} {
		d := NewBundleDecoder(&chunkReader{s: doc, n: chunk}, BundleOptions{})
		for _, w := range wants {
			e, err := d.Next()
			if err != nil {
				t.Fatalf("chunk %d: entry %d: %v", chunk, w.index, err)
			}
			gotErr := ""
			if e.Err != nil {
				gotErr = e.Err.Error()
			}
			if e.Index != w.index || e.FullURL != w.fullURL || e.Method != w.method || string(e.Resource) != w.resource || !strings.Contains(gotErr, w.err) || (w.err == "") != (e.Err == nil) {
				t.Fatalf("chunk %d: got %+v (%s), want %+v", chunk, e, e.Resource, w)
			}
			if e.Resource != nil && doc[e.Offset] != '{' {
				t.Fatalf("offset %d does not point at the entry", e.Offset)
			}
		}
		if _, err := d.Next(); err != io.EOF {
			t.Fatalf("chunk %d: after the last entry: %v", chunk, err)
		}
		if d.Type() != "transaction" {
			t.Fatalf("type %q", d.Type())
		}
	}
}

type chunkReader struct {
	s string
	n int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.s) == 0 {
		return 0, io.EOF
	}
	n := min(r.n, len(p), len(r.s))
	copy(p, r.s[:n])
	r.s = r.s[n:]
	return n, nil
}

func TestBundleDecoderErrors(t *testing.T) {
	entry := `{"resource":{"resourceType":"Patient","id":"p"}}`
	tests := []struct {
		name, doc string
		entries   int // read before the error
		err       string
	}{
		{"empty", "", 0, "empty document"},
		{"array", "[]", 0, "not a JSON object"},
		{"not a bundle", `{"resourceType":"Patient","entry":[]}`, 0, "not a Bundle"},
		{"entry first", `{"entry":[` + entry + `],"resourceType":"Bundle"}`, 0, "entry before resourceType"},
		{"no resourceType", `{"type":"batch"}`, 0, "resourceType missing"},
		{"truncated in an entry", `{"resourceType":"Bundle","entry":[` + entry + `,{"resource":{"resourceType":"Pat`, 1, "Bundle.entry[1]: unexpected end"},
		{"truncated after entries", `{"resourceType":"Bundle","entry":[` + entry + `]`, 1, "unexpected end"},
		{"garbage after", `{"resourceType":"Bundle","entry":[` + entry + `]} x`, 1, "data after the Bundle"},
		{"bad number", `{"resourceType":"Bundle","total":01,"entry":[]}`, 0, "expected ',' or '}'"},
		{"bad exponent", `{"resourceType":"Bundle","total":1e,"entry":[]}`, 0, "invalid number"},
		{"deep", `{"resourceType":"Bundle","x":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`, 0, "nested deeper"},
		{"invalid utf-8", "{\"resourceType\":\"Bundle\",\"x\":\"\xff\"}", 0, "invalid UTF-8"},
		{"entry not an array", `{"resourceType":"Bundle","entry":{}}`, 0, "must be an array"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := NewBundleDecoder(strings.NewReader(tt.doc), BundleOptions{})
			for i := 0; i < tt.entries; i++ {
				if e, err := d.Next(); err != nil || e.Err != nil {
					t.Fatalf("entry %d: %v %v", i, err, e)
				}
			}
			_, err := d.Next()
			if err == nil || err == io.EOF || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("got %v, want %q", err, tt.err)
			}
			if _, again := d.Next(); again != err {
				t.Fatalf("the error is not sticky: %v", again)
			}
		})
	}
}

// TestBundleDecoderBoundedMemory: an entry larger than the limit is skipped (not held)
// and reported; the entries around it come through; the buffer stays near the limit.
func TestBundleDecoderBoundedMemory(t *testing.T) {
	big := `{"resource":{"resourceType":"Binary","id":"b","contentType":"text/plain","data":"` + strings.Repeat("QUJD", 1<<18) + `"}}`
	small := `{"resource":{"resourceType":"Patient","id":"p"}}`
	doc := `{"resourceType":"Bundle","type":"collection","entry":[` + small + "," + big + "," + small + `]}`
	d := NewBundleDecoder(strings.NewReader(doc), BundleOptions{MaxEntryBytes: 64 << 10})
	var got []string
	for {
		e, err := d.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if e.Err != nil {
			got = append(got, e.Err.Error())
		} else {
			got = append(got, string(e.Resource))
		}
	}
	if len(got) != 3 || !strings.Contains(got[1], "Bundle.entry[1]: entry larger than 65536 bytes") || got[2] != `{"resourceType":"Patient","id":"p"}` {
		t.Fatalf("got %q", got)
	}
	if cap(d.buf) > 256<<10 {
		t.Fatalf("buffer grew to %d bytes for a 64 KiB limit", cap(d.buf))
	}
}

func TestAppendCompact(t *testing.T) {
	in := "{\n  \"a\" : [ 1 , 2.50 ],\r\n\t\"b\": \"x y \\\" z\",\n \"c\": {} }"
	want := `{"a":[1,2.50],"b":"x y \" z","c":{}}`
	if got := string(AppendCompact(nil, []byte(in))); got != want {
		t.Fatalf("got %s", got)
	}
}
