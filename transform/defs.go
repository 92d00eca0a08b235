package transform

import (
	"sync"

	"github.com/fhirload/fhirload/registry"
)

// definitions are the extension definitions and profiles the validator knows: the core
// package's, plus those of Options.ProfilePackages. Read-only once built.
type definitions struct {
	exts map[string]*extDef
}

// coreDefinitions are the core package's, built once per process and shared.
var coreDefinitions = sync.OnceValue(func() *definitions {
	return newDefinitions(registry.R4())
})

func newDefinitions(reg *registry.Registry) *definitions {
	d := &definitions{exts: map[string]*extDef{}}
	for _, x := range reg.Extensions() {
		d.exts[x.URL] = newExtDef(x)
	}
	return d
}
