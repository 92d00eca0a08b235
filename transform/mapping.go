package transform

import (
	"bytes"
	"errors"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/fhirload/fhirload/registry"
)

// The mapping file (YAML) turns flat records — CSV rows or flat JSON objects — into
// resources. See mappings/synthea-csv.yaml for a complete example.
//
//	name: synthea-csv                 # reported in run reports (default: file name)
//	resources:
//	  - type: Observation             # any FHIR R4 resource type
//	    match:                        # a rule applies when every given condition holds
//	      file: "observations*.csv"   #   glob on the object's base name
//	      columns: [DATE, PATIENT]    #   fields the header (or flat record) must have
//	    key: [PATIENT, DATE, CODE]    # fields whose values derive the id (ids: derive)
//	    id: Id                        # field used as the id (ids: keep)
//	    elements:                     # applied in order; each sets one JSON path
//	      - path: status
//	        const: final
//	      - path: subject.reference
//	        field: PATIENT
//	        as: reference             # Type/{id}; the id derived under ids: derive
//	        target: Patient
//	      - path: valueQuantity.value
//	        field: VALUE
//	        as: decimal               # string (default) | code | decimal | integer |
//	                                  # boolean | date | dateTime | instant | reference
//	        when: {field: TYPE, equals: numeric}
//	      - path: gender
//	        field: GENDER
//	        map: {M: male, F: female} # value map; unmapped values are an error unless
//	        default: unknown          # default is set ("$value" keeps the value);
//	                                  # a value mapped to "" omits the element
//	      - path: birthDate
//	        field: BIRTHDATE
//	        as: date
//	        layout: "2006-01-02"      # Go time layout of the source value
//
// An element whose field is empty is omitted, unless required: true (then the record
// fails with a mapping error naming the field). Paths are dot-separated JSON names with
// optional [n] array indexes (name[0].given[0]); unset indexes are compacted.

type mappingYAML struct {
	Name      string     `yaml:"name"`
	Resources []ruleYAML `yaml:"resources"`
}

type ruleYAML struct {
	Type  string `yaml:"type"`
	Match struct {
		File    string   `yaml:"file"`
		Columns []string `yaml:"columns"`
	} `yaml:"match"`
	Key      []string      `yaml:"key"`
	ID       string        `yaml:"id"`
	Elements []elementYAML `yaml:"elements"`
}

type elementYAML struct {
	Path     string            `yaml:"path"`
	Field    string            `yaml:"field"`
	Const    *string           `yaml:"const"`
	As       string            `yaml:"as"`
	Layout   string            `yaml:"layout"`
	Map      map[string]string `yaml:"map"`
	Default  *string           `yaml:"default"`
	Target   string            `yaml:"target"`
	Required bool              `yaml:"required"`
	When     whenList          `yaml:"when"`
}

// whenList is one condition or a list of conditions that must all hold.
type whenList []whenYAML

// UnmarshalYAML accepts a single mapping or a sequence of them.
func (w *whenList) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.SequenceNode {
		var list []whenYAML
		if err := n.Decode(&list); err != nil {
			return err
		}
		*w = list
		return nil
	}
	var one whenYAML
	if err := n.Decode(&one); err != nil {
		return err
	}
	*w = whenList{one}
	return nil
}

type whenYAML struct {
	Field  string   `yaml:"field"`
	Equals *string  `yaml:"equals"`
	In     []string `yaml:"in"`
	Empty  *bool    `yaml:"empty"`
}

// mapping is a parsed, checked mapping file.
type mapping struct {
	name  string
	rules []*rule
}

type rule struct {
	typ      string
	file     string
	columns  []string
	key      []string
	id       string
	elements []mapElement
}

type pathStep struct {
	name  string
	index int // -1: not an array step
}

type mapElement struct {
	steps    []pathStep
	field    string
	constant *string
	as       string
	layout   string
	valueMap map[string]string
	def      *string
	target   string
	required bool
	when     whenList
}

var asKinds = []string{"string", "code", "decimal", "integer", "boolean", "date", "dateTime", "instant", "reference"}

