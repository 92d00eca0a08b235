// Package r4 is a fhirpath.Typer for FHIR R4 built from the core package's definitions
// (elements.tsv.gz, written by ../extract). It serves the engine's tests, benchmarks and
// examples; the production Typer comes from the registry package.
package r4

import (
	"bufio"
	"bytes"
	"compress/gzip"
	_ "embed"
	"strings"
	"sync"

	"github.com/fhirload/fhirload/internal/fhirpath"
)

//go:embed elements.tsv.gz
var elementsGz []byte

// Typer answers for every R4 resource, datatype and backbone element.
type Typer struct {
	defs      []map[string]fhirpath.Element // by Element.Def: JSON property → element
	index     map[string]int32              // definition name → Def
	resources map[string]fhirpath.Element
}

var (
	once   sync.Once
	shared *Typer
)

// New returns the R4 Typer (loaded once, shared, safe for concurrent use).
func New() *Typer {
	once.Do(func() { shared = load() })
	return shared
}

func load() *Typer {
	zr, err := gzip.NewReader(bytes.NewReader(elementsGz))
	if err != nil {
		panic("r4: embedded elements: " + err.Error())
	}
	t := &Typer{index: map[string]int32{}, resources: map[string]fhirpath.Element{}}
	def := func(name string) int32 {
		if i, ok := t.index[name]; ok {
			return i
		}
		i := int32(len(t.defs))
		t.index[name] = i
		t.defs = append(t.defs, map[string]fhirpath.Element{})
		return i
	}
	sc := bufio.NewScanner(zr)
	sc.Scan() // header
	for sc.Scan() {
		f := strings.Split(sc.Text(), "\t")
		// def json name type path children choice kind
		if f[1] == "" {
			if f[7] == "resource" {
				t.resources[f[0]] = fhirpath.Element{Type: f[0], Path: f[0], Def: def(f[0])}
			}
			continue
		}
		t.defs[def(f[0])][f[1]] = fhirpath.Element{Name: f[2], Type: f[3], Path: f[4], Choice: f[6] == "1", Def: def(f[5])}
	}
	if err := sc.Err(); err != nil {
		panic("r4: embedded elements: " + err.Error())
	}
	return t
}

// Resource implements fhirpath.Typer.
func (t *Typer) Resource(name []byte) (fhirpath.Element, bool) {
	e, ok := t.resources[string(name)]
	return e, ok
}

// Element implements fhirpath.Typer.
func (t *Typer) Element(parent fhirpath.Element, key []byte) (fhirpath.Element, bool) {
	if parent.Def < 0 || int(parent.Def) >= len(t.defs) {
		return fhirpath.Element{}, false
	}
	e, ok := t.defs[parent.Def][string(key)]
	return e, ok
}

// IsResource reports whether name is an R4 resource type.
func (t *Typer) IsResource(name string) bool {
	_, ok := t.resources[name]
	return ok
}

// Defines reports whether name is an R4 type or resource this Typer defines (not a
// profile, not a backbone element).
func (t *Typer) Defines(name string) bool {
	_, ok := t.index[name]
	return ok && !strings.Contains(name, ".")
}
