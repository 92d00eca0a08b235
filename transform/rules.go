package transform

import (
	"fmt"
	"sync"

	"github.com/fhirload/fhirload/internal/fhirpath"
	"github.com/fhirload/fhirload/registry"
)

// invariants are the error-severity invariants of the R4 core package's resources and
// datatypes, compiled into one fhirpath.Set for every type.
type invariants struct {
	set   *fhirpath.Set
	human map[string]string // key → the specification's human text
}

// The FHIRPath evaluation budget of a line (fhirpath.Evaluator.Limit), for the core
// invariants and the declared profiles' together: stepsPerNode for each node of its tree
// plus baseSteps. The shared data needs at most 7 steps per node; the budget only stops
// hostile lines whose invariants would compare thousands of items with thousands of
// others (the line is then rejected, naming the invariant, "too much work").
const (
	defaultStepsPerNode = 1000
	baseSteps           = 100_000
)

// nativeRules are invariants evaluated by the validator's own code rather than by their
// FHIRPath expression: txt-1 and txt-2 (htmlChecks() cannot say which of its two rules
// failed; narrative.go); ele-1, which every element of every type states (one pass
// over the nodes instead of one evaluation per node: checkEle1); dom-3, whose
// expression walks the whole resource four times for each contained resource
// (checkDom3 walks it once), and ref-1, which compares each local reference with every
// contained resource (checkRef1 looks ids up in a set when there are many). Both
// expressions are quadratic in the size of the line: a hostile 640 KB line with 10,000
// contained resources and references took 9 s. Tests prove each native check finds,
// node for node, what the expression finds.
var nativeRules = map[string]bool{"txt-1": true, "txt-2": true, "ele-1": true, "dom-3": true, "ref-1": true}

// coreInvariants compiles the invariants once per process (shared by every profile and
// Transformer: a Set is safe for concurrent use).
var coreInvariants = sync.OnceValues(func() (*invariants, error) {
	return newInvariants(registry.R4())
})

func newInvariants(reg *registry.Registry) (*invariants, error) {
	inv := &invariants{human: map[string]string{}}
	for _, t := range reg.Types() {
		for i := range t.Elements {
			for _, c := range t.Elements[i].Constraints {
				if _, ok := inv.human[c.Key]; !ok && c.Severity == "error" {
					inv.human[c.Key] = c.Human
				}
			}
		}
	}
	var list []fhirpath.Invariant
	for _, x := range reg.Invariants() {
		if !nativeRules[x.Key] {
			list = append(list, x)
		}
	}
	set, err := fhirpath.NewSet(list)
	if err != nil {
		return nil, fmt.Errorf("transform: invariants: %w", err)
	}
	for _, s := range set.Skipped() {
		if s.Class.Class == fhirpath.NeedsNarrative && !nativeRules[s.Invariant.Key] {
			return nil, fmt.Errorf("transform: invariant %s uses htmlChecks() but is not one the narrative checker evaluates", s.Invariant.Key)
		}
	}
	inv.set = set
	return inv, nil
}

// checkInvariants evaluates the invariants on the tree of a line that passed the
// structural checks. An invariant whose result is empty (unknown, as when dates of
// different precisions are compared) holds; one that is false, or cannot be evaluated
// on this data (several values where the expression needs one, a type mismatch), is a
// violation. The first violation is the line's error.
func (v *validator) checkInvariants() bool {
	v.ev.ResetSteps()
	v.ev.Limit = v.stepsPerNode*int64(v.tree.Len()) + baseSteps
	if !v.checkEle1() || !v.checkDom3() || !v.checkRef1() {
		return false
	}
	v.viol = v.s.inv.set.Check(&v.ev, &v.tree, v.viol[:0])
	if len(v.viol) == 0 {
		return true
	}
	x := v.viol[0]
	key := x.Invariant.Key
	msg := key + ": " + v.s.inv.human[key]
	if x.Err != nil {
		msg += " (could not be evaluated on this data: " + x.Err.Error() + ")"
	}
	return v.ruleFail(key, x.Node, msg)
}

// checkEle1 evaluates ele-1, hasValue() or (children().count() > id.count()), on every
// node but resources: the core package states it on every element of every type (the
// few element definitions without it, such as Element.id, have types whose definition
// states it), and on no resource. A node holds it when it has a value or a child that
// is not its id.
func (v *validator) checkEle1() bool {
	for i := 0; i < v.tree.Len(); i++ {
		if id := fhirpath.NodeID(i); !v.ele1At(id) {
			return v.ruleFail("ele-1", id, "ele-1: "+v.s.inv.human["ele-1"])
		}
	}
	return true
}