func parseMapping(raw []byte) (*mapping, error) {
	var y mappingYAML
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&y); err != nil {
		return nil, fmt.Errorf("%w", err)
	}
	if len(y.Resources) == 0 {
		return nil, errors.New("resources: at least one rule is required")
	}
	m := &mapping{name: y.Name}
	for i, ry := range y.Resources {
		at := fmt.Sprintf("resources[%d]", i)
		if !registry.R4().IsResourceType(ry.Type) {
			return nil, fmt.Errorf("%s.type: must be a FHIR R4 resource type", at)
		}
		if ry.Match.File != "" {
			if _, err := path.Match(ry.Match.File, ""); err != nil {
				return nil, fmt.Errorf("%s.match.file: %w", at, err)
			}
		}
		if ry.Match.File == "" && len(ry.Match.Columns) == 0 {
			return nil, fmt.Errorf("%s.match: give file and/or columns", at)
		}
		if len(ry.Key) == 0 {
			return nil, fmt.Errorf("%s.key: at least one field is required", at)
		}
		r := &rule{typ: ry.Type, file: ry.Match.File, columns: ry.Match.Columns, key: ry.Key, id: ry.ID}
		for j, ey := range ry.Elements {
			eat := fmt.Sprintf("%s.elements[%d]", at, j)
			steps, err := parsePath(ey.Path)
			if err != nil {
				return nil, fmt.Errorf("%s.path: %w", eat, err)
			}
			if steps[0].name == "id" || steps[0].name == "resourceType" {
				return nil, fmt.Errorf("%s.path: %s is set by the transformer", eat, steps[0].name)
			}
			if (ey.Field == "") == (ey.Const == nil) {
				return nil, fmt.Errorf("%s: give exactly one of field and const", eat)
			}
			as := ey.As
			if as == "" {
				as = "string"
			}
			if !slices.Contains(asKinds, as) {
				return nil, fmt.Errorf("%s.as: must be one of %s", eat, strings.Join(asKinds, ", "))
			}
			if as == "reference" && !registry.R4().IsResourceType(ey.Target) {
				return nil, fmt.Errorf("%s.target: a resource type is required with as: reference", eat)
			}
			for k, w := range ey.When {
				if w.Field == "" {
					return nil, fmt.Errorf("%s.when[%d].field: required", eat, k)
				}
			}
			r.elements = append(r.elements, mapElement{steps: steps, field: ey.Field, constant: ey.Const, as: as,
				layout: ey.Layout, valueMap: ey.Map, def: ey.Default, target: ey.Target, required: ey.Required, when: ey.When})
		}
		if len(r.elements) == 0 {
			return nil, fmt.Errorf("%s.elements: at least one element is required", at)
		}
		m.rules = append(m.rules, r)
	}
	return m, nil
}

func parsePath(p string) ([]pathStep, error) {
	if p == "" {
		return nil, errors.New("empty path")
	}
	var steps []pathStep
	for _, part := range strings.Split(p, ".") {
		st := pathStep{name: part, index: -1}
		if i := strings.IndexByte(part, '['); i >= 0 {
			if !strings.HasSuffix(part, "]") {
				return nil, fmt.Errorf("bad index in %q", part)
			}
			n, err := strconv.Atoi(part[i+1 : len(part)-1])
			if err != nil || n < 0 {
				return nil, fmt.Errorf("bad index in %q", part)
			}
			st.name, st.index = part[:i], n
		}
		if st.name == "" {
			return nil, fmt.Errorf("empty step in %q", p)
		}
		steps = append(steps, st)
	}
	return steps, nil
}

// flatStream is the per-object state of a csv/flat Stream.
type flatStream struct {
	object  string // base name, used in locations
	header  []byte
	columns []string
	rule    *rule
	noRule  string // why no rule matched the header
	records int
	// current record
	names  []string
	values [][]byte
}

func (r *rule) matches(object string, has func(string) bool) bool {
	if r.file != "" {
		if ok, _ := path.Match(r.file, object); !ok {
			return false
		}
	}
	for _, c := range r.columns {
		if !has(c) {
			return false
		}
	}
	return true
}

