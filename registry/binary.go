package registry

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// The binary form (MarshalBinary, Decode) is compact and decodes without reflection:
//
//	magic "FHIRREG3"
//	strings:  count, total bytes, each length (uvarints), then the bytes of all strings
//	sections: core, search, extensions, profiles; each is its length then its bytes
//
// Sections are uvarints; a string is its index in the table (0 is ""); a list is a
// count followed by its items. Core holds the version, the constraint table, the types
// and the value sets; search the search parameters and compartments. Every string is
// sliced out of the string table, so a decoded registry holds each distinct string once
// (and, decoded from the embedded form, copies no text). The sections after core are
// decoded when first used.
const magic = "FHIRREG3"

// Element flag bits.
const (
	flagModifier = 1 << iota
	flagSummary
	flagMustSupport
	flagFixed
	flagPattern
	flagSlicing
	flagID // ID differs from Path
)

type encoder struct {
	body    []byte
	strings map[string]int
	list    []string
	cons    map[Constraint]int
	conList []Constraint
}

func (w *encoder) uint(n int) {
	if n < 0 {
		panic("registry: negative number in the binary form")
	}
	w.body = binary.AppendUvarint(w.body, uint64(n))
}

func (w *encoder) bool(b bool) {
	if b {
		w.uint(1)
	} else {
		w.uint(0)
	}
}

func (w *encoder) str(s string) {
	if s == "" {
		w.uint(0)
		return
	}
	i, ok := w.strings[s]
	if !ok {
		w.list = append(w.list, s)
		i = len(w.list)
		w.strings[s] = i
	}
	w.uint(i)
}

func (w *encoder) strs(ss []string) {
	w.uint(len(ss))
	for _, s := range ss {
		w.str(s)
	}
}

// MarshalBinary encodes the registry. The encoding is deterministic: the same registry
// gives the same bytes.
func (r *Registry) MarshalBinary() ([]byte, error) {
	c := r.Contents()
	w := &encoder{strings: map[string]int{}, cons: map[Constraint]int{}}
	var sections [4][]byte

	w.str(c.Version)
	// Constraint table, in first-use order.
	eachElement(c, func(e *Element) {
		for _, k := range e.Constraints {
			if _, ok := w.cons[k]; !ok {
				w.cons[k] = len(w.conList)
				w.conList = append(w.conList, k)
			}
		}
	})
	w.uint(len(w.conList))
	for _, k := range w.conList {
		w.str(k.Key)
		w.str(k.Severity)
		w.str(k.Human)
		w.str(k.Expression)
		w.str(k.Source)
	}
	w.uint(len(c.Types))
	for _, t := range c.Types {
		w.str(t.Name)
		w.str(t.URL)
		w.uint(int(t.Kind))
		w.bool(t.Abstract)
		w.str(t.Base)
		w.str(t.Regex)
		w.elements(t.Elements)
	}
	w.uint(len(c.ValueSets))
	for _, v := range c.ValueSets {
		w.str(v.URL)
		w.str(v.Name)
		w.bool(v.Complete)
		w.str(v.Incomplete)
		w.uint(len(v.Codes))
		for _, code := range v.Codes {
			w.str(code.System)
			w.str(code.Code)
		}
	}
	sections[0], w.body = w.body, nil

	w.uint(len(c.SearchParams))
	for _, p := range c.SearchParams {
		w.str(p.URL)
		w.str(p.Name)
		w.str(p.Code)
		w.strs(p.Base)
		w.str(p.Type)
		w.str(p.Expression)
		w.str(p.XPathUsage)
		w.strs(p.Targets)
		w.strs(p.Modifiers)
		w.strs(p.Comparators)
		w.uint(int(p.MultipleOr))
		w.uint(int(p.MultipleAnd))
		w.strs(p.Chain)
		w.uint(len(p.Components))
		for _, k := range p.Components {
			w.str(k.Definition)
			w.str(k.Expression)
		}
		w.str(p.Description)
	}
	w.uint(len(c.Compartments))
	for _, cm := range c.Compartments {
		w.str(cm.Code)
		w.str(cm.URL)
		w.uint(len(cm.Resources))
		for _, cr := range cm.Resources {
			w.str(cr.Type)
			w.strs(cr.Params)
		}
	}
	sections[1], w.body = w.body, nil

	w.uint(len(c.Extensions))
	for _, e := range c.Extensions {
		w.str(e.URL)
		w.str(e.Name)
		w.uint(len(e.Contexts))
		for _, k := range e.Contexts {
			w.str(k.Type)
			w.str(k.Expression)
		}
		w.strs(e.ContextInvariants)
		w.uint(e.Min)
		w.uint(e.Max + 1)
		w.strs(e.ValueTypes)
		w.uint(len(e.Children))
		for _, k := range e.Children {
			w.str(k.URL)
			w.uint(k.Min)
			w.uint(k.Max + 1)
			w.strs(k.ValueTypes)
		}
		w.elements(e.Elements)
	}
	sections[2], w.body = w.body, nil

	w.uint(len(c.Profiles))
	for _, p := range c.Profiles {
		w.str(p.URL)
		w.str(p.Name)
		w.str(p.Type)
		w.str(p.Base)
		w.bool(p.Abstract)
		w.elements(p.Elements)
	}
	sections[3], w.body = w.body, nil

	size := 0
	for _, sec := range sections {
		size += len(sec) + binary.MaxVarintLen64
	}
	out := make([]byte, 0, size+len(w.list)*24)
	out = append(out, magic...)
	total := 0
	for _, s := range w.list {
		total += len(s)
	}
	out = binary.AppendUvarint(out, uint64(len(w.list)))
	out = binary.AppendUvarint(out, uint64(total))
	for _, s := range w.list {
		out = binary.AppendUvarint(out, uint64(len(s)))
	}
	for _, s := range w.list {
		out = append(out, s...)
	}
	for _, sec := range sections {
		out = binary.AppendUvarint(out, uint64(len(sec)))
		out = append(out, sec...)
	}
	return out, nil
}

