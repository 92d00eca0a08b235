package fhirstore

import (
	"net/http"
	"strings"
	"sync"

	spec "github.com/fhirload/fhirload/registry"
)

// _summary and _elements: the parts of a resource a client asked for.
// A subset carries the SUBSETTED tag in meta.tag, as FHIR requires.
//
//	_summary=true   the elements the definition marks isSummary (inside
//	                backbone elements too; datatypes whole), id and meta
//	_summary=text   text, id, meta and the mandatory top-level elements
//	_summary=data   everything but text
//	_elements=a,b   the named top-level elements (by element name, value for
//	                value[x], or JSON name), id, meta and the mandatory ones

// elementFact is what _summary needs to know of an element.
type elementFact struct {
	summary  bool
	required bool
	backbone bool
}

// typeView holds the elementFacts of a type by JSON path below the
// resource ("status", "component", "component.code", "valueQuantity"),
// and the top-level element names _elements accepts.
type typeView struct {
	facts map[string]elementFact
	names map[string]bool   // element names and JSON names _elements accepts (top-level only)
	base  map[string]string // top-level JSON name → element name (valueQuantity → value)
}

var typeViews sync.Map // type name → *typeView

func viewOf(typ string) *typeView {
	if v, ok := typeViews.Load(typ); ok {
		return v.(*typeView)
	}
	v := buildView(spec.R4().Type(typ))
	actual, _ := typeViews.LoadOrStore(typ, v)
	return actual.(*typeView)
}

func buildView(t *spec.Type) *typeView {
	v := &typeView{facts: map[string]elementFact{}, names: map[string]bool{}, base: map[string]string{}}
	if t == nil {
		return v
	}
	for i := range t.Elements {
		e := &t.Elements[i]
		rel, ok := strings.CutPrefix(e.Path, t.Name+".")
		if !ok {
			continue
		}
		dir, last := "", rel
		if i := strings.LastIndexByte(rel, '.'); i >= 0 {
			dir, last = rel[:i+1], rel[i+1:]
		}
		f := elementFact{summary: e.Summary, required: e.Min > 0}
		codes := []string{""}
		if len(e.Types) > 0 {
			codes = codes[:0]
			for _, tr := range e.Types {
				codes = append(codes, tr.Code)
				if tr.Code == "BackboneElement" || tr.Code == "Element" && dir != "" {
					f.backbone = true
				}
			}
		}
		if e.ContentReference != "" {
			f.backbone = true
		}
		for _, c := range codes {
			name := last
			if c != "" {
				name = e.JSONName(c)
			}
			v.facts[dir+name] = f
			if dir == "" {
				el := strings.TrimSuffix(last, "[x]")
				v.names[name], v.names[el] = true, true
				v.base[name] = el
			}
		}
	}
	return v
}

// parseElements checks the names of _elements against the types searched.
func parseElements(types []string, v string) ([]string, *fhirError) {
	var out []string
	for name := range strings.SplitSeq(v, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		known := false
		for _, t := range types {
			if viewOf(t).names[name] {
				known = true
			}
		}
		if !known {
			return nil, errf(http.StatusBadRequest, "invalid", "_elements: '%s' is not an element of %s.", safeName(name), strings.Join(types, ", "))
		}
		out = append(out, name)
	}
	if len(out) == 0 {
		return nil, badRequest("_elements names no element.")
	}
	return out, nil
}

// subsettedTag marks a resource that is not whole.
const subsettedTag = `{"system":"http://terminology.hl7.org/CodeSystem/v3-ObservationValue","code":"SUBSETTED","display":"subsetted"}`

// apply returns the view of the compact resource body of type typ.
func (v resultView) apply(typ string, body []byte) []byte {
	if v.full() {
		return body
	}
	ms, err := members(body, nil)
	if err != nil {
		return body
	}
	tv := viewOf(typ)
	keep := func(name string) bool {
		switch name {
		case "resourceType", "id", "meta":
			return true
		}
		f, ok := tv.facts[name]
		if !ok {
			return false
		}
		switch v.summary {
		case "true":
			return f.summary
		case "text":
			return name == "text" || f.required
		case "data":
			return name != "text"
		}
		if f.required {
			return true
		}
		for _, e := range v.elements {
			if e == name || e == tv.base[name] {
				return true
			}
		}
		return false
	}
	out := make([]byte, 0, len(body))
	out = append(out, '{')
	first := true
	for _, m := range ms {
		if !keep(m.key) {
			continue
		}
		if !first {
			out = append(out, ',')
		}
		first = false
		val := body[m.start:m.end]
		switch {
		case m.key == "meta":
			out = append(out, `"meta":`...)
			out = appendSubsetted(out, val)
			continue
		case v.summary == "true" && tv.facts[m.key].backbone:
			out = append(out, body[m.kstart:m.start]...)
			out = summaryBackbone(out, val, tv, m.key)
			continue
		}
		out = append(out, body[m.kstart:m.end]...)
	}
	if find(body, ms, "meta") == nil {
		if !first {
			out = append(out, ',')
		}
		out = append(out, `"meta":{"tag":[`+subsettedTag+`]}`...)
	}
	return append(out, '}')
}

// appendSubsetted appends meta with the SUBSETTED tag added.
func appendSubsetted(out, meta []byte) []byte {
	ms, err := members(meta, nil)
	if err != nil {
		return append(out, meta...)
	}
	out = append(out, '{')
	for _, m := range ms {
		if m.key == "tag" {
			continue
		}
		out = append(out, meta[m.kstart:m.end]...)
		out = append(out, ',')
	}
	out = append(out, `"tag":[`...)
	if tags := find(meta, ms, "tag"); len(tags) > 2 && tags[0] == '[' {
		out = append(out, tags[1:len(tags)-1]...)
		out = append(out, ',')
	}
	out = append(out, subsettedTag...)
	return append(out, "]}"...)
}

// summaryBackbone appends the summary elements of a backbone element
// value (an object or an array of them) at path.
func summaryBackbone(out, val []byte, tv *typeView, path string) []byte {
	one := func(out, obj []byte) []byte {
		ms, err := members(obj, nil)
		if err != nil {
			return append(out, obj...)
		}
		out = append(out, '{')
		first := true
		for _, m := range ms {
			f, ok := tv.facts[path+"."+m.key]
			if !ok || !f.summary && m.key != "id" {
				continue
			}
			if !first {
				out = append(out, ',')
			}
			first = false
			if f.backbone {
				out = append(out, obj[m.kstart:m.start]...)
				out = summaryBackbone(out, obj[m.start:m.end], tv, path+"."+m.key)
				continue
			}
			out = append(out, obj[m.kstart:m.end]...)
		}
		return append(out, '}')
	}
	if len(val) == 0 || val[0] != '[' {
		if len(val) > 0 && val[0] == '{' {
			return one(out, val)
		}
		return append(out, val...)
	}
	out = append(out, '[')
	i := 1
	firstEl := true
	for i < len(val)-1 {
		if val[i] == ',' {
			i++
		}
		end := skipValue(val, i)
		if !firstEl {
			out = append(out, ',')
		}
		firstEl = false
		if val[i] == '{' {
			out = one(out, val[i:end])
		} else {
			out = append(out, val[i:end]...)
		}
		i = end
	}
	return append(out, ']')
}
