package spec

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/fhirload/fhirload/registry"
)

const coreSD = "http://hl7.org/fhir/StructureDefinition/"

type sdJSON struct {
	ID               string `json:"id"`
	URL              string `json:"url"`
	Name             string `json:"name"`
	Kind             string `json:"kind"`
	Abstract         bool   `json:"abstract"`
	Type             string `json:"type"`
	BaseDefinition   string `json:"baseDefinition"`
	Derivation       string `json:"derivation"`
	ContextInvariant []string
	Context          []struct {
		Type       string `json:"type"`
		Expression string `json:"expression"`
	} `json:"context"`
	Snapshot struct {
		Element []elementJSON `json:"element"`
	} `json:"snapshot"`
	Differential struct {
		Element []struct {
			ID string `json:"id"`
		} `json:"element"`
	} `json:"differential"`
}

type typeJSON struct {
	Code          string   `json:"code"`
	Profile       []string `json:"profile"`
	TargetProfile []string `json:"targetProfile"`
	Extension     []struct {
		URL         string `json:"url"`
		ValueURL    string `json:"valueUrl"`
		ValueString string `json:"valueString"`
	} `json:"extension"`
}

type elementJSON struct {
	ID               string     `json:"id"`
	Path             string     `json:"path"`
	SliceName        string     `json:"sliceName"`
	Min              int        `json:"min"`
	Max              string     `json:"max"`
	Type             []typeJSON `json:"type"`
	ContentReference string     `json:"contentReference"`
	IsModifier       bool       `json:"isModifier"`
	IsSummary        bool       `json:"isSummary"`
	MustSupport      bool       `json:"mustSupport"`
	MaxLength        int        `json:"maxLength"`
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
	Slicing *struct {
		Discriminator []struct {
			Type string `json:"type"`
			Path string `json:"path"`
		} `json:"discriminator"`
		Rules   string `json:"rules"`
		Ordered bool   `json:"ordered"`
	} `json:"slicing"`
	fixed, pattern *registry.Value
}

// UnmarshalJSON decodes the known fields and the fixed[x]/pattern[x] values.
func (e *elementJSON) UnmarshalJSON(b []byte) error {
	type plain elementJSON
	if err := json.Unmarshal(b, (*plain)(e)); err != nil {
		return err
	}
	var all map[string]json.RawMessage
	if err := json.Unmarshal(b, &all); err != nil {
		return err
	}
	for k, v := range all {
		var dst **registry.Value
		var suffix string
		switch {
		case strings.HasPrefix(k, "fixed"):
			dst, suffix = &e.fixed, k[len("fixed"):]
		case strings.HasPrefix(k, "pattern"):
			dst, suffix = &e.pattern, k[len("pattern"):]
		default:
			continue
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, v); err != nil {
			return err
		}
		*dst = &registry.Value{Type: typeName(suffix), JSON: buf.String()}
	}
	return nil
}

// typeName turns the suffix of a JSON name (valueCodeableConcept → CodeableConcept,
// fixedUri → uri) into the type's name.
func typeName(suffix string) string {
	lower := strings.ToLower(suffix[:1]) + suffix[1:]
	if primitives[lower] {
		return lower
	}
	return suffix
}

var primitives = map[string]bool{
	"base64Binary": true, "boolean": true, "canonical": true, "code": true, "date": true, "dateTime": true,
	"decimal": true, "id": true, "instant": true, "integer": true, "markdown": true, "oid": true,
	"positiveInt": true, "string": true, "time": true, "unsignedInt": true, "uri": true, "url": true,
	"uuid": true, "xhtml": true,
}

type searchParamJSON struct {
	URL         string   `json:"url"`
	Name        string   `json:"name"`
	Code        string   `json:"code"`
	Base        []string `json:"base"`
	Type        string   `json:"type"`
	Expression  string   `json:"expression"`
	XPathUsage  string   `json:"xpathUsage"`
	Target      []string `json:"target"`
	Modifier    []string `json:"modifier"`
	Comparator  []string `json:"comparator"`
	MultipleOr  *bool    `json:"multipleOr"`
	MultipleAnd *bool    `json:"multipleAnd"`
	Chain       []string `json:"chain"`
	Component   []struct {
		Definition string `json:"definition"`
		Expression string `json:"expression"`
	} `json:"component"`
	Description string `json:"description"`
}

