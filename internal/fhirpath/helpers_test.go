package fhirpath_test

import (
	"strings"
	"testing"

	"github.com/fhirload/fhirload/internal/fhirpath"
	"github.com/fhirload/fhirload/internal/fhirpath/internal/r4"
)

// build parses a resource with the R4 test Typer.
func build(t testing.TB, src string) *fhirpath.Tree {
	t.Helper()
	var tr fhirpath.Tree
	if err := tr.Build([]byte(src), r4.New()); err != nil {
		t.Fatalf("build: %v", err)
	}
	return &tr
}

// show writes a collection the way the tables below expect it: System values as
// FHIRPath literals, primitive nodes by their JSON text, other nodes by their type.
func show(tr *fhirpath.Tree, c fhirpath.Collection) string {
	parts := make([]string, len(c))
	for i, v := range c {
		switch v.Kind() {
		case fhirpath.KindNode:
			n := tr.Node(v.Node())
			if n.Kind != fhirpath.NoValue {
				raw := string(tr.Raw(v.Node()))
				if n.Kind == fhirpath.JSONString || n.Kind == fhirpath.JSONEscaped {
					raw = "\"" + raw + "\""
				}
				parts[i] = raw
			} else {
				parts[i] = n.Type
			}
		case fhirpath.KindString:
			parts[i] = "'" + v.String() + "'"
		case fhirpath.KindDate, fhirpath.KindDateTime:
			parts[i] = "@" + v.String()
		case fhirpath.KindTime:
			parts[i] = "@T" + v.String()
		default:
			parts[i] = v.String()
		}
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

func r4New() fhirpath.Typer { return r4.New() }

// containsWord reports whether w appears in s as a whole word.
func containsWord(s, w string) bool {
	for i := 0; i+len(w) <= len(s); i++ {
		if s[i:i+len(w)] == w && (i == 0 || !isWordByte(s[i-1])) && (i+len(w) == len(s) || !isWordByte(s[i+len(w)])) {
			return true
		}
	}
	return false
}

func isWordByte(c byte) bool {
	return c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}
