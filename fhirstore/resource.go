package fhirstore

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"net/http"
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

// indexRow is one search-index entry. Tokens store (code, system), strings
// (normalised value, value as sent), references (id, type), dates (lo, hi) in
// Unix milliseconds with hi exclusive.
type indexRow struct {
	param  string
	k      int64 // indexKey(type, param), set by parseResource
	a, b   string
	lo, hi int64
	isDate bool
}

// values are the row's idx.a and idx.b: the strings, or the date range.
func (r indexRow) values() (any, any) {
	if r.isDate {
		return r.lo, r.hi
	}
	return r.a, r.b
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
	for i := range p.rows {
		p.rows[i].k = indexKey(p.typ, p.rows[i].param)
	}
	p.keys = encodeRows(p.rows)
	return p, nil
}

// encodeRows encodes index rows for resources.keys: per row, uvarint k,
// then 's' and two length-prefixed strings or 'd' and two varints. nil when
// there are none.
func encodeRows(rows []indexRow) []byte {
	if len(rows) == 0 {
		return nil
	}
	b := make([]byte, 0, 64*len(rows))
	for _, r := range rows {
		b = binary.AppendUvarint(b, uint64(r.k))
		if r.isDate {
			b = append(b, 'd')
			b = binary.AppendVarint(b, r.lo)
			b = binary.AppendVarint(b, r.hi)
			continue
		}
		b = append(b, 's')
		b = binary.AppendUvarint(b, uint64(len(r.a)))
		b = append(b, r.a...)
		b = binary.AppendUvarint(b, uint64(len(r.b)))
		b = append(b, r.b...)
	}
	return b
}

// keyRow is one decoded row of resources.keys: the idx columns but rid.
type keyRow struct {
	k    int64
	a, b any // string, or int64 for dates
}

// decodeRows decodes what encodeRows wrote. It stops at the first malformed
// byte (which encodeRows never writes).
func decodeRows(b []byte) []keyRow {
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
		}
		if !ok1 || !ok2 {
			break
		}
		out = append(out, r)
	}
	return out
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

// index fills p.rows from the elements behind the supported search
// parameters, rejecting values of the wrong shape.
func (p *parsed) index() *fhirError {
	invalid := func(name string) *fhirError { return badRequest("%s.%s has an invalid value.", p.typ, name) }
	str := func(name string) (string, *fhirError) {
		s, ok := jstr(find(p.body, p.ms, name))
		if !ok {
			return "", invalid(name)
		}
		return s, nil
	}
	if raw := find(p.body, p.ms, "identifier"); raw != nil {
		one := func(el []byte) bool {
			var system, value string
			if !jfields(el, []string{"system", "value"}, []*string{&system, &value}) {
				return false
			}
			if value != "" {
				p.rows = append(p.rows, indexRow{param: "identifier", a: value, b: system})
			}
			return true
		}
		ok := false
		if raw[0] == '{' {
			ok = one(raw)
		} else {
			ok = jarr(raw, one)
		}
		if !ok {
			return invalid("identifier")
		}
	}
	switch p.typ {
	case "Patient":
		ok := jarr(find(p.body, p.ms, "name"), func(el []byte) bool {
			var text, family string
			var given, prefix, suffix []string
			if !jobj(el, func(k string, v []byte) bool {
				ok := true
				switch k {
				case "text":
					text, ok = jstr(v)
				case "family":
					family, ok = jstr(v)
				case "given":
					given, ok = jstrs(v)
				case "prefix":
					prefix, ok = jstrs(v)
				case "suffix":
					suffix, ok = jstrs(v)
				}
				return ok
			}) {
				return false
			}
			p.addString("family", family)
			p.addString("name", family)
			p.addString("name", text)
			for _, g := range given {
				p.addString("given", g)
				p.addString("name", g)
			}
			for _, s := range prefix {
				p.addString("name", s)
			}
			for _, s := range suffix {
				p.addString("name", s)
			}
			return true
		})
		if !ok {
			return invalid("name")
		}
		gender, e := str("gender")
		if e != nil {
			return e
		}
		switch gender {
		case "":
		case "male", "female", "other", "unknown":
			p.rows = append(p.rows, indexRow{param: "gender", a: gender, b: "http://hl7.org/fhir/administrative-gender"})
		default:
			return badRequest("Patient.gender must be one of male, female, other, unknown.")
		}
		birth, e := str("birthDate")
		if e != nil {
			return e
		}
		if birth != "" {
			lo, hi, ok := parseDateRange(birth)
			if !ok || strings.Contains(birth, "T") {
				return badRequest("Patient.birthDate must be a date (YYYY, YYYY-MM or YYYY-MM-DD).")
			}
			p.rows = append(p.rows, indexRow{param: "birthdate", lo: lo, hi: hi, isDate: true})
		}
	case "Observation":
		if find(p.body, p.ms, "status") == nil || find(p.body, p.ms, "code") == nil {
			return badRequest("Observation.status and Observation.code are required.")
		}
		if !p.addConcept("code", find(p.body, p.ms, "code")) {
			return invalid("code")
		}
		if !jarr(find(p.body, p.ms, "category"), func(el []byte) bool { return p.addConcept("category", el) }) {
			return invalid("category")
		}
		var ref string
		if !jfields(find(p.body, p.ms, "subject"), []string{"reference"}, []*string{&ref}) {
			return invalid("subject")
		}
		if ref != "" {
			typ, id := splitReference(ref)
			p.rows = append(p.rows, indexRow{param: "subject", a: id, b: typ})
		}
		for _, name := range []string{"effectiveDateTime", "effectiveInstant"} {
			when, e := str(name)
			if e != nil {
				return e
			}
			if when != "" {
				lo, hi, ok := parseDateRange(when)
				if !ok {
					return badRequest("Observation.%s is not a valid dateTime.", name)
				}
				p.rows = append(p.rows, indexRow{param: "date", lo: lo, hi: hi, isDate: true})
				break
			}
		}
		var start, end string
		if !jfields(find(p.body, p.ms, "effectivePeriod"), []string{"start", "end"}, []*string{&start, &end}) {
			return invalid("effectivePeriod")
		}
		if start != "" || end != "" {
			lo, hi := int64(minDate), int64(maxDate)
			var ok bool
			if start != "" {
				if lo, _, ok = parseDateRange(start); !ok {
					return badRequest("Observation.effectivePeriod.start is not a valid dateTime.")
				}
			}
			if end != "" {
				if _, hi, ok = parseDateRange(end); !ok {
					return badRequest("Observation.effectivePeriod.end is not a valid dateTime.")
				}
			}
			p.rows = append(p.rows, indexRow{param: "date", lo: lo, hi: hi, isDate: true})
		}
	}
	return nil
}

// addConcept indexes the codings of the CodeableConcept raw under param.
func (p *parsed) addConcept(param string, raw []byte) bool {
	return jobj(raw, func(k string, v []byte) bool {
		if k != "coding" {
			return true
		}
		return jarr(v, func(el []byte) bool {
			var system, code string
			if !jfields(el, []string{"system", "code"}, []*string{&system, &code}) {
				return false
			}
			if code != "" {
				p.rows = append(p.rows, indexRow{param: param, a: code, b: system})
			}
			return true
		})
	})
}

func (p *parsed) addString(param, v string) {
	if v == "" {
		return
	}
	p.rows = append(p.rows, indexRow{param: param, a: normalizeString(v), b: v})
}

// normalizeString is the form string search compares: lower case, runs of
// spaces collapsed. Accents are not folded.
func normalizeString(s string) string {
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