func eachElement(c Contents, f func(*Element)) {
	for _, t := range c.Types {
		for i := range t.Elements {
			f(&t.Elements[i])
		}
	}
	for _, e := range c.Extensions {
		for i := range e.Elements {
			f(&e.Elements[i])
		}
	}
	for _, p := range c.Profiles {
		for i := range p.Elements {
			f(&p.Elements[i])
		}
	}
}

func (w *encoder) elements(es []Element) {
	w.uint(len(es))
	for i := range es {
		e := &es[i]
		flags := 0
		if e.Modifier {
			flags |= flagModifier
		}
		if e.Summary {
			flags |= flagSummary
		}
		if e.MustSupport {
			flags |= flagMustSupport
		}
		if e.Fixed != nil {
			flags |= flagFixed
		}
		if e.Pattern != nil {
			flags |= flagPattern
		}
		if e.Slicing != nil {
			flags |= flagSlicing
		}
		if e.ID != e.Path {
			flags |= flagID
		}
		w.uint(flags)
		w.str(e.Path)
		if flags&flagID != 0 {
			w.str(e.ID)
		}
		w.str(e.SliceName)
		w.uint(e.Min)
		w.uint(e.Max + 1)
		w.uint(len(e.Types))
		for _, t := range e.Types {
			w.str(t.Code)
			w.strs(t.Profiles)
			w.strs(t.Targets)
		}
		w.str(e.ContentReference)
		w.str(e.Binding.Strength)
		w.str(e.Binding.ValueSet)
		w.uint(len(e.Constraints))
		for _, c := range e.Constraints {
			w.uint(w.cons[c])
		}
		w.uint(e.MaxLength)
		if e.Fixed != nil {
			w.str(e.Fixed.Type)
			w.str(e.Fixed.JSON)
		}
		if e.Pattern != nil {
			w.str(e.Pattern.Type)
			w.str(e.Pattern.JSON)
		}
		if e.Slicing != nil {
			w.uint(len(e.Slicing.Discriminators))
			for _, d := range e.Slicing.Discriminators {
				w.str(d.Type)
				w.str(d.Path)
			}
			w.str(e.Slicing.Rules)
			w.bool(e.Slicing.Ordered)
		}
	}
}

