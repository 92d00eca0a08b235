package transform

import (
	"slices"
	"strconv"
	"strings"

	"github.com/fhirload/fhirload/internal/fhirpath"
	"github.com/fhirload/fhirload/registry"
)

// Extension checking. An extension whose URL is a known definition (the core package's
// 396, or one of Options.ProfilePackages) is checked against it:
//   - its value: a simple extension has a value of one of the definition's types; a
//     complex one has no value, and its nested extensions named in the definition have
//     their types and cardinalities (a nested URL the definition does not name is
//     allowed: the core definitions' nested slicing is open);
//   - its cardinality: no more repetitions on one element than the definition's max;
//   - modifierExtension for a modifier extension, extension otherwise;
//   - its context: the element holding it is one the definition allows (an element
//     path, a type or a supertype, Element (anything), Resource/DomainResource, or the
//     URL of an enclosing extension). Contexts of type fhirpath, context invariants (13 core
//     extensions, all on Questionnaire items and List) and nested extensions below the
//     first level are not checked.
//
// An extension with any other URL is accepted and listed in Resource.UnknownExtensions
// (Options.Extensions "lenient", the default), or rejected ("strict"). ext-1 (a value or
// nested extensions, not both) is an invariant and always checked.

// Values of Options.Extensions.
const (
	ExtensionsLenient = "lenient" // unknown extensions accepted and reported (Resource.UnknownExtensions)
	ExtensionsStrict  = "strict"  // unknown extensions rejected (rule "ext:" + URL)
)

// extDef is an extension definition as the checker uses it.
type extDef struct {
	url        string
	rule       string // "ext:" + url
	modifier   bool
	max        int // registry.Unbounded for *
	valueTypes []string
	children   []registry.ExtensionChild
	contexts   []registry.Context
	prof       *profileDef // package extensions: their differential, as a profile of Extension
}

func newExtDef(x *registry.Extension) *extDef {
	d := &extDef{url: x.URL, rule: "ext:" + x.URL, max: x.Max, valueTypes: x.ValueTypes, children: x.Children, contexts: x.Contexts}
	if len(x.Elements) > 0 {
		d.modifier = x.Elements[0].Modifier
	}
	if d.max == 0 {
		d.max = registry.Unbounded
	}
	return d
}

// maxUnknownURLs bounds the interned URL strings a validator keeps (a line with more
// distinct unknown extension URLs than this still reports them, with new strings).
const maxUnknownURLs = 4096

// checkExtensions checks every extension of the line (see above) and collects the
// unknown URLs.
func (v *validator) checkExtensions() bool {
	v.unknown = v.unknown[:0]
	t := &v.tree
	for i := 0; i < t.Len(); i++ {
		id := fhirpath.NodeID(i)
		n := t.Node(id)
		if n.Type != "Extension" {
			continue
		}
		p := t.Parent(id)
		if p >= 0 && t.Node(p).Type == "Extension" {
			url := v.nodeText(t.Child(id, "url", 0))
			if len(url) > 0 && !isAbsoluteURL(url) {
				continue // a nested extension named within its parent's definition
			}
		}
		if !v.extension(id, p) {
			return false
		}
	}
	return true
}

// extension checks the extension at node id, held by node p.
func (v *validator) extension(id, p fhirpath.NodeID) bool {
	t := &v.tree
	url := v.nodeText(t.Child(id, "url", 0))
	d := v.defs.exts[string(url)]
	if d == nil {
		if v.strictExt {
			rule := "ext:" + safeURL(url)
			return v.ruleFail(rule, id, rule+": unknown extension (not in the core package nor in a loaded profile package; transform.extensions is strict)")
		}
		v.unknown = v.addURL(v.unknown, url)
		return true
	}
	n := t.Node(id)
	if d.modifier != (n.Name == "modifierExtension") {
		if d.modifier {
			return v.ruleFail(d.rule, id, d.rule+": a modifier extension must be a modifierExtension")
		}
		return v.ruleFail(d.rule, id, d.rule+": not a modifier extension, so not allowed in modifierExtension")
	}
	if d.max != registry.Unbounded && p >= 0 {
		count := 0
		for c := t.FirstChild(p); c >= 0; c = t.NextSibling(c) {
			if t.Node(c).Name == n.Name && string(v.nodeText(t.Child(c, "url", 0))) == d.url {
				count++
			}
		}
		if count > d.max {
			return v.ruleFail(d.rule, id, d.rule+": more than "+strconv.Itoa(d.max)+" on one element")
		}
	}
	if p >= 0 && !v.extensionContext(d, p) {
		return v.ruleFail(d.rule, id, d.rule+": not allowed on this element (contexts: "+contextList(d)+")")
	}
	if d.prof != nil {
		v.declared = d.prof
		if !v.checkElems(d.prof, d.prof.root, id) {
			return false
		}
	}
	value := t.Child(id, "value", 0)
	if len(d.valueTypes) == 0 {
		if value >= 0 {
			return v.ruleFail(d.rule, id, d.rule+": a complex extension has nested extensions, not a value")
		}
		return v.nestedExtensions(d, id)
	}
	if value < 0 {
		return v.ruleFail(d.rule, id, d.rule+": a value is required (type "+strings.Join(d.valueTypes, ", ")+")")
	}
	if vt := t.Node(value).Type; !slices.Contains(d.valueTypes, vt) {
		return v.ruleFail(d.rule, value, d.rule+": value of type "+vt+" not allowed (allowed: "+strings.Join(d.valueTypes, ", ")+")")
	}
	return true
}

