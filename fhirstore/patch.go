package fhirstore

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// JSON Patch (RFC 6902) of a resource: PATCH Type/id with Content-Type
// application/json-patch+json, or a Bundle entry whose resource is a
// Binary of that content type. Operations add, remove, replace, move, copy
// and test, applied in order to the current version; the result must
// still be a valid resource of the same type and id, and is written as its
// next version (If-Match is honoured, as on update). Members keep their
// order and number literals their digits. A patch document that is not
// one is a 400; an operation that cannot apply (a path that does not
// exist, a failed test) is a 422 naming the operation's index and path.

// jval is a JSON value that keeps the order of object members and the
// text of numbers.
type jval struct {
	kind byte // 'o' object, 'a' array, 's' string, 'n' number, 'b' bool, 'z' null
	obj  []jmember
	arr  []*jval
	str  string // string, or number text
	b    bool
}

type jmember struct {
	key string
	val *jval
}

// decodeJVal decodes one JSON value.
func decodeJVal(b []byte) (*jval, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	v, err := readJVal(dec)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("data after the value")
	}
	return v, nil
}

func readJVal(dec *json.Decoder) (*jval, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			v := &jval{kind: 'o'}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, err
				}
				k, _ := kt.(string)
				val, err := readJVal(dec)
				if err != nil {
					return nil, err
				}
				v.set(k, val)
			}
			_, err := dec.Token()
			return v, err
		case '[':
			v := &jval{kind: 'a', arr: []*jval{}}
			for dec.More() {
				val, err := readJVal(dec)
				if err != nil {
					return nil, err
				}
				v.arr = append(v.arr, val)
			}
			_, err := dec.Token()
			return v, err
		}
	case string:
		return &jval{kind: 's', str: t}, nil
	case json.Number:
		return &jval{kind: 'n', str: string(t)}, nil
	case bool:
		return &jval{kind: 'b', b: t}, nil
	case nil:
		return &jval{kind: 'z'}, nil
	}
	return nil, fmt.Errorf("unexpected token")
}

// set sets member k (replacing it where it is, or appending it).
func (v *jval) set(k string, val *jval) {
	for i := range v.obj {
		if v.obj[i].key == k {
			v.obj[i].val = val
			return
		}
	}
	v.obj = append(v.obj, jmember{k, val})
}

func (v *jval) get(k string) *jval {
	for _, m := range v.obj {
		if m.key == k {
			return m.val
		}
	}
	return nil
}

func (v *jval) del(k string) bool {
	for i := range v.obj {
		if v.obj[i].key == k {
			v.obj = append(v.obj[:i], v.obj[i+1:]...)
			return true
		}
	}
	return false
}

func (v *jval) clone() *jval {
	c := *v
	c.obj = make([]jmember, len(v.obj))
	for i, m := range v.obj {
		c.obj[i] = jmember{m.key, m.val.clone()}
	}
	if v.arr != nil {
		c.arr = make([]*jval, len(v.arr))
		for i, e := range v.arr {
			c.arr[i] = e.clone()
		}
	}
	return &c
}

// equal is RFC 6902's equality: numbers by value, objects as sets of
// members, arrays in order.
func (v *jval) equal(w *jval) bool {
	if v.kind != w.kind {
		return false
	}
	switch v.kind {
	case 'o':
		if len(v.obj) != len(w.obj) {
			return false
		}
		for _, m := range v.obj {
			o := w.get(m.key)
			if o == nil || !m.val.equal(o) {
				return false
			}
		}
		return true
	case 'a':
		if len(v.arr) != len(w.arr) {
			return false
		}
		for i := range v.arr {
			if !v.arr[i].equal(w.arr[i]) {
				return false
			}
		}
		return true
	case 'n':
		a, _, ok1 := parseNumber(v.str)
		b, _, ok2 := parseNumber(w.str)
		return ok1 && ok2 && a == b
	case 's':
		return v.str == w.str
	case 'b':
		return v.b == w.b
	}
	return true
}

