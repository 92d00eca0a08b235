package transform

import (
	"archive/tar"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strings"

	"github.com/fhirload/fhirload/registry"
)

// Profile packages (Options.ProfilePackages): FHIR NPM packages as .tgz files (e.g. US
// Core's package.tgz), read from local disk when the Transformer is made. What is read:
// the JSON files directly under package/ whose resourceType is
//   - StructureDefinition with derivation "constraint": a profile on a resource type
//     (checked when a resource declares it in meta.profile) or an extension definition
//     (checked wherever its URL is used). The snapshot is required for profiles: the
//     elements its differential names are taken from it (as for the core profiles).
//   - ValueSet and CodeSystem: to expand the value sets of the profiles' required
//     bindings. Supported: concepts listed in compose.include, whole code systems of
//     the package (content complete), other value sets of the package or the core
//     package, exclusions of listed concepts, and expansion.contains. A value set with
//     filters, or over a code system that is in neither package, is not expanded: its
//     binding is not checked.
//
// Examples (package/example/), other folders and other resource types are ignored.
// Definitions of a package replace core definitions with the same URL.

// fhirPackage is what a profile package contributes.
type fhirPackage struct {
	name       string
	profiles   []*registry.Profile
	extensions []*registry.Extension
	// extProfiles are the extension definitions as profiles of Extension (the elements
	// their differential names), checked on every use of the extension: nested slices,
	// fixed values and required bindings (ombCategory's codes) below the first level.
	extProfiles []*registry.Profile
	valueSets   []*registry.ValueSet
}

// maxPackageFile bounds one JSON file of a package (US Core's largest is under 1 MB).
const maxPackageFile = 64 << 20

// loadPackage reads a package .tgz.
func loadPackage(file string, reg *registry.Registry) (*fhirPackage, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return nil, fmt.Errorf("%s: not a gzip file: %w", file, err)
	}
	tr := tar.NewReader(zr)
	pkg := &fhirPackage{name: file}
	var sds []*sdJSON
	systems := map[string]*csJSON{}
	var vss []*vsJSON
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		dir, base := path.Split(strings.TrimPrefix(h.Name, "./"))
		if h.Typeflag != tar.TypeReg || dir != "package/" || !strings.HasSuffix(base, ".json") || base == "package.json" || strings.HasPrefix(base, ".") {
			continue
		}
		if h.Size > maxPackageFile {
			return nil, fmt.Errorf("%s: %s is larger than %d MiB", file, h.Name, maxPackageFile>>20)
		}
		raw, err := io.ReadAll(io.LimitReader(tr, maxPackageFile))
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", file, h.Name, err)
		}
		var head struct {
			ResourceType string `json:"resourceType"`
		}
		if json.Unmarshal(raw, &head) != nil {
			continue
		}
		switch head.ResourceType {
		case "StructureDefinition":
			var sd sdJSON
			if err := json.Unmarshal(raw, &sd); err != nil {
				return nil, fmt.Errorf("%s: %s: %w", file, h.Name, err)
			}
			sds = append(sds, &sd)
		case "CodeSystem":
			var cs csJSON
			if err := json.Unmarshal(raw, &cs); err != nil {
				return nil, fmt.Errorf("%s: %s: %w", file, h.Name, err)
			}
			systems[cs.URL] = &cs
		case "ValueSet":
			var vs vsJSON
			if err := json.Unmarshal(raw, &vs); err != nil {
				return nil, fmt.Errorf("%s: %s: %w", file, h.Name, err)
			}
			vss = append(vss, &vs)
		}
	}
	slices.SortFunc(sds, func(a, b *sdJSON) int { return strings.Compare(a.URL, b.URL) })
	for _, sd := range sds {
		if sd.Derivation != "constraint" || sd.URL == "" {
			continue
		}
		elems, err := sd.elements(reg)
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", file, sd.URL, err)
		}
		if sd.Type == "Extension" {
			pkg.extensions = append(pkg.extensions, sd.extension(elems))
			pkg.extProfiles = append(pkg.extProfiles, &registry.Profile{URL: sd.URL, Name: sd.Name, Type: "Extension",
				Elements: sd.differentialOf(elems)})
			continue
		}
		if !reg.IsResourceType(sd.Type) || len(sd.Snapshot.Element) == 0 {
			continue // datatype profiles and profiles without a snapshot
		}
		pkg.profiles = append(pkg.profiles, &registry.Profile{URL: sd.URL, Name: sd.Name, Type: sd.Type,
			Base: trimVersion(sd.BaseDefinition), Abstract: sd.Abstract, Elements: elems})
	}
	byURL := map[string]*vsJSON{}
	for _, vs := range vss {
		byURL[trimVersion(vs.URL)] = vs
	}
	for _, vs := range vss {
		pkg.valueSets = append(pkg.valueSets, expandValueSet(vs, byURL, systems, reg, 0))
	}
	return pkg, nil
}