// errCorrupt is returned for any malformed binary form.
var errCorrupt = errors.New("registry: corrupt binary form")

type decoder struct {
	b       string
	strings []string
	cons    []Constraint
	// slabs: small slices are carved out of larger allocations
	refSlab []TypeRef
	strSlab []string
	conSlab []Constraint
}

func (d *decoder) uint() int {
	var v uint64
	for i := 0; i < len(d.b) && i < 6; i++ {
		c := d.b[i]
		v |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			d.b = d.b[i+1:]
			return int(v)
		}
	}
	panic(errCorrupt)
}

func (d *decoder) count() int {
	n := d.uint()
	if n > len(d.b) { // every item takes at least one byte
		panic(errCorrupt)
	}
	return n
}

func (d *decoder) bool() bool { return d.uint() != 0 }

func (d *decoder) str() string {
	i := d.uint()
	if i > len(d.strings) {
		panic(errCorrupt)
	}
	if i == 0 {
		return ""
	}
	return d.strings[i-1]
}

func (d *decoder) strs() []string {
	n := d.count()
	if n == 0 {
		return nil
	}
	if len(d.strSlab) < n {
		d.strSlab = make([]string, max(n, 1024))
	}
	out := d.strSlab[:n:n]
	d.strSlab = d.strSlab[n:]
	for i := range out {
		out[i] = d.str()
	}
	return out
}

// Decode decodes the binary form written by MarshalBinary. Every section is decoded
// (and checked) before it returns.
func Decode(b []byte) (*Registry, error) {
	r, err := decode(string(b))
	if err != nil {
		return nil, err
	}
	for _, load := range []func() error{r.lazy.search, r.lazy.extensions, r.lazy.profiles} {
		if err := load(); err != nil {
			return nil, err
		}
	}
	r.lazy = nil
	return r, nil
}

// lazy holds the sections of a registry that are decoded on first use.
type lazy struct {
	r                             *Registry
	strings                       []string
	cons                          []Constraint
	searchSect, extSect, profSect string
}

// decode decodes the string table and the core section of a binary form held in a
// string; every string of the registry is a substring of b, so decoding the embedded
// form copies no text.
func decode(b string) (r *Registry, err error) {
	defer recoverCorrupt(&err)
	if len(b) < len(magic) || b[:len(magic)] != magic {
		return nil, fmt.Errorf("registry: not a registry binary form (want %q)", magic)
	}
	d := &decoder{b: b[len(magic):]}
	n := d.count()
	total := d.uint()
	lens := make([]int, n)
	for i := range lens {
		lens[i] = d.uint()
	}
	if total > len(d.b) {
		panic(errCorrupt)
	}
	all := d.b[:total]
	d.b = d.b[total:]
	d.strings = make([]string, n)
	off := 0
	for i, l := range lens {
		if off+l > len(all) {
			panic(errCorrupt)
		}
		d.strings[i] = all[off : off+l]
		off += l
	}
	var sections [4]string
	for i := range sections {
		l := d.uint()
		if l > len(d.b) {
			panic(errCorrupt)
		}
		sections[i], d.b = d.b[:l], d.b[l:]
	}
	if len(d.b) != 0 {
		panic(errCorrupt)
	}

	d.b = sections[0]
	r = &Registry{version: d.str()}
	d.cons = make([]Constraint, d.count())
	for i := range d.cons {
		d.cons[i] = Constraint{Key: d.str(), Severity: d.str(), Human: d.str(), Expression: d.str(), Source: d.str()}
	}
	types := make([]*Type, d.count())
	for i := range types {
		t := &Type{Name: d.str(), URL: d.str(), Kind: Kind(d.uint()), Abstract: d.bool(), Base: d.str(), Regex: d.str()}
		t.Elements = d.elements()
		types[i] = t
	}
	valueSets := make([]*ValueSet, d.count())
	for i := range valueSets {
		v := &ValueSet{URL: d.str(), Name: d.str(), Complete: d.bool(), Incomplete: d.str()}
		v.Codes = make([]Code, d.count())
		for j := range v.Codes {
			v.Codes[j] = Code{System: d.str(), Code: d.str()}
		}
		valueSets[i] = v
	}
	if len(d.b) != 0 {
		panic(errCorrupt)
	}
	if err := r.setTypes(types, valueSets); err != nil {
		return nil, err
	}
	r.lazy = &lazy{r: r, strings: d.strings, cons: d.cons, searchSect: sections[1], extSect: sections[2], profSect: sections[3]}
	return r, nil
}