func (f *flatStream) setHeader(m *mapping, line []byte) {
	f.header = bytes.Clone(line)
	if len(f.header) == 0 {
		f.header = []byte{}
	}
	cols, ok := splitCSV(line, nil)
	if !ok {
		f.noRule = "malformed CSV header"
		return
	}
	f.columns = make([]string, len(cols))
	for i, c := range cols {
		f.columns[i] = string(c)
	}
	has := func(c string) bool { return slices.Contains(f.columns, c) }
	for _, r := range m.rules {
		if r.matches(f.object, has) {
			f.rule = r
			return
		}
	}
	f.noRule = "no mapping rule matches the file name and header"
}

// get returns the value of a field of the current record.
func (f *flatStream) get(name string) ([]byte, bool) {
	for i, n := range f.names {
		if n == name {
			return f.values[i], true
		}
	}
	return nil, false
}

// splitCSV splits one CSV line (RFC 4180 quoting within the line; fields cannot span
// lines since lines arrive one by one).
func splitCSV(line []byte, out [][]byte) ([][]byte, bool) {
	out = out[:0]
	line = bytes.TrimRight(line, "\r")
	for i := 0; ; {
		if i < len(line) && line[i] == '"' {
			var field []byte
			i++
			for {
				j := bytes.IndexByte(line[i:], '"')
				if j < 0 {
					return nil, false
				}
				field = append(field, line[i:i+j]...)
				i += j + 1
				if i < len(line) && line[i] == '"' {
					field = append(field, '"')
					i++
					continue
				}
				break
			}
			out = append(out, field)
			if i == len(line) {
				return out, true
			}
			if line[i] != ',' {
				return nil, false
			}
			i++
			continue
		}
		j := bytes.IndexByte(line[i:], ',')
		if j < 0 {
			out = append(out, line[i:])
			return out, true
		}
		out = append(out, line[i:i+j])
		i += j + 1
	}
}

func (t *Transformer) mapErr(f *flatStream, field, msg string) (Resource, bool, error) {
	loc := f.object
	if field != "" {
		loc += ":" + field
	}
	if f.records > 0 {
		msg += " (record " + strconv.Itoa(f.records) + ")"
	}
	return Resource{}, false, &Error{Reason: ReasonMapping, Location: loc, Message: msg}
}

// mapRecord maps one CSV row or flat JSON object and validates the result.
func (t *Transformer) mapRecord(v *validator, f *flatStream, line []byte) (Resource, bool, error) {
	f.records++
	if t.format == FormatCSV {
		if f.rule == nil {
			return t.mapErr(f, "", f.noRule)
		}
		vals, ok := splitCSV(line, f.values)
		if !ok {
			return Resource{}, false, &Error{Reason: ReasonParse, Location: f.object, Message: "malformed CSV line (record " + strconv.Itoa(f.records) + ")"}
		}
		if len(vals) != len(f.columns) {
			return t.mapErr(f, "", fmt.Sprintf("row has %d fields, header has %d", len(vals), len(f.columns)))
		}
		f.names, f.values = f.columns, vals
	} else {
		if e := v.flatRecord(line, f); e != nil {
			return Resource{}, false, e
		}
		f.rule = nil
		has := func(c string) bool { _, ok := f.get(c); return ok }
		for _, r := range t.mapping.rules {
			if r.matches(f.object, has) {
				f.rule = r
				break
			}
		}
		if f.rule == nil {
			return t.mapErr(f, "", "no mapping rule matches the file name and fields")
		}
	}
	r := f.rule
	var b builder
	for i := range r.elements {
		el := &r.elements[i]
		val, field, msg := t.elementValue(f, el)
		if msg != "" {
			return t.mapErr(f, field, msg)
		}
		if val != nil {
			b.set(el.steps, val)
		}
	}
	// id
	var id []byte
	if t.ids == IDsDerive {
		// Key fields may be empty (Synthea's QALY rows have no ENCOUNTER), not all of them.
		var key []byte
		empty := true
		for i, k := range r.key {
			val, ok := f.get(k)
			if !ok {
				return t.mapErr(f, k, "key field missing")
			}
			if i > 0 {
				key = append(key, '|')
			}
			key = append(key, val...)
			empty = empty && len(val) == 0
		}
		if empty {
			return t.mapErr(f, r.key[0], "key fields all empty")
		}
		id = appendDerivedID(nil, r.typ, key)
	} else {
		if r.id == "" {
			return t.mapErr(f, "", "ids: keep needs an id field in the mapping rule")
		}
		val, ok := f.get(r.id)
		if !ok || checkID(val) != "" {
			return t.mapErr(f, r.id, "id field missing or not a valid FHIR id")
		}
		id = bytes.Clone(val)
	}
	body := b.render(r.typ, id)
	if e := v.validate(body, false, false); e != nil {
		e.Message += " (mapped from " + f.object + " record " + strconv.Itoa(f.records) + ")"
		return Resource{}, false, e
	}
	res := Resource{Type: r.typ, ID: string(id), Body: body}
	v.reportUnknown(&res)
	return res, false, nil
}

