package transform

import (
	"bytes"
	"strings"
	"unicode/utf8"

	"github.com/fhirload/fhirload/registry"
)

// Sniffed is what Sniff found out about an object.
type Sniffed struct {
	Format string // FormatFHIR (NDJSON), FormatBundle or FormatCSV
	// BOM is true when the data starts with a UTF-8 byte order mark (accepted; the line
	// reader and the transformer skip it).
	BOM bool
	// CROnly is true when lines end in a carriage return alone (classic Mac OS): no line
	// feed in the head, at least one CR. Whether to split on CR is the reader's call.
	CROnly bool
}

// Sniff says which format an object is, from its first bytes after decompression (a
// few KiB; 64 KiB is plenty) and its name: NDJSON (one resource per line), a Bundle
// document (a JSON object whose resourceType is Bundle, pretty-printed or not, in a
// .json file or spanning lines) or CSV (a .csv name, or a first line that is not JSON).
// It rejects, with a *Error (reason parse) naming what it found, what none of them can
// be: UTF-16 and UTF-32 text, a JSON array, a pretty-printed resource that is not a
// Bundle. An empty head is NDJSON (no lines).
func Sniff(head []byte, name string) (Sniffed, error) {
	var s Sniffed
	reject := func(msg string) (Sniffed, error) {
		return Sniffed{}, &Error{Reason: ReasonParse, Message: msg}
	}
	switch {
	case bytes.HasPrefix(head, []byte{0xFF, 0xFE, 0, 0}):
		return reject("UTF-32 LE (BOM): NDJSON must be UTF-8")
	case bytes.HasPrefix(head, []byte{0, 0, 0xFE, 0xFF}):
		return reject("UTF-32 BE (BOM): NDJSON must be UTF-8")
	case bytes.HasPrefix(head, []byte{0xFF, 0xFE}):
		return reject("UTF-16 LE (BOM): NDJSON must be UTF-8")
	case bytes.HasPrefix(head, []byte{0xFE, 0xFF}):
		return reject("UTF-16 BE (BOM): NDJSON must be UTF-8")
	case bytes.HasPrefix(head, []byte{0xEF, 0xBB, 0xBF}):
		s.BOM = true
		head = head[3:]
	}
	if len(head) >= 4 {
		switch {
		case head[0] == 0 && head[1] == 0 && head[2] == 0 && head[3] != 0:
			return reject("UTF-32 BE (no BOM): NDJSON must be UTF-8")
		case head[0] != 0 && head[1] == 0 && head[2] == 0 && head[3] == 0:
			return reject("UTF-32 LE (no BOM): NDJSON must be UTF-8")
		case head[0] == 0 && head[1] != 0 && head[2] == 0 && head[3] != 0:
			return reject("UTF-16 BE (no BOM): NDJSON must be UTF-8")
		case head[0] != 0 && head[1] == 0 && head[2] != 0 && head[3] == 0:
			return reject("UTF-16 LE (no BOM): NDJSON must be UTF-8")
		}
	}
	s.CROnly = bytes.IndexByte(head, '\n') < 0 && bytes.IndexByte(head, '\r') >= 0
	lower := strings.ToLower(name)
	lower = strings.TrimSuffix(lower, ".gz")
	i := skipWS(head, 0)
	if i == len(head) {
		s.Format = FormatFHIR
		if strings.HasSuffix(lower, ".csv") {
			s.Format = FormatCSV
		}
		return s, nil
	}
	switch head[i] {
	case '[':
		return reject("a JSON array, not NDJSON (one JSON object per line)")
	case '{':
	default:
		if strings.HasSuffix(lower, ".csv") || isCSVHeader(head[i:]) {
			s.Format = FormatCSV
			return s, nil
		}
		if bytes.IndexByte(head, 0) >= 0 || !utf8.Valid(head[:validUTF8Prefix(head)]) {
			return reject("neither NDJSON, a Bundle document nor CSV (binary data)")
		}
		// Text that does not start with a JSON object: NDJSON whose lines are
		// judged one by one (a damaged first line must not cost the others).
		s.Format = FormatFHIR
		return s, nil
	}
	typ, oneLine := sniffObject(head[i:])
	ndjsonName := strings.HasSuffix(lower, ".ndjson") || strings.HasSuffix(lower, ".jsonl")
	switch {
	case typ == "Bundle" && (!oneLine || !ndjsonName):
		s.Format = FormatBundle
	case oneLine:
		s.Format = FormatFHIR
	case typ != "":
		return reject("a multi-line JSON document (a pretty-printed " + typ + "), not NDJSON (one resource per line)")
	default:
		return reject("a multi-line JSON document, not NDJSON (one resource per line)")
	}
	return s, nil
}

// validUTF8Prefix is len(b) less a rune the head may have cut in two.
func validUTF8Prefix(b []byte) int {
	for n := len(b); n > 0 && len(b)-n < utf8.UTFMax; n-- {
		if utf8.RuneStart(b[n-1]) {
			if utf8.FullRune(b[n-1:]) {
				return len(b)
			}
			return n - 1
		}
	}
	return len(b)
}

// sniffObject reads the top-level members of the object at b[0] as far as b goes. It
// returns its resourceType (when it is a known type name) and whether the object ends
// on its first line (or the head ends before the line does: a long NDJSON line).
func sniffObject(b []byte) (typ string, oneLine bool) {
	lineEnd := bytes.IndexAny(b, "\r\n")
	if lineEnd < 0 {
		lineEnd = len(b)
	}
	if t, _, _ := ScanID(b[:lineEnd]); t != nil {
		typ = string(t)
	}
	if end := skipValue(b, 0); end >= 0 && end <= lineEnd {
		oneLine = true
	} else if end < 0 && lineEnd == len(b) {
		oneLine = true // the head ends inside the first line
	}
	if typ == "" {
		// The resourceType may be on a later line of a pretty-printed document.
		typ = topLevelType(b)
	}
	if typ != "" && !registry.R4().IsResourceType(typ) {
		typ = "" // never echo a value that is not a type name
	}
	return typ, oneLine
}

// topLevelType finds "resourceType": "X" among the top-level members in b, skipping
// nested values; "" when the head does not reach it.
func topLevelType(b []byte) string {
	i := 1
	for {
		i = skipWS(b, i)
		if i >= len(b) || b[i] != '"' {
			return ""
		}
		ks, ke := scanString(b, i)
		if ke < 0 {
			return ""
		}
		key := b[ks:ke]
		i = skipWS(b, ke+1)
		if i >= len(b) || b[i] != ':' {
			return ""
		}
		i = skipWS(b, i+1)
		if i >= len(b) {
			return ""
		}
		if string(key) == "resourceType" && b[i] == '"' {
			vs, ve := scanString(b, i)
			if ve < 0 {
				return ""
			}
			return string(b[vs:ve])
		}
		if i = skipValue(b, i); i < 0 {
			return ""
		}
		i = skipWS(b, i)
		if i >= len(b) || b[i] != ',' {
			return ""
		}
		i++
	}
}

// isCSVHeader reports a first line that looks like a CSV header: printable text with a
// comma or a semicolon or a tab.
func isCSVHeader(b []byte) bool {
	end := bytes.IndexAny(b, "\r\n")
	if end < 0 {
		end = len(b)
	}
	line := b[:end]
	if len(line) == 0 {
		return false
	}
	for _, c := range line {
		if c < 0x20 && c != '\t' {
			return false
		}
	}
	return bytes.ContainsAny(line, ",;\t")
}