// appendJSON writes v as compact JSON.
func (v *jval) appendJSON(dst []byte) []byte {
	switch v.kind {
	case 'o':
		dst = append(dst, '{')
		for i, m := range v.obj {
			if i > 0 {
				dst = append(dst, ',')
			}
			k, _ := json.Marshal(m.key)
			dst = append(dst, k...)
			dst = append(dst, ':')
			dst = m.val.appendJSON(dst)
		}
		return append(dst, '}')
	case 'a':
		dst = append(dst, '[')
		for i, e := range v.arr {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = e.appendJSON(dst)
		}
		return append(dst, ']')
	case 's':
		s, _ := json.Marshal(v.str)
		return append(dst, s...)
	case 'n':
		return append(dst, v.str...)
	case 'b':
		return strconv.AppendBool(dst, v.b)
	}
	return append(dst, "null"...)
}

// patchOp is one operation of a JSON Patch document.
type patchOp struct {
	Op    string          `json:"op"`
	Path  *string         `json:"path"`
	From  *string         `json:"from"`
	Value json.RawMessage `json:"value"`
}

// applyPatch applies the JSON Patch document patch to the resource body.
func applyPatch(body, patch []byte) ([]byte, *fhirError) {
	var ops []patchOp
	dec := json.NewDecoder(bytes.NewReader(patch))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ops); err != nil {
		return nil, badRequest("The PATCH body is not a JSON Patch document (a JSON array of operations).")
	}
	if len(ops) == 0 {
		return nil, badRequest("The JSON Patch document has no operations.")
	}
	doc, err := decodeJVal(body)
	if err != nil {
		return nil, errf(http.StatusInternalServerError, "exception", "The stored resource could not be read.")
	}
	for i, op := range ops {
		if op.Path == nil {
			return nil, badRequest("JSON Patch operation %d has no path.", i)
		}
		path, e := parsePointer(*op.Path)
		if e != nil {
			return nil, badRequest("JSON Patch operation %d: %s", i, e.Error())
		}
		var value *jval
		switch op.Op {
		case "add", "replace", "test":
			if op.Value == nil {
				return nil, badRequest("JSON Patch operation %d (%s) has no value.", i, safeName(op.Op))
			}
			if value, err = decodeJVal(op.Value); err != nil {
				return nil, badRequest("JSON Patch operation %d: the value is not JSON.", i)
			}
		case "move", "copy":
			if op.From == nil {
				return nil, badRequest("JSON Patch operation %d (%s) has no from.", i, op.Op)
			}
		case "remove":
		default:
			return nil, badRequest("JSON Patch operation %d: unknown op '%s' (add, remove, replace, move, copy, test).", i, safeName(op.Op))
		}
		fail := func(why string) *fhirError {
			return errf(http.StatusUnprocessableEntity, "processing", "JSON Patch operation %d (%s %s) cannot be applied: %s.", i, op.Op, safePointer(*op.Path), why)
		}
		switch op.Op {
		case "add":
			if doc, err = pointerAdd(doc, path, value); err != nil {
				return nil, fail(err.Error())
			}
		case "remove":
			if _, err = pointerRemove(doc, path); err != nil {
				return nil, fail(err.Error())
			}
		case "replace":
			if _, err = pointerRemove(doc, path); err != nil {
				return nil, fail(err.Error())
			}
			if doc, err = pointerAdd(doc, path, value); err != nil {
				return nil, fail(err.Error())
			}
		case "test":
			got, err := pointerGet(doc, path)
			if err != nil {
				return nil, fail(err.Error())
			}
			if !got.equal(value) {
				return nil, fail("the value there is not the one tested")
			}
		case "move", "copy":
			from, e := parsePointer(*op.From)
			if e != nil {
				return nil, badRequest("JSON Patch operation %d: from: %s", i, e.Error())
			}
			if op.Op == "move" && len(path) > len(from) && slicesHasPrefix(path, from) {
				return nil, fail("a value cannot move into itself")
			}
			v, err := pointerGet(doc, from)
			if err != nil {
				return nil, fail("from: " + err.Error())
			}
			if op.Op == "move" {
				if _, err = pointerRemove(doc, from); err != nil {
					return nil, fail("from: " + err.Error())
				}
			} else {
				v = v.clone()
			}
			if doc, err = pointerAdd(doc, path, v); err != nil {
				return nil, fail(err.Error())
			}
		}
	}
	return doc.appendJSON(nil), nil
}

func slicesHasPrefix(s, prefix []string) bool {
	if len(prefix) > len(s) {
		return false
	}
	for i := range prefix {
		if s[i] != prefix[i] {
			return false
		}
	}
	return true
}

