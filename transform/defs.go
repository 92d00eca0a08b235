package transform

import (
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/fhirload/fhirload/registry"
)

// definitions are the extension definitions, profiles and value sets the validator
// knows beyond the base types: the core package's, plus those of
// Options.ProfilePackages. Read-only once built, shared by the validators of a
// Transformer.
type definitions struct {
	exts      map[string]*extDef
	profiles  map[string]*profileDef
	valueSets map[string]*valueSetDef
	coreTypes map[string]string // URL of a core resource type's definition → the type

	// sources of the package profiles and value sets, by URL, while compiling
	pkgProfiles  map[string]*registry.Profile
	pkgValueSets map[string]*registry.ValueSet
}

// coreDefinitions are the core package's, built once per process and shared.
var coreDefinitions = sync.OnceValues(func() (*definitions, error) {
	return newDefinitions(registry.R4(), nil)
})

// newDefinitions compiles the core package's definitions and those of pkgs.
func newDefinitions(reg *registry.Registry, pkgs []*fhirPackage) (*definitions, error) {
	d := &definitions{exts: map[string]*extDef{}, profiles: map[string]*profileDef{}, valueSets: map[string]*valueSetDef{},
		pkgProfiles: map[string]*registry.Profile{}, pkgValueSets: map[string]*registry.ValueSet{}}
	for _, x := range reg.Extensions() {
		d.exts[x.URL] = newExtDef(x)
	}
	d.coreTypes = map[string]string{}
	for _, name := range reg.ResourceTypes() {
		d.coreTypes[reg.Type(name).URL] = name
	}
	var sources []*registry.Profile
	sources = append(sources, reg.Profiles()...)
	for _, p := range pkgs {
		for _, x := range p.extensions {
			d.exts[x.URL] = newExtDef(x)
		}
		for _, vs := range p.valueSets {
			d.pkgValueSets[vs.URL] = vs
		}
		for _, pr := range p.profiles {
			d.pkgProfiles[pr.URL] = pr
			sources = append(sources, pr)
		}
	}
	for _, p := range sources {
		if _, err := d.profile(p.URL, reg, nil); err != nil {
			return nil, err
		}
	}
	for _, p := range pkgs {
		for _, xp := range p.extProfiles {
			pd, err := d.compileProfile(xp, reg)
			if err != nil {
				return nil, fmt.Errorf("transform: extension %s: %w", xp.URL, err)
			}
			pd.rule = "ext:" + xp.URL
			if x := d.exts[xp.URL]; x != nil {
				x.prof = pd
			}
		}
	}
	d.pkgProfiles, d.pkgValueSets = nil, nil
	return d, nil
}

// profileSource returns the definition of a profile by URL: a package's, else the
// core package's.
func (d *definitions) profileSource(url string, reg *registry.Registry) *registry.Profile {
	if p := d.pkgProfiles[url]; p != nil {
		return p
	}
	return reg.Profile(url)
}

// profile compiles the profile url and the profiles it derives from, once each.
func (d *definitions) profile(url string, reg *registry.Registry, seen []string) (*profileDef, error) {
	if pd, ok := d.profiles[url]; ok {
		return pd, nil
	}
	src := d.profileSource(url, reg)
	if src == nil {
		return nil, nil
	}
	if slices.Contains(seen, url) {
		return nil, fmt.Errorf("transform: profile %s derives from itself", url)
	}
	pd, err := d.compileProfile(src, reg)
	if err != nil {
		return nil, fmt.Errorf("transform: profile %s: %w", url, err)
	}
	if base := src.Base; base != "" && (reg.Type(src.Type) == nil || reg.Type(src.Type).URL != base) {
		if pd.base, err = d.profile(base, reg, append(seen, url)); err != nil {
			return nil, err
		}
	}
	d.profiles[url] = pd
	return pd, nil
}

// valueSet returns the value set of a required binding in a profile: a package's, else
// the core package's; unknown value sets are external (not checked).
func (d *definitions) valueSet(url string, reg *registry.Registry) *valueSetDef {
	if i := strings.IndexByte(url, '|'); i >= 0 {
		url = url[:i]
	}
	if vs, ok := d.valueSets[url]; ok {
		return vs
	}
	src := d.pkgValueSets[url]
	if src == nil {
		src = reg.ValueSet(url)
	}
	vs := newValueSetDef(url, src)
	d.valueSets[url] = vs
	return vs
}