// elementValue computes the JSON value of one element for the current record: nil when
// the element is omitted; a message (never quoting the value) when the record fails.
func (t *Transformer) elementValue(f *flatStream, el *mapElement) (val []byte, field, msg string) {
	for _, w := range el.when {
		cv, _ := f.get(w.Field)
		switch {
		case w.Equals != nil && string(cv) != *w.Equals:
			return nil, "", ""
		case w.In != nil && !slices.Contains(w.In, string(cv)):
			return nil, "", ""
		case w.Empty != nil && (len(cv) == 0) != *w.Empty:
			return nil, "", ""
		}
	}
	var raw []byte
	if el.constant != nil {
		raw = []byte(*el.constant)
	} else {
		v, ok := f.get(el.field)
		if !ok && el.required {
			return nil, el.field, "required field missing"
		}
		raw = v
	}
	if el.valueMap != nil && len(raw) > 0 {
		mv, ok := el.valueMap[string(raw)]
		switch {
		case ok:
			raw = []byte(mv)
		case el.def != nil && *el.def == "$value":
		case el.def != nil:
			raw = []byte(*el.def)
		default:
			return nil, el.field, "value not in the mapping's map"
		}
	}
	if len(raw) == 0 {
		if el.required {
			return nil, el.field, "required field empty"
		}
		return nil, "", ""
	}
	out, msg := convert(el, raw, t.ids == IDsDerive)
	if msg != "" {
		return nil, el.field, msg
	}
	return out, "", ""
}

// convert renders raw as the JSON value of the element's kind.
func convert(el *mapElement, raw []byte, derive bool) ([]byte, string) {
	switch el.as {
	case "decimal":
		if !isJSONNumber(raw) {
			return nil, "not a decimal number"
		}
		return bytes.Clone(raw), ""
	case "integer":
		if !isJSONNumber(raw) || checkInteger(raw, kindInteger) != "" {
			return nil, "not an integer"
		}
		return bytes.Clone(raw), ""
	case "boolean":
		switch strings.ToLower(string(raw)) {
		case "true", "t", "yes", "y", "1":
			return []byte("true"), ""
		case "false", "f", "no", "n", "0":
			return []byte("false"), ""
		}
		return nil, "not a boolean"
	case "date", "dateTime", "instant":
		layout := el.layout
		if layout == "" {
			layout = "2006-01-02"
			if el.as != "date" {
				layout = time.RFC3339Nano
			}
		}
		ts, err := time.Parse(layout, string(raw))
		if err != nil {
			return nil, "not a " + el.as + " in layout " + layout
		}
		out := "2006-01-02"
		if el.as != "date" {
			out = time.RFC3339Nano
		}
		return strconv.AppendQuote(nil, ts.Format(out)), ""
	case "reference":
		if checkID(raw) != "" {
			return nil, "not a valid id for a reference"
		}
		ref := append([]byte(el.target), '/')
		if derive {
			ref = appendDerivedID(ref, el.target, raw)
		} else {
			ref = append(ref, raw...)
		}
		return appendJSONString(nil, ref), ""
	case "code":
		if checkCode(raw) != "" {
			return nil, "not a valid code"
		}
	}
	return appendJSONString(nil, raw), ""
}

func isJSONNumber(b []byte) bool {
	v := validator{b: b}
	sp, ok := v.number()
	return ok && sp.end == len(b)
}