// parsePointer splits a JSON Pointer (RFC 6901) into reference tokens.
func parsePointer(p string) ([]string, error) {
	if p == "" {
		return nil, nil
	}
	if p[0] != '/' {
		return nil, fmt.Errorf("the path must be a JSON Pointer starting with /")
	}
	parts := strings.Split(p[1:], "/")
	for i, s := range parts {
		if strings.Contains(strings.ReplaceAll(strings.ReplaceAll(s, "~0", ""), "~1", ""), "~") {
			return nil, fmt.Errorf("the path has an invalid ~ escape")
		}
		parts[i] = strings.ReplaceAll(strings.ReplaceAll(s, "~1", "/"), "~0", "~")
	}
	return parts, nil
}

// safePointer returns a pointer for error text: element names and
// indexes only (a pointer holds no values).
func safePointer(p string) string {
	if len(p) > 200 {
		return "(long path)"
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '/' || c == '-' || c == '_' || c == '~') {
			return "(path)"
		}
	}
	return p
}

// arrayIndex parses an array reference token for an array of n items;
// "-" (past the end) only when end is allowed.
func arrayIndex(tok string, n int, end bool) (int, error) {
	if tok == "-" && end {
		return n, nil
	}
	i, err := strconv.Atoi(tok)
	if err != nil || i < 0 || tok != strconv.Itoa(i) {
		return 0, fmt.Errorf("%q is not an array index", safeName(tok))
	}
	limit := n - 1
	if end {
		limit = n
	}
	if i > limit {
		return 0, fmt.Errorf("index %d is beyond the array's %d items", i, n)
	}
	return i, nil
}

// parentOf walks to the container of the last token of path.
func parentOf(doc *jval, path []string) (*jval, error) {
	cur := doc
	for _, tok := range path[:len(path)-1] {
		switch cur.kind {
		case 'o':
			next := cur.get(tok)
			if next == nil {
				return nil, fmt.Errorf("there is no member %s", safeName(tok))
			}
			cur = next
		case 'a':
			i, err := arrayIndex(tok, len(cur.arr), false)
			if err != nil {
				return nil, err
			}
			cur = cur.arr[i]
		default:
			return nil, fmt.Errorf("the path goes through a value that is not an object or array")
		}
	}
	return cur, nil
}

func pointerGet(doc *jval, path []string) (*jval, error) {
	if len(path) == 0 {
		return doc, nil
	}
	parent, err := parentOf(doc, path)
	if err != nil {
		return nil, err
	}
	last := path[len(path)-1]
	switch parent.kind {
	case 'o':
		if v := parent.get(last); v != nil {
			return v, nil
		}
		return nil, fmt.Errorf("there is no member %s", safeName(last))
	case 'a':
		i, err := arrayIndex(last, len(parent.arr), false)
		if err != nil {
			return nil, err
		}
		return parent.arr[i], nil
	}
	return nil, fmt.Errorf("the path goes through a value that is not an object or array")
}

func pointerAdd(doc *jval, path []string, v *jval) (*jval, error) {
	if len(path) == 0 {
		return v, nil
	}
	parent, err := parentOf(doc, path)
	if err != nil {
		return doc, err
	}
	last := path[len(path)-1]
	switch parent.kind {
	case 'o':
		parent.set(last, v)
	case 'a':
		i, err := arrayIndex(last, len(parent.arr), true)
		if err != nil {
			return doc, err
		}
		parent.arr = append(parent.arr[:i], append([]*jval{v}, parent.arr[i:]...)...)
	default:
		return doc, fmt.Errorf("the path goes through a value that is not an object or array")
	}
	return doc, nil
}

func pointerRemove(doc *jval, path []string) (*jval, error) {
	if len(path) == 0 {
		return nil, fmt.Errorf("the whole resource cannot be removed")
	}
	parent, err := parentOf(doc, path)
	if err != nil {
		return nil, err
	}
	last := path[len(path)-1]
	switch parent.kind {
	case 'o':
		v := parent.get(last)
		if v == nil || !parent.del(last) {
			return nil, fmt.Errorf("there is no member %s", safeName(last))
		}
		return v, nil
	case 'a':
		i, err := arrayIndex(last, len(parent.arr), false)
		if err != nil {
			return nil, err
		}
		v := parent.arr[i]
		parent.arr = append(parent.arr[:i], parent.arr[i+1:]...)
		return v, nil
	}
	return nil, fmt.Errorf("the path goes through a value that is not an object or array")
}