func trimVersion(url string) string {
	if i := strings.IndexByte(url, '|'); i >= 0 {
		return url[:i]
	}
	return url
}

// sdJSON is the part of a StructureDefinition the loader reads.
type sdJSON struct {
	URL            string `json:"url"`
	Name           string `json:"name"`
	Type           string `json:"type"`
	Abstract       bool   `json:"abstract"`
	BaseDefinition string `json:"baseDefinition"`
	Derivation     string `json:"derivation"`
	Context        []struct {
		Type       string `json:"type"`
		Expression string `json:"expression"`
	} `json:"context"`
	ContextInvariant []string `json:"contextInvariant"`
	Snapshot         struct {
		Element []json.RawMessage `json:"element"`
	} `json:"snapshot"`
	Differential struct {
		Element []struct {
			ID string `json:"id"`
		} `json:"element"`
	} `json:"differential"`
}

type elemJSON struct {
	ID        string `json:"id"`
	Path      string `json:"path"`
	SliceName string `json:"sliceName"`
	Min       int    `json:"min"`
	Max       string `json:"max"`
	Types     []struct {
		Code          string   `json:"code"`
		Profile       []string `json:"profile"`
		TargetProfile []string `json:"targetProfile"`
	} `json:"type"`
	ContentReference string `json:"contentReference"`
	Binding          *struct {
		Strength string `json:"strength"`
		ValueSet string `json:"valueSet"`
	} `json:"binding"`
	Constraint []struct {
		Key        string `json:"key"`
		Severity   string `json:"severity"`
		Human      string `json:"human"`
		Expression string `json:"expression"`
		Source     string `json:"source"`
	} `json:"constraint"`
	IsModifier  bool `json:"isModifier"`
	MustSupport bool `json:"mustSupport"`
	MaxLength   int  `json:"maxLength"`
	Slicing     *struct {
		Discriminator []struct {
			Type string `json:"type"`
			Path string `json:"path"`
		} `json:"discriminator"`
		Rules   string `json:"rules"`
		Ordered bool   `json:"ordered"`
	} `json:"slicing"`
}