// ele1At reports whether ele-1 holds on node id (always on a resource).
func (v *validator) ele1At(id fhirpath.NodeID) bool {
	t := &v.tree
	if n := t.Node(id); n.Resource || n.Kind != fhirpath.NoValue {
		return true
	}
	for c := t.FirstChild(id); c >= 0; c = t.NextSibling(c) {
		if t.Node(c).Name != "id" {
			return true
		}
	}
	return false
}

// checkDom3 evaluates dom-3 on every resource with contained resources:
//
//	contained.where((('#'+id in (%resource.descendants().reference |
//	  %resource.descendants().as(canonical) | %resource.descendants().as(uri) |
//	  %resource.descendants().as(url))) or descendants().where(reference = '#').exists()
//	  or descendants().where(as(canonical) = '#').exists() …).not()).empty()
//
// A contained resource with an id must be referred to as "#id" from somewhere in its
// container (a reference element of a descendant, or a canonical, uri, url, oid or
// uuid value), or refer to its container ("#"). One without an id never breaks it.
func (v *validator) checkDom3() bool {
	for i := 0; i < v.tree.Len(); i++ {
		if r := fhirpath.NodeID(i); !v.dom3At(r) {
			return v.ruleFail("dom-3", r, "dom-3: "+v.s.inv.human["dom-3"])
		}
	}
	return true
}

// dom3At reports whether dom-3 holds on node r (always on a node that is not a resource).
// With more than a few contained resources, the container's local references are
// gathered into a set in one walk instead of one walk per contained resource.
func (v *validator) dom3At(r fhirpath.NodeID) bool {
	t := &v.tree
	if !t.Node(r).Resource {
		return true
	}
	n := 0
	for c := t.FirstChild(r); c >= 0; c = t.NextSibling(c) {
		if t.Node(c).Name == "contained" {
			n++
		}
	}
	var refs map[string]struct{}
	if n > 4 {
		refs = map[string]struct{}{}
		v.localRefs(r, false, refs)
	}
	for c := t.FirstChild(r); c >= 0; c = t.NextSibling(c) {
		if t.Node(c).Name != "contained" {
			continue
		}
		id := v.nodeText(t.Child(c, "id", 0))
		if id == nil {
			continue
		}
		found := false
		if refs != nil {
			_, found = refs[string(id)]
		} else {
			found = v.localRefUnder(r, r, id, false)
		}
		if !found && !v.refersToContainer(c) {
			return false
		}
	}
	return true
}

// localRefs adds to refs the ids of the local references ("#id") below n that
// localRefUnder looks for.
func (v *validator) localRefs(n fhirpath.NodeID, inner bool, refs map[string]struct{}) {
	t := &v.tree
	for c := t.FirstChild(n); c >= 0; c = t.NextSibling(c) {
		cn := t.Node(c)
		if inner && cn.Name == "reference" || uriType(cn.Type) {
			if val := v.nodeValue(c); len(val) > 1 && val[0] == '#' {
				refs[string(val[1:])] = struct{}{}
			}
		}
		v.localRefs(c, true, refs)
	}
}

// checkRef1 evaluates ref-1 on every Reference:
//
//	reference.startsWith('#').not() or (reference.substring(1) in %rootResource.contained.id)
//
// A local reference "#id" names a resource contained in the root resource ("#" alone
// passes: substring(1) of it is empty).
func (v *validator) checkRef1() bool {
	v.idSets = v.idSets[:0]
	for i := 0; i < v.tree.Len(); i++ {
		if id := fhirpath.NodeID(i); !v.ref1At(id) {
			return v.ruleFail("ref-1", id, "ref-1: "+v.s.inv.human["ref-1"])
		}
	}
	return true
}

// ref1At reports whether ref-1 holds on node id (always on a node that is not a
// Reference).
func (v *validator) ref1At(id fhirpath.NodeID) bool {
	t := &v.tree
	if t.Node(id).Type != "Reference" {
		return true
	}
	ref := t.Child(id, "reference", 0)
	if ref < 0 {
		return true
	}
	val := v.nodeValue(ref)
	if len(val) < 2 || val[0] != '#' {
		return true
	}
	root := v.rootResourceOf(id)
	if root < 0 {
		return false
	}
	return v.containsID(root, val[1:])
}

