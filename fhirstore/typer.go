package fhirstore

import (
	"strings"
	"sync"

	"github.com/fhirload/fhirload/internal/fhirpath"
	spec "github.com/fhirload/fhirload/registry"
)

// typer is the fhirpath.Typer of the registry's types: how the JSON
// properties of every resource, datatype and backbone element map to
// elements (name, FHIR type, element definition path). The store builds a
// fhirpath tree of every resource it writes with it, to evaluate the
// search parameters' expressions. Its lookups do not allocate.
type typer struct {
	defs      []map[string]fhirpath.Element // by Element.Def: JSON property → element
	index     map[string]int32              // type name or backbone path → Def
	resources map[string]fhirpath.Element
}

// r4Typer returns the shared typer, built on first use.
var r4Typer = sync.OnceValue(func() *typer { return newTyper(spec.R4()) })

func newTyper(r *spec.Registry) *typer {
	t := &typer{index: map[string]int32{}, resources: map[string]fhirpath.Element{}}
	for _, ty := range r.Types() {
		root := t.def(ty.Name)
		if ty.Kind == spec.Resource && !ty.Abstract {
			t.resources[ty.Name] = fhirpath.Element{Type: ty.Name, Path: ty.Name, Def: root}
		}
		for i := range ty.Elements {
			e := &ty.Elements[i]
			dot := strings.LastIndexByte(e.Path, '.')
			if dot < 0 || e.Max == 0 {
				continue
			}
			parent := t.defs[t.def(e.Path[:dot])]
			name := strings.TrimSuffix(e.Path[dot+1:], "[x]")
			if e.ContentReference != "" {
				parent[name] = fhirpath.Element{Name: name, Type: "BackboneElement", Path: e.ContentReference, Def: t.def(e.ContentReference)}
				continue
			}
			for _, tr := range e.Types {
				if strings.HasPrefix(tr.Code, "System.") {
					continue // a primitive's value: not a JSON property of its own
				}
				el := fhirpath.Element{Name: name, Type: tr.Code, Path: e.Path, Choice: e.IsChoice(), Def: -1}
				switch k := r.Type(tr.Code); {
				case tr.Code == "BackboneElement" || tr.Code == "Element":
					el.Def = t.def(e.Path)
				case tr.Code == "Resource":
				case k != nil && k.Kind == spec.Primitive:
					el.Def = t.def("Element")
				default:
					el.Def = t.def(tr.Code)
				}
				parent[e.JSONName(tr.Code)] = el
			}
		}
	}
	return t
}

// def returns the Def of a type name or backbone path, adding it on first use.
func (t *typer) def(name string) int32 {
	if i, ok := t.index[name]; ok {
		return i
	}
	i := int32(len(t.defs))
	t.index[name] = i
	t.defs = append(t.defs, map[string]fhirpath.Element{})
	return i
}

// Resource implements fhirpath.Typer.
func (t *typer) Resource(name []byte) (fhirpath.Element, bool) {
	e, ok := t.resources[string(name)]
	return e, ok
}

// Element implements fhirpath.Typer.
func (t *typer) Element(parent fhirpath.Element, key []byte) (fhirpath.Element, bool) {
	if parent.Def < 0 || int(parent.Def) >= len(t.defs) {
		return fhirpath.Element{}, false
	}
	e, ok := t.defs[parent.Def][string(key)]
	return e, ok
}