type compartmentJSON struct {
	URL      string `json:"url"`
	Code     string `json:"code"`
	Resource []struct {
		Code  string   `json:"code"`
		Param []string `json:"param"`
	} `json:"resource"`
}

type conceptJSON struct {
	Code    string        `json:"code"`
	Concept []conceptJSON `json:"concept"`
}

type codeSystemJSON struct {
	URL     string        `json:"url"`
	Name    string        `json:"name"`
	Content string        `json:"content"`
	Concept []conceptJSON `json:"concept"`
}

type includeJSON struct {
	System  string        `json:"system"`
	Concept []conceptJSON `json:"concept"`
	Filter  []struct {
		Property string `json:"property"`
		Op       string `json:"op"`
		Value    string `json:"value"`
	} `json:"filter"`
	ValueSet []string `json:"valueSet"`
}

type valueSetJSON struct {
	URL     string `json:"url"`
	Name    string `json:"name"`
	Compose struct {
		Include []includeJSON `json:"include"`
		Exclude []includeJSON `json:"exclude"`
	} `json:"compose"`
}

type loader struct {
	sds          []*sdJSON
	valueSets    map[string]*valueSetJSON
	codeSystems  map[string]*codeSystemJSON
	params       []*searchParamJSON
	compartments []*compartmentJSON
	coreTypes    map[string]bool // names of core StructureDefinitions of types
}

// Load reads the trimmed package written by Vendor (gzip NDJSON) and returns the
// registry's contents.
func Load(r io.Reader) (registry.Contents, error) {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return registry.Contents{}, err
	}
	l := &loader{valueSets: map[string]*valueSetJSON{}, codeSystems: map[string]*codeSystemJSON{}, coreTypes: map[string]bool{}}
	sc := bufio.NewScanner(zr)
	sc.Buffer(nil, 64<<20)
	n := 0
	for sc.Scan() {
		n++
		line := sc.Bytes()
		var head struct {
			ResourceType string `json:"resourceType"`
		}
		if err := json.Unmarshal(line, &head); err != nil {
			return registry.Contents{}, fmt.Errorf("line %d: %w", n, err)
		}
		var dst any
		switch head.ResourceType {
		case "StructureDefinition":
			sd := &sdJSON{}
			l.sds = append(l.sds, sd)
			dst = sd
		case "SearchParameter":
			p := &searchParamJSON{}
			l.params = append(l.params, p)
			dst = p
		case "CompartmentDefinition":
			c := &compartmentJSON{}
			l.compartments = append(l.compartments, c)
			dst = c
		case "ValueSet":
			dst = &valueSetJSON{}
		case "CodeSystem":
			dst = &codeSystemJSON{}
		default:
			return registry.Contents{}, fmt.Errorf("line %d: unexpected %s", n, head.ResourceType)
		}
		if err := json.Unmarshal(line, dst); err != nil {
			return registry.Contents{}, fmt.Errorf("line %d: %w", n, err)
		}
		switch v := dst.(type) {
		case *valueSetJSON:
			l.valueSets[v.URL] = v
		case *codeSystemJSON:
			l.codeSystems[v.URL] = v
		}
	}
	if err := sc.Err(); err != nil {
		return registry.Contents{}, err
	}
	return l.contents()
}

