package fhirstore

import (
	"bytes"
	"encoding/json"
)

// Decoding of the few elements the store indexes, straight from compact,
// valid JSON (see members): no reflection, no copies of what is skipped.
// Shapes follow encoding/json: null decodes to the zero value, a value of the
// wrong JSON type is an error, unknown members are ignored. Member names
// match exactly (FHIR names are case-sensitive); the last of duplicate
// members wins.

// isNull reports a JSON null, or no value at all (a member that is absent).
func isNull(raw []byte) bool { return len(raw) == 0 || string(raw) == "null" }

// jstr decodes a JSON string or null.
func jstr(raw []byte) (string, bool) {
	if isNull(raw) {
		return "", true
	}
	if len(raw) < 2 || raw[0] != '"' {
		return "", false
	}
	if in := raw[1 : len(raw)-1]; bytes.IndexByte(in, '\\') < 0 {
		return string(in), true
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

// jstrs decodes an array of strings, or null.
func jstrs(raw []byte) ([]string, bool) {
	var out []string
	ok := jarr(raw, func(el []byte) bool {
		s, ok := jstr(el)
		out = append(out, s)
		return ok
	})
	return out, ok
}

// jobj calls fn for each member of a JSON object (none for null) until fn
// returns false; it reports false for a value that is not an object and
// when fn did.
func jobj(raw []byte, fn func(key string, val []byte) bool) bool {
	if isNull(raw) {
		return true
	}
	var buf [16]member
	ms, err := members(raw, buf[:0])
	if err != nil {
		return false
	}
	for _, m := range ms {
		if !fn(m.key, raw[m.start:m.end]) {
			return false
		}
	}
	return true
}

// jarr calls fn for each element of a JSON array (none for null) until fn
// returns false; it reports false for a value that is not an array and when
// fn did.
func jarr(raw []byte, fn func(el []byte) bool) bool {
	if isNull(raw) {
		return true
	}
	if len(raw) < 2 || raw[0] != '[' || raw[len(raw)-1] != ']' {
		return false
	}
	for i := 1; i < len(raw)-1; {
		if raw[i] == ',' {
			i++
		}
		end := skipValue(raw, i)
		if !fn(raw[i:end]) {
			return false
		}
		i = end
	}
	return true
}

// jfields decodes the string members of a JSON object named in names into
// the matching dst entries.
func jfields(raw []byte, names []string, dst []*string) bool {
	return jobj(raw, func(k string, v []byte) bool {
		for i, n := range names {
			if k == n {
				s, ok := jstr(v)
				*dst[i] = s
				return ok
			}
		}
		return true
	})
}
