package registry

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/fhirload/fhirload/internal/fhirpath"
)

// Contents is what a Registry is made of. The generator fills it from the FHIR package;
// tests may build small registries from it.
type Contents struct {
	Version      string
	Types        []*Type
	ValueSets    []*ValueSet
	SearchParams []*SearchParam
	Compartments []*Compartment
	Extensions   []*Extension
	Profiles     []*Profile
}

// Registry is a FHIR version's definitions. Use R4, New or Decode to get one.
//
// The embedded R4 registry decodes its types and value sets on first use and each of
// the other sections (search parameters and compartments, extensions, profiles) when
// it is first asked for; the sync.Once fields below guard that, and nothing changes
// after a section is decoded.
type Registry struct {
	version       string
	types         []*Type // sorted by name
	typeByName    map[string]*Type
	resourceTypes []string // concrete resource type names, sorted
	valueSets     map[string]*ValueSet
	valueSetList  []*ValueSet

	lazy        *lazy // nil when every section is present
	searchOnce  sync.Once
	extOnce     sync.Once
	profileOnce sync.Once
	typerOnce   sync.Once
	typer       *typer
	invOnce     sync.Once
	invSet      *fhirpath.Set
	invErr      error

	params        []*SearchParam
	paramsByType  map[string][]*SearchParam
	compartments  []*Compartment
	extensions    map[string]*Extension
	extensionList []*Extension
	profiles      map[string]*Profile
	profileList   []*Profile
}

// New builds a registry from its contents, which it keeps (and sorts): the caller must
// not modify them afterwards. It checks that names and URLs are unique and that every
// element's path starts with its type's name.
func New(c Contents) (*Registry, error) {
	r := &Registry{version: c.Version}
	if err := r.setTypes(c.Types, c.ValueSets); err != nil {
		return nil, err
	}
	if err := r.setSearch(c.SearchParams, c.Compartments); err != nil {
		return nil, err
	}
	if err := r.setExtensions(c.Extensions); err != nil {
		return nil, err
	}
	if err := r.setProfiles(c.Profiles); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *Registry) setTypes(types []*Type, valueSets []*ValueSet) error {
	r.types = types
	r.typeByName = make(map[string]*Type, len(types))
	slices.SortFunc(r.types, func(a, b *Type) int { return strings.Compare(a.Name, b.Name) })
	for _, t := range r.types {
		if r.typeByName[t.Name] != nil {
			return fmt.Errorf("registry: type %s defined twice", t.Name)
		}
		r.typeByName[t.Name] = t
		for i := range t.Elements {
			p := t.Elements[i].Path
			if p != t.Name && !strings.HasPrefix(p, t.Name+".") {
				return fmt.Errorf("registry: type %s: element %s outside the type", t.Name, p)
			}
		}
		if t.Kind == Resource && !t.Abstract {
			r.resourceTypes = append(r.resourceTypes, t.Name)
		}
	}
	r.valueSetList = valueSets
	r.valueSets = make(map[string]*ValueSet, len(valueSets))
	slices.SortFunc(r.valueSetList, func(a, b *ValueSet) int { return strings.Compare(a.URL, b.URL) })
	for _, v := range r.valueSetList {
		if r.valueSets[v.URL] != nil {
			return fmt.Errorf("registry: value set %s defined twice", v.URL)
		}
		slices.SortFunc(v.Codes, func(a, b Code) int {
			return cmp.Or(strings.Compare(a.Code, b.Code), strings.Compare(a.System, b.System))
		})
		r.valueSets[v.URL] = v
	}
	return nil
}

func (r *Registry) setSearch(params []*SearchParam, compartments []*Compartment) error {
	r.params = params
	r.paramsByType = map[string][]*SearchParam{}
	slices.SortFunc(r.params, func(a, b *SearchParam) int { return strings.Compare(a.URL, b.URL) })
	for _, p := range r.params {
		for _, b := range p.Base {
			switch b {
			case "Resource":
				for _, rt := range r.resourceTypes {
					r.paramsByType[rt] = append(r.paramsByType[rt], p)
				}
			case "DomainResource":
				for _, rt := range r.resourceTypes {
					if r.typeByName[rt].Base == "DomainResource" {
						r.paramsByType[rt] = append(r.paramsByType[rt], p)
					}
				}
			default:
				r.paramsByType[b] = append(r.paramsByType[b], p)
			}
		}
	}
	for rt, ps := range r.paramsByType {
		slices.SortFunc(ps, func(a, b *SearchParam) int { return strings.Compare(a.Code, b.Code) })
		for i := 1; i < len(ps); i++ {
			if ps[i].Code == ps[i-1].Code {
				return fmt.Errorf("registry: %s has two search parameters %q (%s, %s)", rt, ps[i].Code, ps[i-1].URL, ps[i].URL)
			}
		}
	}
	r.compartments = compartments
	slices.SortFunc(r.compartments, func(a, b *Compartment) int { return strings.Compare(a.Code, b.Code) })
	for _, c := range r.compartments {
		slices.SortFunc(c.Resources, func(a, b CompartmentResource) int { return strings.Compare(a.Type, b.Type) })
	}
	return nil
}

func (r *Registry) setExtensions(exts []*Extension) error {
	r.extensionList = exts
	r.extensions = make(map[string]*Extension, len(exts))
	slices.SortFunc(r.extensionList, func(a, b *Extension) int { return strings.Compare(a.URL, b.URL) })
	for _, e := range r.extensionList {
		if r.extensions[e.URL] != nil {
			return fmt.Errorf("registry: extension %s defined twice", e.URL)
		}
		r.extensions[e.URL] = e
	}
	return nil
}

func (r *Registry) setProfiles(profiles []*Profile) error {
	r.profileList = profiles
	r.profiles = make(map[string]*Profile, len(profiles))
	slices.SortFunc(r.profileList, func(a, b *Profile) int { return strings.Compare(a.URL, b.URL) })
	for _, p := range r.profileList {
		if r.profiles[p.URL] != nil {
			return fmt.Errorf("registry: profile %s defined twice", p.URL)
		}
		r.profiles[p.URL] = p
	}
	return nil
}

// Contents returns what the registry is made of (shared, read-only).
func (r *Registry) Contents() Contents {
	r.loadSearch()
	r.loadExtensions()
	r.loadProfiles()
	return Contents{
		Version:      r.version,
		Types:        r.types,
		ValueSets:    r.valueSetList,
		SearchParams: r.params,
		Compartments: r.compartments,
		Extensions:   r.extensionList,
		Profiles:     r.profileList,
	}
}