func (l *loader) contents() (registry.Contents, error) {
	c := registry.Contents{Version: "4.0.1"}
	for _, sd := range l.sds {
		if sd.Derivation != "constraint" {
			l.coreTypes[sd.ID] = true
		}
	}
	required := map[string]bool{}
	for _, sd := range l.sds {
		switch {
		case sd.Derivation != "constraint":
			t, err := l.typeOf(sd)
			if err != nil {
				return c, err
			}
			c.Types = append(c.Types, t)
		case sd.Type == "Extension":
			c.Extensions = append(c.Extensions, l.extension(sd))
		default:
			c.Profiles = append(c.Profiles, l.profile(sd))
		}
		for _, e := range sd.Snapshot.Element {
			if e.Binding != nil && e.Binding.Strength == "required" && e.Binding.ValueSet != "" {
				required[noVersion(e.Binding.ValueSet)] = true
			}
		}
	}
	urls := make([]string, 0, len(required))
	for u := range required {
		urls = append(urls, u)
	}
	slices.Sort(urls)
	for _, u := range urls {
		c.ValueSets = append(c.ValueSets, l.expand(u))
	}
	for _, p := range l.params {
		if len(p.Base) == 0 {
			continue // published without a base (CodeSystem/ValueSet extension parameters)
		}
		sp := &registry.SearchParam{URL: p.URL, Name: p.Name, Code: p.Code, Base: p.Base, Type: p.Type,
			Expression: p.Expression, XPathUsage: p.XPathUsage, Targets: p.Target, Modifiers: p.Modifier,
			Comparators: p.Comparator, MultipleOr: tri(p.MultipleOr), MultipleAnd: tri(p.MultipleAnd), Chain: p.Chain,
			Description: p.Description}
		for _, comp := range p.Component {
			sp.Components = append(sp.Components, registry.SearchComponent{Definition: comp.Definition, Expression: comp.Expression})
		}
		c.SearchParams = append(c.SearchParams, sp)
	}
	for _, cd := range l.compartments {
		cm := &registry.Compartment{Code: cd.Code, URL: cd.URL}
		for _, r := range cd.Resource {
			cm.Resources = append(cm.Resources, registry.CompartmentResource{Type: r.Code, Params: r.Param})
		}
		c.Compartments = append(c.Compartments, cm)
	}
	return c, nil
}

func tri(b *bool) registry.Tristate {
	switch {
	case b == nil:
		return registry.Unset
	case *b:
		return registry.True
	}
	return registry.False
}

func noVersion(url string) string {
	u, _, _ := strings.Cut(url, "|")
	return u
}

func lastPart(url string) string { return url[strings.LastIndexByte(url, '/')+1:] }

func (l *loader) typeOf(sd *sdJSON) (*registry.Type, error) {
	t := &registry.Type{Name: sd.ID, URL: sd.URL, Abstract: sd.Abstract}
	switch sd.Kind {
	case "primitive-type":
		t.Kind = registry.Primitive
	case "complex-type":
		t.Kind = registry.Complex
	case "resource":
		t.Kind = registry.Resource
	default:
		return nil, fmt.Errorf("%s: kind %q", sd.ID, sd.Kind)
	}
	if sd.ID != sd.Type {
		return nil, fmt.Errorf("%s: defines type %s", sd.ID, sd.Type)
	}
	if sd.BaseDefinition != "" {
		t.Base = lastPart(sd.BaseDefinition)
	}
	t.Elements = l.elements(sd, sd.Snapshot.Element, nil)
	if t.Kind == registry.Primitive {
		for _, e := range sd.Snapshot.Element {
			if e.Path != sd.ID+".value" {
				continue
			}
			for _, tr := range e.Type {
				for _, x := range tr.Extension {
					if strings.HasSuffix(x.URL, "/regex") {
						t.Regex = x.ValueString
					}
				}
			}
		}
	}
	return t, nil
}