// elements converts the snapshot elements the differential names (all of them for an
// extension, whose checks read its whole snapshot).
func (sd *sdJSON) elements(reg *registry.Registry) ([]registry.Element, error) {
	named := map[string]bool{}
	for _, e := range sd.Differential.Element {
		named[e.ID] = true
	}
	var out []registry.Element
	for i, raw := range sd.Snapshot.Element {
		var e elemJSON
		if err := json.Unmarshal(raw, &e); err != nil {
			return nil, fmt.Errorf("snapshot element %d: %w", i, err)
		}
		if e.ID == "" {
			e.ID = e.Path
		}
		if sd.Type != "Extension" && i > 0 && !named[e.ID] {
			continue
		}
		re := registry.Element{ID: e.ID, Path: e.Path, SliceName: e.SliceName, Min: e.Min, Max: registry.Unbounded,
			ContentReference: strings.TrimPrefix(e.ContentReference, "#"), Modifier: e.IsModifier, MustSupport: e.MustSupport, MaxLength: e.MaxLength}
		if e.Max != "*" && e.Max != "" {
			n, err := parseMax(e.Max)
			if err != nil {
				return nil, fmt.Errorf("%s: max %w", e.ID, err)
			}
			re.Max = n
		}
		for _, t := range e.Types {
			if strings.HasPrefix(t.Code, "http://hl7.org/fhirpath/System.") {
				re.Types = nil // a primitive's value or an id: its FHIR type is not in the code
				break
			}
			tr := registry.TypeRef{Code: t.Code}
			for _, p := range t.Profile {
				tr.Profiles = append(tr.Profiles, trimVersion(p))
			}
			for _, p := range t.TargetProfile {
				p = trimVersion(p)
				if name := strings.TrimPrefix(p, "http://hl7.org/fhir/StructureDefinition/"); name != p && reg.Type(name) != nil {
					p = name
				}
				tr.Targets = append(tr.Targets, p)
			}
			re.Types = append(re.Types, tr)
		}
		if e.Binding != nil {
			re.Binding = registry.Binding{Strength: e.Binding.Strength, ValueSet: trimVersion(e.Binding.ValueSet)}
		}
		for _, c := range e.Constraint {
			re.Constraints = append(re.Constraints, registry.Constraint{Key: c.Key, Severity: c.Severity, Human: c.Human, Expression: c.Expression, Source: c.Source})
		}
		if e.Slicing != nil {
			s := &registry.Slicing{Rules: e.Slicing.Rules, Ordered: e.Slicing.Ordered}
			for _, d := range e.Slicing.Discriminator {
				s.Discriminators = append(s.Discriminators, registry.Discriminator{Type: d.Type, Path: d.Path})
			}
			re.Slicing = s
		}
		var props map[string]json.RawMessage
		if err := json.Unmarshal(raw, &props); err != nil {
			return nil, err
		}
		for k, v := range props {
			var dst **registry.Value
			typ := ""
			switch {
			case strings.HasPrefix(k, "fixed"):
				dst, typ = &re.Fixed, k[len("fixed"):]
			case strings.HasPrefix(k, "pattern"):
				dst, typ = &re.Pattern, k[len("pattern"):]
			default:
				continue
			}
			if typ == "" {
				continue
			}
			if lower := strings.ToLower(typ[:1]) + typ[1:]; reg.Type(lower) != nil && reg.Type(lower).Kind == registry.Primitive {
				typ = lower
			}
			*dst = &registry.Value{Type: typ, JSON: string(v)}
		}
		out = append(out, re)
	}
	return out, nil
}

// differentialOf keeps the elements the differential names (and the root).
func (sd *sdJSON) differentialOf(elems []registry.Element) []registry.Element {
	named := map[string]bool{}
	for _, e := range sd.Differential.Element {
		named[e.ID] = true
	}
	var out []registry.Element
	for i, e := range elems {
		if i == 0 || named[e.ID] {
			out = append(out, e)
		}
	}
	return out
}

func parseMax(s string) (int, error) {
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' || n > 1<<20 {
			return 0, errors.New("not a number or *")
		}
		n = n*10 + int(c-'0')
	}
	return n, nil
}

// extension makes the extension definition of an Extension StructureDefinition.
func (sd *sdJSON) extension(elems []registry.Element) *registry.Extension {
	x := &registry.Extension{URL: sd.URL, Name: sd.Name, ContextInvariants: sd.ContextInvariant, Max: registry.Unbounded, Elements: elems}
	for _, c := range sd.Context {
		x.Contexts = append(x.Contexts, registry.Context{Type: c.Type, Expression: c.Expression})
	}
	children := map[string]*registry.ExtensionChild{}
	var order []string
	for _, e := range elems {
		switch {
		case e.ID == "Extension":
			x.Min, x.Max = e.Min, e.Max
		case e.ID == "Extension.value[x]" && e.Max != 0:
			for _, t := range e.Types {
				x.ValueTypes = append(x.ValueTypes, t.Code)
			}
		case strings.HasPrefix(e.ID, "Extension.extension:"):
			rest := e.ID[len("Extension.extension:"):]
			name, sub, _ := strings.Cut(rest, ".")
			if strings.Contains(name, ":") {
				continue
			}
			ch := children[name]
			if ch == nil {
				ch = &registry.ExtensionChild{URL: name, Max: registry.Unbounded}
				children[name] = ch
				order = append(order, name)
			}
			switch sub {
			case "":
				ch.Min, ch.Max = e.Min, e.Max
			case "url":
				if e.Fixed != nil {
					var u string
					if json.Unmarshal([]byte(e.Fixed.JSON), &u) == nil {
						ch.URL = u
					}
				}
			case "value[x]":
				if e.Max != 0 {
					for _, t := range e.Types {
						ch.ValueTypes = append(ch.ValueTypes, t.Code)
					}
				}
			}
		}
	}
	for _, name := range order {
		x.Children = append(x.Children, *children[name])
	}
	return x
}

