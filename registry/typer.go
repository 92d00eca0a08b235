package registry

import (
	"strings"

	"github.com/fhirload/fhirload/internal/fhirpath"
)

// Typer returns the fhirpath.Typer of the registry's types: how the JSON properties of
// every resource, datatype and backbone element map to elements (name, FHIR type,
// element definition path). It is built on first use (a few milliseconds), shared, and
// safe for concurrent use; its lookups do not allocate.
//
// Conventions, which transform's validator follows when it appends the same nodes
// while it walks a line: a choice property (valueQuantity) is the element "value" of
// type Quantity with the path "Observation.value[x]"; an element that reuses another's
// definition (Questionnaire.item.item) has that element's path ("Questionnaire.item");
// the id and extension of a primitive (its "_name" companion) are those of Element
// ("Element.id", "Element.extension").
func (r *Registry) Typer() fhirpath.Typer {
	r.typerOnce.Do(func() { r.typer = newTyper(r) })
	return r.typer
}

type typer struct {
	defs      []map[string]fhirpath.Element // by Element.Def: JSON property → element
	index     map[string]int32              // type name or backbone path → Def
	resources map[string]fhirpath.Element
}

func newTyper(r *Registry) *typer {
	t := &typer{index: map[string]int32{}, resources: map[string]fhirpath.Element{}}
	for _, ty := range r.types {
		root := t.def(ty.Name)
		if ty.Kind == Resource && !ty.Abstract {
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
				switch k := r.typeByName[tr.Code]; {
				case tr.Code == "BackboneElement" || tr.Code == "Element":
					el.Def = t.def(e.Path)
				case tr.Code == "Resource":
				case k != nil && k.Kind == Primitive:
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