// nestedExtensions checks the first level of a complex extension's nested extensions
// against the children its definition names.
func (v *validator) nestedExtensions(d *extDef, id fhirpath.NodeID) bool {
	t := &v.tree
	var counts [16]int
	for c := t.FirstChild(id); c >= 0; c = t.NextSibling(c) {
		if t.Node(c).Name != "extension" {
			continue
		}
		url := v.nodeText(t.Child(c, "url", 0))
		k := slices.IndexFunc(d.children, func(ch registry.ExtensionChild) bool { return ch.URL == string(url) })
		if k < 0 {
			continue
		}
		ch := &d.children[k]
		if k < len(counts) {
			counts[k]++
			if ch.Max != registry.Unbounded && counts[k] > ch.Max {
				return v.ruleFail(d.rule, c, d.rule+": more than "+strconv.Itoa(ch.Max)+" nested "+ch.URL)
			}
		}
		value := t.Child(c, "value", 0)
		switch {
		case len(ch.ValueTypes) == 0:
		case value < 0:
			if t.Child(c, "extension", 0) < 0 {
				return v.ruleFail(d.rule, c, d.rule+": nested "+ch.URL+" needs a value (type "+strings.Join(ch.ValueTypes, ", ")+")")
			}
		case !slices.Contains(ch.ValueTypes, t.Node(value).Type):
			return v.ruleFail(d.rule, value, d.rule+": nested "+ch.URL+": value of type "+t.Node(value).Type+" not allowed (allowed: "+strings.Join(ch.ValueTypes, ", ")+")")
		}
	}
	for k := range d.children {
		if ch := &d.children[k]; k < len(counts) && counts[k] < ch.Min {
			return v.ruleFail(d.rule, id, d.rule+": nested "+ch.URL+" required")
		}
	}
	return true
}

// extensionContext reports whether an extension defined by d may be held by node p.
func (v *validator) extensionContext(d *extDef, p fhirpath.NodeID) bool {
	if len(d.contexts) == 0 {
		return true
	}
	t := &v.tree
	n := t.Node(p)
	for _, c := range d.contexts {
		switch c.Type {
		case "fhirpath":
			return true // not evaluated
		case "extension":
			if n.Type == "Extension" && string(v.nodeText(t.Child(p, "url", 0))) == c.Expression {
				return true
			}
			continue
		}
		e := c.Expression
		switch {
		case e == n.Path || e == n.Type || e == "Element" || strings.TrimSuffix(e, "[x]") == strings.TrimSuffix(n.Path, "[x]"):
			// "Element" is taken to allow any element and resources too: the lenient
			// reading, so that no use the specification's tools accept is rejected.
			return true
		case n.Resource:
			if e == "Resource" || e == "DomainResource" && v.s.reg.Type(n.Type) != nil && v.s.reg.Type(n.Type).Base == "DomainResource" {
				return true
			}
		case v.derivesFrom(n.Type, e):
			return true
		case strings.IndexByte(e, '.') > 0 && v.instancePath(p) == strings.TrimSuffix(e, "[x]"):
			return true
		}
	}
	return false
}

// derivesFrom reports whether type t specialises type base (Age → Quantity → Element).
func (v *validator) derivesFrom(t, base string) bool {
	for i := 0; i < 8 && t != ""; i++ {
		rt := v.s.reg.Type(t)
		if rt == nil {
			return false
		}
		if rt.Base == base {
			return true
		}
		t = rt.Base
	}
	return false
}

// instancePath is the path of node p from its resource by element names:
// Questionnaire.item.item, Patient.name.family.
func (v *validator) instancePath(p fhirpath.NodeID) string {
	t := &v.tree
	var names []string
	for c := p; c >= 0; c = t.Parent(c) {
		n := t.Node(c)
		if n.Resource {
			names = append(names, n.Type)
			break
		}
		names = append(names, n.Name)
	}
	slices.Reverse(names)
	return strings.Join(names, ".")
}

// nodeText returns the text of a string node (decoded when escaped), nil for none.
func (v *validator) nodeText(id fhirpath.NodeID) []byte {
	if id < 0 {
		return nil
	}
	raw := v.tree.Raw(id)
	if v.tree.Node(id).Kind == fhirpath.JSONEscaped {
		return unescape(raw)
	}
	return raw
}

func contextList(d *extDef) string {
	var sb strings.Builder
	for i, c := range d.contexts {
		if i > 0 {
			sb.WriteString(", ")
		}
		sb.WriteString(c.Expression)
	}
	return sb.String()
}

// isAbsoluteURL: a scheme and a colon (http://…, urn:…).
func isAbsoluteURL(b []byte) bool {
	for i, c := range b {
		switch {
		case c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z':
		case i > 0 && (isDigit(c) || c == '+' || c == '-' || c == '.'):
		case c == ':':
			return i > 0
		default:
			return false
		}
	}
	return false
}

// safeURL returns an extension or profile URL for a report or a message: as written
// when it is a plausible definition URL (printable ASCII without spaces or quotes, at
// most 256 bytes), else a placeholder, so that text put in that slot by mistake does
// not reach logs.
func safeURL(b []byte) string {
	if len(b) == 0 || len(b) > 256 {
		return "(unprintable url)"
	}
	for _, c := range b {
		if c <= ' ' || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '`' {
			return "(unprintable url)"
		}
	}
	return string(b)
}