// elements converts snapshot elements; keep, when not nil, selects them by id.
func (l *loader) elements(sd *sdJSON, es []elementJSON, keep map[string]bool) []registry.Element {
	out := make([]registry.Element, 0, len(es))
	for i := range es {
		e := &es[i]
		if keep != nil && !keep[e.ID] {
			continue
		}
		re := registry.Element{ID: e.ID, Path: e.Path, SliceName: e.SliceName, Min: e.Min, Max: registry.Unbounded,
			Modifier: e.IsModifier, Summary: e.IsSummary, MustSupport: e.MustSupport, MaxLength: e.MaxLength,
			Fixed: e.fixed, Pattern: e.pattern}
		if re.ID == "" {
			re.ID = re.Path
		}
		if e.Max != "*" {
			n, err := strconv.Atoi(e.Max)
			if err == nil {
				re.Max = n
			}
		}
		if e.ContentReference != "" {
			re.ContentReference = e.ContentReference[strings.IndexByte(e.ContentReference, '#')+1:]
		}
		if e.Binding != nil {
			re.Binding = registry.Binding{Strength: e.Binding.Strength, ValueSet: noVersion(e.Binding.ValueSet)}
		}
		for _, c := range e.Constraint {
			src := c.Source
			if src == sd.URL {
				src = ""
			}
			re.Constraints = append(re.Constraints, registry.Constraint{Key: c.Key, Severity: c.Severity, Human: c.Human,
				Expression: c.Expression, Source: src})
		}
		if e.Slicing != nil {
			s := &registry.Slicing{Rules: e.Slicing.Rules, Ordered: e.Slicing.Ordered}
			for _, d := range e.Slicing.Discriminator {
				s.Discriminators = append(s.Discriminators, registry.Discriminator{Type: d.Type, Path: d.Path})
			}
			re.Slicing = s
		}
		for _, tr := range e.Type {
			re.Types = append(re.Types, l.typeRef(sd, e, tr))
		}
		out = append(out, re)
	}
	return out
}

func (l *loader) typeRef(sd *sdJSON, e *elementJSON, tr typeJSON) registry.TypeRef {
	code := tr.Code
	if sys, ok := strings.CutPrefix(code, "http://hl7.org/fhirpath/"); ok {
		// FHIRPath system types: the FHIR type is in an extension (see the package doc).
		code = sys
		if !(sd.Kind == "primitive-type" && e.Path == sd.Type+".value") {
			for _, x := range tr.Extension {
				if strings.HasSuffix(x.URL, "/structuredefinition-fhir-type") {
					code = x.ValueURL
				}
			}
			if sd.Kind == "resource" && e.Path == sd.Type+".id" {
				code = "id"
			}
		}
	}
	ref := registry.TypeRef{Code: code}
	for _, p := range tr.Profile {
		ref.Profiles = append(ref.Profiles, noVersion(p))
	}
	for _, p := range tr.TargetProfile {
		p = noVersion(p)
		if name, ok := strings.CutPrefix(p, coreSD); ok && l.coreTypes[name] {
			p = name
		}
		ref.Targets = append(ref.Targets, p)
	}
	return ref
}

func (l *loader) extension(sd *sdJSON) *registry.Extension {
	x := &registry.Extension{URL: sd.URL, Name: sd.Name, ContextInvariants: sd.ContextInvariant, Max: registry.Unbounded}
	for _, c := range sd.Context {
		x.Contexts = append(x.Contexts, registry.Context{Type: c.Type, Expression: c.Expression})
	}
	x.Elements = l.elements(sd, sd.Snapshot.Element, nil)
	byID := map[string]*registry.Element{}
	for i := range x.Elements {
		byID[x.Elements[i].ID] = &x.Elements[i]
	}
	valueTypes := func(prefix string) []string {
		e := byID[prefix+".value[x]"]
		if e == nil || e.Max == 0 {
			return nil
		}
		var out []string
		for _, t := range e.Types {
			out = append(out, t.Code)
		}
		return out
	}
	if root := byID["Extension"]; root != nil {
		x.Min, x.Max = root.Min, root.Max
	}
	x.ValueTypes = valueTypes("Extension")
	for i := range x.Elements {
		e := &x.Elements[i]
		if e.Path != "Extension.extension" || e.SliceName == "" || e.ID != "Extension.extension:"+e.SliceName {
			continue
		}
		child := registry.ExtensionChild{URL: e.SliceName, Min: e.Min, Max: e.Max, ValueTypes: valueTypes(e.ID)}
		if u := byID[e.ID+".url"]; u != nil && u.Fixed != nil {
			var s string
			if json.Unmarshal([]byte(u.Fixed.JSON), &s) == nil {
				child.URL = s
			}
		}
		x.Children = append(x.Children, child)
	}
	return x
}

func (l *loader) profile(sd *sdJSON) *registry.Profile {
	p := &registry.Profile{URL: sd.URL, Name: sd.Name, Type: sd.Type, Base: noVersion(sd.BaseDefinition), Abstract: sd.Abstract}
	keep := map[string]bool{}
	for _, e := range sd.Differential.Element {
		keep[e.ID] = true
	}
	p.Elements = l.elements(sd, sd.Snapshot.Element, keep)
	return p
}