// appendJSONString appends s as a JSON string (UTF-8 is checked by the validator later).
func appendJSONString(dst, s []byte) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for _, c := range s {
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c == '\n':
			dst = append(dst, '\\', 'n')
		case c == '\r':
			dst = append(dst, '\\', 'r')
		case c == '\t':
			dst = append(dst, '\\', 't')
		case c < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			dst = append(dst, c)
		}
	}
	return append(dst, '"')
}

// flatRecord parses a flat JSON object (string, number, boolean or null values) into f.
func (v *validator) flatRecord(line []byte, f *flatStream) *Error {
	v.reset(line)
	f.names, f.values = f.names[:0], f.values[:0]
	fail := func(msg string) *Error {
		if v.err != nil {
			return v.err
		}
		return &Error{Reason: ReasonParse, Location: f.object, Message: msg}
	}
	if !v.expect('{') {
		return fail("")
	}
	if v.peek() == '}' {
		v.pos++
		return nil
	}
	for {
		_, key, ok := v.str()
		if !ok || !v.expect(':') {
			return fail("")
		}
		name := string(key)
		if slices.Contains(f.names, name) {
			return &Error{Reason: ReasonParse, Location: f.object + ":" + safeKey(key), Message: "duplicate key (ambiguous)"}
		}
		var val []byte
		switch c := v.peek(); {
		case c == '"':
			_, s, ok := v.str()
			if !ok {
				return fail("")
			}
			val = s
		case c == 't' || c == 'f':
			start := v.pos
			if !v.literal(map[bool]string{true: "true", false: "false"}[c == 't']) {
				return fail("")
			}
			val = line[start:v.pos]
		case c == 'n':
			if !v.literal("null") {
				return fail("")
			}
		case c == '-' || isDigit(c):
			sp, ok := v.number()
			if !ok {
				return fail("")
			}
			val = line[sp.start:sp.end]
		default:
			return &Error{Reason: ReasonMapping, Location: f.object + ":" + safeKey(key), Message: "flat records hold only strings, numbers, booleans and null"}
		}
		f.names = append(f.names, name)
		f.values = append(f.values, val)
		switch v.peek() {
		case ',':
			v.pos++
		case '}':
			v.pos++
			if v.peek() != 0 {
				return fail("data after the JSON object")
			}
			return nil
		default:
			v.syntax("expected ',' or '}'")
			return fail("")
		}
	}
}

// builder assembles a JSON object from path/value pairs, keeping first-set order.
type builder struct{ root node }

type node struct {
	key      string
	index    int
	children []*node
	value    []byte // leaf JSON
	isArray  bool
}

func (n *node) child(key string, index int) *node {
	for _, c := range n.children {
		if c.key == key && c.index == index {
			return c
		}
	}
	c := &node{key: key, index: index}
	n.children = append(n.children, c)
	return c
}

func (b *builder) set(steps []pathStep, val []byte) {
	n := &b.root
	for _, st := range steps {
		n = n.child(st.name, -1)
		if st.index >= 0 {
			n.isArray = true
			n = n.child("", st.index)
		}
	}
	n.value = val
}

func (b *builder) render(typ string, id []byte) []byte {
	out := []byte(`{"resourceType":"`)
	out = append(out, typ...)
	out = append(out, `","id":`...)
	out = appendJSONString(out, id)
	for _, c := range b.root.children {
		out = append(out, ',')
		out = c.appendMember(out)
	}
	return append(out, '}')
}

func (n *node) appendMember(out []byte) []byte {
	out = appendJSONString(out, []byte(n.key))
	out = append(out, ':')
	return n.appendValue(out)
}

func (n *node) appendValue(out []byte) []byte {
	switch {
	case n.value != nil:
		return append(out, n.value...)
	case n.isArray:
		items := slices.Clone(n.children)
		slices.SortStableFunc(items, func(a, b *node) int { return a.index - b.index })
		out = append(out, '[')
		for i, c := range items {
			if i > 0 {
				out = append(out, ',')
			}
			out = c.appendValue(out)
		}
		return append(out, ']')
	}
	out = append(out, '{')
	for i, c := range n.children {
		if i > 0 {
			out = append(out, ',')
		}
		out = c.appendMember(out)
	}
	return append(out, '}')
}
