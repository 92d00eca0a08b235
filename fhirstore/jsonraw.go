package fhirstore

import (
	"bytes"
	"errors"
	"strconv"
)

// member is one top-level member of a JSON object: its unquoted key and the
// byte span of its value within the object's bytes.
type member struct {
	key                string
	kstart, start, end int // kstart: the opening quote of the key
}

var errNotObject = errors.New("not a JSON object")

// members lists the members of the compact JSON object b, in order. b must be
// valid, compact JSON (see json.Compact); values are returned as spans so the
// caller can keep their bytes untouched, which is how number literals survive
// a round trip through the store.
func members(b []byte, dst []member) ([]member, error) {
	if len(b) < 2 || b[0] != '{' || b[len(b)-1] != '}' {
		return dst, errNotObject
	}
	i := 1
	for i < len(b)-1 {
		if b[i] == ',' {
			i++
		}
		if b[i] != '"' {
			return dst, errNotObject
		}
		kstart := i
		kend := skipString(b, i)
		key := string(b[i+1 : kend-1])
		if bytes.IndexByte(b[i+1:kend-1], '\\') >= 0 {
			if k, err := strconv.Unquote(string(b[i:kend])); err == nil {
				key = k
			}
		}
		i = kend + 1 // skip ':'
		vend := skipValue(b, i)
		dst = append(dst, member{key: key, kstart: kstart, start: i, end: vend})
		i = vend
	}
	return dst, nil
}

// skipString returns the index just past the JSON string starting at b[i]
// (len(b) when it is not terminated). It jumps from quote to quote
// (bytes.IndexByte) and skips a quote escaped by an odd run of backslashes.
func skipString(b []byte, i int) int {
	i++
	for i < len(b) {
		q := bytes.IndexByte(b[i:], '"')
		if q < 0 {
			return len(b)
		}
		q += i
		n := 0
		for k := q - 1; k >= i && b[k] == '\\'; k-- {
			n++
		}
		if n%2 == 0 {
			return q + 1
		}
		i = q + 1
	}
	return len(b)
}

// skipValue returns the index just past the compact JSON value starting at b[i].
func skipValue(b []byte, i int) int {
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i = skipString(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return i
	default:
		for i < len(b) && b[i] != ',' && b[i] != '}' && b[i] != ']' {
			i++
		}
		return i
	}
}

// find returns the value bytes of the member named key, or nil.
func find(b []byte, ms []member, key string) []byte {
	for _, m := range ms {
		if m.key == key {
			return b[m.start:m.end]
		}
	}
	return nil
}

// stampResource returns a copy of the compact resource object b with its id
// set to id and meta.versionId / meta.lastUpdated set; every other member keeps
// its bytes. The output starts with resourceType, id and meta.
func stampResource(dst, b []byte, ms []member, id, version, lastUpdated string) []byte {
	dst = append(dst, '{')
	first := true
	sep := func() {
		if !first {
			dst = append(dst, ',')
		}
		first = false
	}
	if rt := find(b, ms, "resourceType"); rt != nil {
		sep()
		dst = append(dst, `"resourceType":`...)
		dst = append(dst, rt...)
	}
	sep()
	dst = append(dst, `"id":`...)
	dst = strconv.AppendQuote(dst, id)
	sep()
	dst = append(dst, `"meta":{`...)
	if meta := find(b, ms, "meta"); len(meta) > 2 && meta[0] == '{' {
		var inner [8]member
		mms, err := members(meta, inner[:0])
		if err == nil {
			for _, m := range mms {
				if m.key == "versionId" || m.key == "lastUpdated" {
					continue
				}
				dst = append(dst, meta[m.kstart:m.end]...)
				dst = append(dst, ',')
			}
		}
	}
	dst = append(dst, `"versionId":`...)
	dst = strconv.AppendQuote(dst, version)
	dst = append(dst, `,"lastUpdated":`...)
	dst = strconv.AppendQuote(dst, lastUpdated)
	dst = append(dst, '}')
	for _, m := range ms {
		switch m.key {
		case "resourceType", "id", "meta":
			continue
		}
		dst = append(dst, ',')
		dst = append(dst, b[m.kstart:m.end]...) // `"key":value` as sent
	}
	return append(dst, '}')
}

// compactValid returns the JSON value b without insignificant whitespace, as
// json.Compact would, but without validating: b must be valid JSON (such as a
// json.RawMessage that encoding/json decoded). When b has no whitespace to
// remove it is returned as is, without a copy.
func compactValid(b []byte) []byte {
	var out []byte // nil until the first byte to drop
	for i := 0; i < len(b); {
		switch c := b[i]; c {
		case ' ', '\t', '\n', '\r':
			if out == nil {
				out = append(make([]byte, 0, len(b)), b[:i]...)
			}
			i++
		case '"':
			end := skipString(b, i)
			if out != nil {
				out = append(out, b[i:end]...)
			}
			i = end
		default:
			if out != nil {
				out = append(out, c)
			}
			i++
		}
	}
	if out == nil {
		return b
	}
	return out
}