// csJSON and vsJSON are the parts of CodeSystems and ValueSets the loader reads.
type csJSON struct {
	URL     string      `json:"url"`
	Content string      `json:"content"`
	Concept []conceptJS `json:"concept"`
}

type conceptJS struct {
	Code    string      `json:"code"`
	Concept []conceptJS `json:"concept"`
}

type vsInclude struct {
	System   string            `json:"system"`
	Concept  []conceptJS       `json:"concept"`
	Filter   []json.RawMessage `json:"filter"`
	ValueSet []string          `json:"valueSet"`
}

type vsJSON struct {
	URL     string `json:"url"`
	Name    string `json:"name"`
	Compose struct {
		Include []vsInclude `json:"include"`
		Exclude []vsInclude `json:"exclude"`
	} `json:"compose"`
	Expansion struct {
		Contains []containsJS `json:"contains"`
	} `json:"expansion"`
}

type containsJS struct {
	System   string       `json:"system"`
	Code     string       `json:"code"`
	Contains []containsJS `json:"contains"`
}

// expandValueSet expands a package value set (see the package comment for what is
// supported); Complete is false, with the reason, when it cannot be expanded.
func expandValueSet(vs *vsJSON, byURL map[string]*vsJSON, systems map[string]*csJSON, reg *registry.Registry, depth int) *registry.ValueSet {
	out := &registry.ValueSet{URL: trimVersion(vs.URL), Name: vs.Name, Complete: true}
	incomplete := func(why string) *registry.ValueSet {
		out.Complete, out.Incomplete = false, why
		return out
	}
	if len(vs.Expansion.Contains) > 0 {
		var walk func([]containsJS)
		walk = func(cs []containsJS) {
			for _, c := range cs {
				if c.Code != "" {
					out.Codes = append(out.Codes, registry.Code{System: c.System, Code: c.Code})
				}
				walk(c.Contains)
			}
		}
		walk(vs.Expansion.Contains)
		return out
	}
	if depth > 8 {
		return incomplete("value sets include each other too deeply")
	}
	for _, inc := range vs.Compose.Include {
		switch {
		case len(inc.Filter) > 0:
			return incomplete("a filter on " + inc.System)
		case len(inc.Concept) > 0:
			for _, c := range inc.Concept {
				out.Codes = append(out.Codes, registry.Code{System: inc.System, Code: c.Code})
			}
		case inc.System != "":
			cs := systems[inc.System]
			if cs == nil || cs.Content != "complete" {
				return incomplete("code system " + inc.System + " is not in the package")
			}
			var walk func([]conceptJS)
			walk = func(cs []conceptJS) {
				for _, c := range cs {
					out.Codes = append(out.Codes, registry.Code{System: inc.System, Code: c.Code})
					walk(c.Concept)
				}
			}
			walk(cs.Concept)
		}
		for _, u := range inc.ValueSet {
			u = trimVersion(u)
			var sub *registry.ValueSet
			if other := byURL[u]; other != nil {
				sub = expandValueSet(other, byURL, systems, reg, depth+1)
			} else {
				sub = reg.ValueSet(u)
			}
			if sub == nil || !sub.Complete {
				return incomplete("value set " + u + " cannot be expanded")
			}
			out.Codes = append(out.Codes, sub.Codes...)
		}
	}
	for _, exc := range vs.Compose.Exclude {
		if len(exc.Concept) == 0 {
			return incomplete("an exclusion other than listed concepts")
		}
		for _, c := range exc.Concept {
			out.Codes = slices.DeleteFunc(out.Codes, func(k registry.Code) bool { return k.System == exc.System && k.Code == c.Code })
		}
	}
	return out
}
