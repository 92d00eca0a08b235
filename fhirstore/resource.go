package fhirstore

import (
	"bytes"
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
}

// indexRow is one search-index entry. Tokens store (code, system), strings
// (normalised value, value as sent), references (id, type), dates (lo, hi) in
// Unix milliseconds with hi exclusive.
type indexRow struct {
	param  string
	a, b   string
	lo, hi int64
	isDate bool
}

func (r indexRow) args() (any, any) {
	if r.isDate {
		return r.lo, r.hi
	}
	return r.a, r.b
}

func badRequest(format string, args ...any) *fhirError {
	return errf(http.StatusBadRequest, "invalid", format, args...)
}

// parseResource validates body and extracts its search-index rows. When
// validJSON is set, body is known to be valid JSON (a Bundle entry that
// encoding/json has decoded) and is only compacted, not checked again.
func parseResource(body []byte, validJSON bool) (*parsed, *fhirError) {
	p := &parsed{}
	if validJSON {
		p.body = compactValid(body)
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
	rt := find(p.body, p.ms, "resourceType")
	if rt == nil || json.Unmarshal(rt, &p.typ) != nil || p.typ == "" {
		return nil, badRequest("The resource has no resourceType.")
	}
	if !knownType(p.typ) {
		return nil, badRequest("Unknown resourceType %q.", safeName(p.typ))
	}
	if raw := find(p.body, p.ms, "id"); raw != nil {
		if json.Unmarshal(raw, &p.id) != nil || !validID(p.id) {
			return nil, badRequest("The resource id must be 1-64 characters of A-Z a-z 0-9 - and '.'.")
		}
	}
	if raw := find(p.body, p.ms, "meta"); raw != nil && raw[0] != '{' {
		return nil, badRequest("%s.meta must be an object.", p.typ)
	}
	if e := p.index(); e != nil {
		return nil, e
	}
	return p, nil
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

type coding struct {
	System string `json:"system"`
	Code   string `json:"code"`
}

type codeableConcept struct {
	Coding []coding `json:"coding"`
}

type identifier struct {
	System string `json:"system"`
	Value  string `json:"value"`
}

type reference struct {
	Reference string `json:"reference"`
}

type period struct {
	Start string `json:"start"`
	End   string `json:"end"`
}

type humanName struct {
	Text   string   `json:"text"`
	Family string   `json:"family"`
	Given  []string `json:"given"`
	Prefix []string `json:"prefix"`
	Suffix []string `json:"suffix"`
}

// index fills p.rows from the elements behind the supported search
// parameters, rejecting values of the wrong shape.
func (p *parsed) index() *fhirError {
	get := func(name string, v any) *fhirError {
		raw := find(p.body, p.ms, name)
		if raw == nil {
			return nil
		}
		if err := json.Unmarshal(raw, v); err != nil {
			return badRequest("%s.%s has an invalid value.", p.typ, name)
		}
		return nil
	}
	if raw := find(p.body, p.ms, "identifier"); raw != nil {
		var ids []identifier
		if raw[0] == '{' {
			ids = make([]identifier, 1)
			if json.Unmarshal(raw, &ids[0]) != nil {
				return badRequest("%s.identifier has an invalid value.", p.typ)
			}
		} else if e := get("identifier", &ids); e != nil {
			return e
		}
		for _, id := range ids {
			if id.Value != "" {
				p.rows = append(p.rows, indexRow{param: "identifier", a: id.Value, b: id.System})
			}
		}
	}
	switch p.typ {
	case "Patient":
		var names []humanName
		if e := get("name", &names); e != nil {
			return e
		}
		for _, n := range names {
			p.addString("family", n.Family)
			p.addString("name", n.Family)
			p.addString("name", n.Text)
			for _, g := range n.Given {
				p.addString("given", g)
				p.addString("name", g)
			}
			for _, s := range n.Prefix {
				p.addString("name", s)
			}
			for _, s := range n.Suffix {
				p.addString("name", s)
			}
		}
		var gender string
		if e := get("gender", &gender); e != nil {
			return e
		}
		switch gender {
		case "":
		case "male", "female", "other", "unknown":
			p.rows = append(p.rows, indexRow{param: "gender", a: gender, b: "http://hl7.org/fhir/administrative-gender"})
		default:
			return badRequest("Patient.gender must be one of male, female, other, unknown.")
		}
		var birth string
		if e := get("birthDate", &birth); e != nil {
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
		var code codeableConcept
		if e := get("code", &code); e != nil {
			return e
		}
		p.addCodings("code", code.Coding)
		var cats []codeableConcept
		if e := get("category", &cats); e != nil {
			return e
		}
		for _, c := range cats {
			p.addCodings("category", c.Coding)
		}
		var subj reference
		if e := get("subject", &subj); e != nil {
			return e
		}
		if subj.Reference != "" {
			typ, id := splitReference(subj.Reference)
			p.rows = append(p.rows, indexRow{param: "subject", a: id, b: typ})
		}
		var when string
		for _, name := range []string{"effectiveDateTime", "effectiveInstant"} {
			if e := get(name, &when); e != nil {
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
		var per period
		if e := get("effectivePeriod", &per); e != nil {
			return e
		}
		if per.Start != "" || per.End != "" {
			lo, hi := int64(minDate), int64(maxDate)
			var ok bool
			if per.Start != "" {
				if lo, _, ok = parseDateRange(per.Start); !ok {
					return badRequest("Observation.effectivePeriod.start is not a valid dateTime.")
				}
			}
			if per.End != "" {
				if _, hi, ok = parseDateRange(per.End); !ok {
					return badRequest("Observation.effectivePeriod.end is not a valid dateTime.")
				}
			}
			p.rows = append(p.rows, indexRow{param: "date", lo: lo, hi: hi, isDate: true})
		}
	}
	return nil
}

func (p *parsed) addString(param, v string) {
	if v == "" {
		return
	}
	p.rows = append(p.rows, indexRow{param: param, a: normalizeString(v), b: v})
}

func (p *parsed) addCodings(param string, cs []coding) {
	for _, c := range cs {
		if c.Code != "" {
			p.rows = append(p.rows, indexRow{param: param, a: c.Code, b: c.System})
		}
	}
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