// expand expands a value set from the package's code systems.
func (l *loader) expand(url string) *registry.ValueSet {
	v := &registry.ValueSet{URL: url, Complete: true}
	seen := map[string]bool{}
	var why []string
	codes := l.expandInto(url, seen, &why)
	if vs := l.valueSets[url]; vs != nil {
		v.Name = vs.Name
	}
	set := map[registry.Code]bool{}
	for _, c := range codes {
		if !set[c] {
			set[c] = true
			v.Codes = append(v.Codes, c)
		}
	}
	if len(why) > 0 {
		v.Complete = false
		slices.Sort(why)
		v.Incomplete = strings.Join(slices.Compact(why), "; ")
	}
	return v
}

func (l *loader) expandInto(url string, seen map[string]bool, why *[]string) []registry.Code {
	if seen[url] {
		return nil
	}
	seen[url] = true
	vs := l.valueSets[url]
	if vs == nil {
		*why = append(*why, "value set "+url+" is not in the package")
		return nil
	}
	var out []registry.Code
	for _, inc := range vs.Compose.Include {
		out = append(out, l.include(inc, seen, why)...)
	}
	if len(vs.Compose.Exclude) > 0 {
		drop := map[registry.Code]bool{}
		for _, ex := range vs.Compose.Exclude {
			for _, c := range l.include(ex, seen, why) {
				drop[c] = true
			}
		}
		out = slices.DeleteFunc(out, func(c registry.Code) bool { return drop[c] })
	}
	return out
}

func (l *loader) include(inc includeJSON, seen map[string]bool, why *[]string) []registry.Code {
	var out []registry.Code
	for _, sub := range inc.ValueSet {
		out = append(out, l.expandInto(noVersion(sub), seen, why)...)
	}
	if inc.System == "" {
		return out
	}
	if len(inc.Concept) > 0 {
		for _, c := range inc.Concept {
			out = append(out, registry.Code{System: inc.System, Code: c.Code})
		}
		return out
	}
	cs := l.codeSystems[inc.System]
	if cs == nil {
		*why = append(*why, "external code system "+inc.System)
		return out
	}
	if cs.Content != "complete" {
		*why = append(*why, "code system "+inc.System+" is not complete in the package ("+cs.Content+")")
	}
	if len(inc.Filter) == 0 {
		walkConcepts(cs.Concept, func(c *conceptJSON) { out = append(out, registry.Code{System: inc.System, Code: c.Code}) })
		return out
	}
	// Filters: is-a and descendent-of on the concept hierarchy; anything else cannot be
	// evaluated here.
	var sel []registry.Code
	for fi, f := range inc.Filter {
		var got []registry.Code
		root := findConcept(cs.Concept, f.Value)
		switch {
		case f.Property != "concept" || (f.Op != "is-a" && f.Op != "descendent-of"):
			*why = append(*why, "filter "+f.Property+" "+f.Op+" on "+inc.System+" cannot be evaluated locally")
			return out
		case root == nil:
			*why = append(*why, "filter value not in code system "+inc.System)
			return out
		}
		if f.Op == "is-a" {
			got = append(got, registry.Code{System: inc.System, Code: root.Code})
		}
		walkConcepts(root.Concept, func(c *conceptJSON) { got = append(got, registry.Code{System: inc.System, Code: c.Code}) })
		if fi == 0 {
			sel = got
		} else {
			sel = slices.DeleteFunc(sel, func(c registry.Code) bool { return !slices.Contains(got, c) })
		}
	}
	return append(out, sel...)
}

func walkConcepts(cs []conceptJSON, f func(*conceptJSON)) {
	for i := range cs {
		f(&cs[i])
		walkConcepts(cs[i].Concept, f)
	}
}

func findConcept(cs []conceptJSON, code string) *conceptJSON {
	for i := range cs {
		if cs[i].Code == code {
			return &cs[i]
		}
		if c := findConcept(cs[i].Concept, code); c != nil {
			return c
		}
	}
	return nil
}
