package transform

// ScanID returns the resourceType and id of the JSON object on a line without
// validating it: it reads the top-level members until it has both, skipping the values
// of the others with a bracket-and-quote scan. It is the pre-pass of a run (see Index):
// about 100 ns for a line whose resourceType and id come first, as producers write them.
// typ and id alias line (nil when absent; a value with escapes is decoded into a new
// slice); ok is false when the line is not an object, has no string resourceType, or
// is cut short.
func ScanID(line []byte) (typ, id []byte, ok bool) {
	b := stripBOM(line)
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return nil, nil, false
	}
	i++
	for {
		i = skipWS(b, i)
		if i >= len(b) || b[i] != '"' {
			return typ, id, typ != nil && i < len(b) && b[i] == '}'
		}
		ks, ke := scanString(b, i)
		if ke < 0 {
			return nil, nil, false
		}
		key := b[ks:ke]
		i = skipWS(b, ke+1)
		if i >= len(b) || b[i] != ':' {
			return nil, nil, false
		}
		i = skipWS(b, i+1)
		if i >= len(b) {
			return nil, nil, false
		}
		wantType := typ == nil && string(key) == "resourceType"
		wantID := id == nil && string(key) == "id"
		if (wantType || wantID) && b[i] == '"' {
			vs, ve := scanString(b, i)
			if ve < 0 {
				return nil, nil, false
			}
			v := b[vs:ve]
			if containsByte(v, '\\') {
				v = unescape(v) // rare: ids and type names never need escapes
			}
			if wantType {
				typ = v
			} else {
				id = v
			}
			i = ve + 1
			if typ != nil && id != nil {
				return typ, id, true
			}
		} else if i = skipValue(b, i); i < 0 {
			return nil, nil, false
		}
		i = skipWS(b, i)
		if i >= len(b) {
			return nil, nil, false
		}
		switch b[i] {
		case ',':
			i++
		case '}':
			return typ, id, typ != nil
		default:
			return nil, nil, false
		}
	}
}

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// scanString returns the content bounds of the string whose quote is at b[i]; end is -1
// when it is not terminated.
func scanString(b []byte, i int) (start, end int) {
	start = i + 1
	for j := start; j < len(b); j++ {
		switch b[j] {
		case '"':
			return start, j
		case '\\':
			j++
		}
	}
	return start, -1
}

// skipValue returns the index after the value at b[i] (-1 when it is cut short): strings
// by their quotes, objects and arrays by counting brackets outside strings, anything
// else up to the next ',', '}' or ']'.
func skipValue(b []byte, i int) int {
	switch b[i] {
	case '"':
		_, e := scanString(b, i)
		if e < 0 {
			return -1
		}
		return e + 1
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				_, e := scanString(b, j)
				if e < 0 {
					return -1
				}
				j = e
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return -1
	}
	for j := i; j < len(b); j++ {
		switch b[j] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			return j
		}
	}
	return len(b)
}
