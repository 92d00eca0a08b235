package fhirstore

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// parsed is a resource body checked and indexed for writing.
type parsed struct {
	typ  string   // resourceType
	id   string   // the body's id, "" when absent
	body []byte   // compact JSON
	ms   []member // top-level members of body
	rows []indexRow
	keys []byte // rows as stored in resources.keys (encodeRows)
}

func badRequest(format string, args ...any) *fhirError {
	return errf(http.StatusBadRequest, "invalid", format, args...)
}

// parseResource validates body and extracts its search-index rows. When
// compact is set, body is known to be valid, compact JSON (a Bundle entry:
// decodeBundle checked and compacted the whole Bundle) and is used as is.
func parseResource(body []byte, compact bool) (*parsed, *fhirError) {
	p := &parsed{}
	if compact {
		p.body = body
	} else {
		var buf bytes.Buffer
		buf.Grow(len(body))
		if err := json.Compact(&buf, body); err != nil {
			return nil, badRequest("Malformed JSON: the request body is not valid JSON.")
		}
		p.body = buf.Bytes()
	}
	var err error
	if p.ms, err = members(p.body, make([]member, 0, 24)); err != nil {
		return nil, badRequest("The request body must be a JSON object (a FHIR resource).")
	}
	var ok bool
	if p.typ, ok = jstr(find(p.body, p.ms, "resourceType")); !ok || p.typ == "" {
		return nil, badRequest("The resource has no resourceType.")
	}
	if !knownType(p.typ) {
		return nil, badRequest("Unknown resourceType %q.", safeName(p.typ))
	}
	if raw := find(p.body, p.ms, "id"); raw != nil {
		if p.id, ok = jstr(raw); !ok || !validID(p.id) {
			return nil, badRequest("The resource id must be 1-64 characters of A-Z a-z 0-9 - and '.'.")
		}
	}
	if raw := find(p.body, p.ms, "meta"); raw != nil && raw[0] != '{' {
		return nil, badRequest("%s.meta must be an object.", p.typ)
	}
	if e := p.index(); e != nil {
		return nil, e
	}
	p.keys = encodeRows(p.rows)
	return p, nil
}

// encodeRows encodes index rows for resources.keys: per row, uvarint k,
// then 's' and two length-prefixed strings, 'd' and two varints, or 'n',
// the 8 bytes of a float64 and a length-prefixed string. nil when there
// are none.
func encodeRows(rows []indexRow) []byte {
	if len(rows) == 0 {
		return nil
	}
	b := make([]byte, 0, 64*len(rows))
	for _, r := range rows {
		b = binary.AppendUvarint(b, uint64(r.k))
		b = append(b, r.tag)
		switch r.tag {
		case 'd':
			b = binary.AppendVarint(b, r.lo)
			b = binary.AppendVarint(b, r.hi)
		case 'n':
			b = binary.LittleEndian.AppendUint64(b, math.Float64bits(r.f))
			b = binary.AppendUvarint(b, uint64(len(r.s2)))
			b = append(b, r.s2...)
		default:
			b = binary.AppendUvarint(b, uint64(len(r.s1)))
			b = append(b, r.s1...)
			b = binary.AppendUvarint(b, uint64(len(r.s2)))
			b = append(b, r.s2...)
		}
	}
	return b
}

// keyRow is one decoded row of resources.keys: the idx columns but rid.
type keyRow struct {
	k    int64
	a, b any // strings; int64s for dates; float64 and string for numbers
}

// decodeRows decodes what encodeRows wrote. It stops at the first malformed
// byte (which encodeRows never writes).
func decodeRows(b []byte) []keyRow { return decodeRowsOf(b, nil) }

// decodeRowsOf decodes the rows of resources.keys whose key is one of
// only (every row when only is nil), skipping the others without
// allocating: a sort reads one or two keys of every match.
func decodeRowsOf(b []byte, only []int64) []keyRow {
	var out []keyRow
	str := func() (string, bool) {
		n, w := binary.Uvarint(b)
		if w <= 0 || uint64(len(b)-w) < n {
			return "", false
		}
		s := string(b[w : w+int(n)])
		b = b[w+int(n):]
		return s, true
	}
	num := func() (int64, bool) {
		v, w := binary.Varint(b)
		if w <= 0 {
			return 0, false
		}
		b = b[w:]
		return v, true
	}
	for len(b) > 0 {
		k, w := binary.Uvarint(b)
		if w <= 0 || w >= len(b) {
			break
		}
		tag := b[w]
		b = b[w+1:]
		if only != nil && !slices.Contains(only, int64(k)) {
			if !skipRow(&b, tag) {
				break
			}
			continue
		}
		r := keyRow{k: int64(k)}
		var ok1, ok2 bool
		switch tag {
		case 's':
			var x, y string
			x, ok1 = str()
			y, ok2 = str()
			r.a, r.b = x, y
		case 'd':
			var x, y int64
			x, ok1 = num()
			y, ok2 = num()
			r.a, r.b = x, y
		case 'n':
			var y string
			if len(b) >= 8 {
				r.a, ok1 = math.Float64frombits(binary.LittleEndian.Uint64(b)), true
				b = b[8:]
			}
			y, ok2 = str()
			r.b = y
		}
		if !ok1 || !ok2 {
			break
		}
		out = append(out, r)
	}
	return out
}