func recoverCorrupt(err *error) {
	if p := recover(); p != nil {
		if p != errCorrupt {
			panic(p)
		}
		*err = errCorrupt
	}
}

func (l *lazy) decoder(section string) *decoder {
	return &decoder{b: section, strings: l.strings, cons: l.cons}
}

func (l *lazy) search() (err error) {
	defer recoverCorrupt(&err)
	d := l.decoder(l.searchSect)
	params := make([]*SearchParam, d.count())
	for i := range params {
		p := &SearchParam{URL: d.str(), Name: d.str(), Code: d.str(), Base: d.strs(), Type: d.str(),
			Expression: d.str(), XPathUsage: d.str(), Targets: d.strs(), Modifiers: d.strs(),
			Comparators: d.strs(), MultipleOr: Tristate(d.uint()), MultipleAnd: Tristate(d.uint()), Chain: d.strs()}
		if n := d.count(); n > 0 {
			p.Components = make([]SearchComponent, n)
			for j := range p.Components {
				p.Components[j] = SearchComponent{Definition: d.str(), Expression: d.str()}
			}
		}
		p.Description = d.str()
		params[i] = p
	}
	compartments := make([]*Compartment, d.count())
	for i := range compartments {
		cm := &Compartment{Code: d.str(), URL: d.str()}
		cm.Resources = make([]CompartmentResource, d.count())
		for j := range cm.Resources {
			cm.Resources[j] = CompartmentResource{Type: d.str(), Params: d.strs()}
		}
		compartments[i] = cm
	}
	if len(d.b) != 0 {
		panic(errCorrupt)
	}
	return l.r.setSearch(params, compartments)
}

func (l *lazy) extensions() (err error) {
	defer recoverCorrupt(&err)
	d := l.decoder(l.extSect)
	exts := make([]*Extension, d.count())
	for i := range exts {
		e := &Extension{URL: d.str(), Name: d.str()}
		if n := d.count(); n > 0 {
			e.Contexts = make([]Context, n)
			for j := range e.Contexts {
				e.Contexts[j] = Context{Type: d.str(), Expression: d.str()}
			}
		}
		e.ContextInvariants = d.strs()
		e.Min = d.uint()
		e.Max = d.uint() - 1
		e.ValueTypes = d.strs()
		if n := d.count(); n > 0 {
			e.Children = make([]ExtensionChild, n)
			for j := range e.Children {
				e.Children[j] = ExtensionChild{URL: d.str(), Min: d.uint(), Max: d.uint() - 1, ValueTypes: d.strs()}
			}
		}
		e.Elements = d.elements()
		exts[i] = e
	}
	if len(d.b) != 0 {
		panic(errCorrupt)
	}
	return l.r.setExtensions(exts)
}