// rootResourceOf is FHIRPath's %rootResource for node id: the container of a contained
// resource, else the nearest resource.
func (v *validator) rootResourceOf(id fhirpath.NodeID) fhirpath.NodeID {
	t := &v.tree
	r := id
	for r >= 0 && !t.Node(r).Resource {
		r = t.Parent(r)
	}
	if r > 0 && t.Node(r).Name == "contained" {
		for c := t.Parent(r); c >= 0; c = t.Parent(c) {
			if t.Node(c).Resource {
				return c
			}
		}
	}
	return r
}

// containsID reports whether resource r has a contained resource with this id. Past a
// few contained resources their ids are put in a set, once per line and resource.
func (v *validator) containsID(r fhirpath.NodeID, id []byte) bool {
	t := &v.tree
	for _, s := range v.idSets {
		if s.root == r {
			_, ok := s.ids[string(id)]
			return ok
		}
	}
	n := 0
	for c := t.FirstChild(r); c >= 0; c = t.NextSibling(c) {
		if t.Node(c).Name != "contained" {
			continue
		}
		n++
		if string(v.nodeText(t.Child(c, "id", 0))) == string(id) {
			if n > 8 {
				break
			}
			return true
		}
	}
	if n <= 8 {
		return false
	}
	set := idSet{root: r, ids: map[string]struct{}{}}
	for c := t.FirstChild(r); c >= 0; c = t.NextSibling(c) {
		if t.Node(c).Name == "contained" {
			if cid := t.Child(c, "id", 0); cid >= 0 {
				set.ids[string(v.nodeText(cid))] = struct{}{}
			}
		}
	}
	v.idSets = append(v.idSets, set)
	_, ok := set.ids[string(id)]
	return ok
}

// idSet is the set of the contained resources' ids of resource root.
type idSet struct {
	root fhirpath.NodeID
	ids  map[string]struct{}
}

// localRefUnder reports whether the subtree below n (inner: n is itself a descendant of
// the resource) holds "#"+id as a descendant's reference or as a URI-typed value.
func (v *validator) localRefUnder(r, n fhirpath.NodeID, id []byte, inner bool) bool {
	t := &v.tree
	for c := t.FirstChild(n); c >= 0; c = t.NextSibling(c) {
		cn := t.Node(c)
		if (inner && cn.Name == "reference" || uriType(cn.Type)) && isLocalRef(v.nodeValue(c), id) {
			return true
		}
		if v.localRefUnder(r, c, id, true) {
			return true
		}
	}
	return false
}

// refersToContainer reports whether a descendant of contained resource c refers to its
// container: one reference "#", or a canonical "#".
func (v *validator) refersToContainer(c fhirpath.NodeID) bool {
	t := &v.tree
	for d := t.FirstChild(c); d >= 0; d = t.NextSibling(d) {
		if t.Node(d).Type == "canonical" && string(v.nodeValue(d)) == "#" {
			return true
		}
		ref, n := fhirpath.NodeID(-1), 0
		for k := t.FirstChild(d); k >= 0; k = t.NextSibling(k) {
			if t.Node(k).Name == "reference" {
				ref, n = k, n+1
			}
		}
		if n == 1 && string(v.nodeValue(ref)) == "#" || v.refersToContainer(d) {
			return true
		}
	}
	return false
}

// uriType: the types as(uri), as(canonical) and as(url) keep.
func uriType(t string) bool {
	switch t {
	case "uri", "url", "canonical", "oid", "uuid":
		return true
	}
	return false
}

func isLocalRef(val, id []byte) bool {
	return len(val) == len(id)+1 && val[0] == '#' && string(val[1:]) == string(id)
}

// nodeValue returns the text of a node's string value; nil for a node without one.
func (v *validator) nodeValue(id fhirpath.NodeID) []byte {
	switch v.tree.Node(id).Kind {
	case fhirpath.JSONString, fhirpath.JSONEscaped:
		return v.nodeText(id)
	}
	return nil
}

// ruleFail records a violation of rule at node n of the tree.
func (v *validator) ruleFail(rule string, n fhirpath.NodeID, msg string) bool {
	if v.err == nil {
		v.err = &Error{Reason: ReasonInvalid, Rule: rule, Location: string(v.tree.AppendLocation(nil, n)), Message: msg}
	}
	return false
}