// skipRow advances *b past the values of a row of the given tag; false
// when they are truncated.
func skipRow(b *[]byte, tag byte) bool {
	str := func() bool {
		n, w := binary.Uvarint(*b)
		if w <= 0 || uint64(len(*b)-w) < n {
			return false
		}
		*b = (*b)[w+int(n):]
		return true
	}
	num := func() bool {
		_, w := binary.Varint(*b)
		if w <= 0 {
			return false
		}
		*b = (*b)[w:]
		return true
	}
	switch tag {
	case 's':
		if !str() {
			return false
		}
		return str()
	case 'd':
		if !num() {
			return false
		}
		return num()
	case 'n':
		if len(*b) < 8 {
			return false
		}
		*b = (*b)[8:]
		return str()
	}
	return false
}

// safeName returns s when it looks like a FHIR name, else a placeholder, so
// that echoing client input in errors cannot leak arbitrary content.
func safeName(s string) string {
	if len(s) > 64 {
		return "(invalid)"
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-' || c == ':' || c == '.') {
			return "(invalid)"
		}
	}
	return s
}

// validID reports whether id is a FHIR logical id.
func validID(id string) bool {
	if len(id) == 0 || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// normalizeString is the form string search compares: lower case, runs of
// spaces collapsed. Accents are not folded.
func normalizeString(s string) string {
	plain := true // lower case ASCII, single spaces inside, none at the ends
	for i := 0; i < len(s) && plain; i++ {
		c := s[i]
		plain = c >= 0x21 && c < 0x7f && !('A' <= c && c <= 'Z') || c == ' ' && i > 0 && i < len(s)-1 && s[i-1] != ' '
	}
	if plain {
		return s
	}
	return strings.ToLower(strings.Join(strings.Fields(s), " "))
}

// splitReference returns the type and id of a reference: "Patient/1",
// "Patient/1/_history/2" and absolute URLs give ("Patient", "1"); anything
// else (urn:uuid:…, a bare id) is returned whole as the id with no type.
func splitReference(ref string) (typ, id string) {
	if i := strings.Index(ref, "/_history/"); i >= 0 {
		ref = ref[:i]
	}
	if strings.HasPrefix(ref, "urn:") {
		return "", ref
	}
	parts := strings.Split(ref, "/")
	if n := len(parts); n >= 2 && knownType(parts[n-2]) && validID(parts[n-1]) {
		return parts[n-2], parts[n-1]
	}
	return "", ref
}

// checkSeed applies the seed profile: HealthLake's API document (section
// 1.3) requires a Patient to have a name with family and given, so every
// Patient.name must have a family and at least one given name. The 400
// names the first element missing, in its issue's expression too.
func checkSeed(p *parsed) *fhirError {
	if p.typ != "Patient" {
		return nil
	}
	missing := func(loc string) *fhirError {
		e := errf(http.StatusBadRequest, "required", "%s is required (profile seed: HealthLake requires Patient name.family and name.given).", loc)
		e.expression = loc
		return e
	}
	names := find(p.body, p.ms, "name")
	if len(names) < 2 || names[0] != '[' || string(names) == "[]" {
		return missing("Patient.name")
	}
	i := 0
	var e *fhirError
	jarr(names, func(el []byte) bool {
		var family string
		var given []string
		ok := jobj(el, func(k string, v []byte) bool {
			switch k {
			case "family":
				family, _ = jstr(v)
			case "given":
				given, _ = jstrs(v)
			}
			return true
		})
		loc := "Patient.name[" + strconv.Itoa(i) + "]"
		switch {
		case !ok || strings.TrimSpace(family) == "":
			e = missing(loc + ".family")
		case !slices.ContainsFunc(given, func(g string) bool { return strings.TrimSpace(g) != "" }):
			e = missing(loc + ".given")
		}
		i++
		return e == nil
	})
	return e
}