func (l *lazy) profiles() (err error) {
	defer recoverCorrupt(&err)
	d := l.decoder(l.profSect)
	profiles := make([]*Profile, d.count())
	for i := range profiles {
		p := &Profile{URL: d.str(), Name: d.str(), Type: d.str(), Base: d.str(), Abstract: d.bool()}
		p.Elements = d.elements()
		profiles[i] = p
	}
	if len(d.b) != 0 {
		panic(errCorrupt)
	}
	return l.r.setProfiles(profiles)
}

// loadSearch, loadExtensions and loadProfiles decode a lazy section on first use. The
// embedded form is checked by the package's tests, so a failure here is a build defect.
func (r *Registry) loadSearch() { r.searchOnce.Do(func() { mustLoad(r.lazy, (*lazy).search) }) }

func (r *Registry) loadExtensions() {
	r.extOnce.Do(func() { mustLoad(r.lazy, (*lazy).extensions) })
}

func (r *Registry) loadProfiles() {
	r.profileOnce.Do(func() { mustLoad(r.lazy, (*lazy).profiles) })
}

func mustLoad(l *lazy, load func(*lazy) error) {
	if l == nil {
		return
	}
	if err := load(l); err != nil {
		panic("registry: the embedded registry does not decode (regenerate it with go generate ./registry): " + err.Error())
	}
}

func (d *decoder) elements() []Element {
	es := make([]Element, d.count())
	for i := range es {
		e := &es[i]
		flags := d.uint()
		e.Modifier = flags&flagModifier != 0
		e.Summary = flags&flagSummary != 0
		e.MustSupport = flags&flagMustSupport != 0
		e.Path = d.str()
		e.ID = e.Path
		if flags&flagID != 0 {
			e.ID = d.str()
		}
		e.SliceName = d.str()
		e.Min = d.uint()
		e.Max = d.uint() - 1
		if n := d.count(); n > 0 {
			if len(d.refSlab) < n {
				d.refSlab = make([]TypeRef, max(n, 1024))
			}
			e.Types = d.refSlab[:n:n]
			d.refSlab = d.refSlab[n:]
			for j := range e.Types {
				e.Types[j] = TypeRef{Code: d.str(), Profiles: d.strs(), Targets: d.strs()}
			}
		}
		e.ContentReference = d.str()
		e.Binding = Binding{Strength: d.str(), ValueSet: d.str()}
		if n := d.count(); n > 0 {
			e.Constraints = d.constraints(n)
		}
		e.MaxLength = d.uint()
		if flags&flagFixed != 0 {
			e.Fixed = &Value{Type: d.str(), JSON: d.str()}
		}
		if flags&flagPattern != 0 {
			e.Pattern = &Value{Type: d.str(), JSON: d.str()}
		}
		if flags&flagSlicing != 0 {
			s := &Slicing{}
			s.Discriminators = make([]Discriminator, d.count())
			for j := range s.Discriminators {
				s.Discriminators[j] = Discriminator{Type: d.str(), Path: d.str()}
			}
			s.Rules = d.str()
			s.Ordered = d.bool()
			e.Slicing = s
		}
	}
	return es
}

// constraints reads n constraint indexes. A run of consecutive indexes (the common
// case: ele-1 alone) shares the table's memory; other lists are copied.
func (d *decoder) constraints(n int) []Constraint {
	first := d.uint()
	idx := [8]int{first}
	consecutive := true
	more := idx[:1]
	for j := 1; j < n; j++ {
		k := d.uint()
		if k != first+j {
			consecutive = false
		}
		more = append(more, k)
	}
	for _, k := range more {
		if k >= len(d.cons) {
			panic(errCorrupt)
		}
	}
	if consecutive {
		return d.cons[first : first+n : first+n]
	}
	if len(d.conSlab) < n {
		d.conSlab = make([]Constraint, max(n, 256))
	}
	out := d.conSlab[:n:n]
	d.conSlab = d.conSlab[n:]
	for j, k := range more {
		out[j] = d.cons[k]
	}
	return out
}
