package fhirpath

import (
	"strconv"
	"sync"
	"unsafe"
)

// Invariant is a FHIR constraint: an expression that must be true on every node its
// context names.
type Invariant struct {
	Key        string // "obs-6"
	Severity   string // "error" or "warning"
	Context    string // element path ("Observation", "Observation.referenceRange") or type ("Quantity", "Element")
	Expression string
}

// Violation is an invariant that does not hold on a node, or could not be evaluated there
// (Err set: a type mismatch in the data, several values where one was expected, …).
type Violation struct {
	Invariant *Invariant
	Node      NodeID
	Err       error
}

// Skipped is an invariant a Set does not evaluate, and why.
type Skipped struct {
	Invariant Invariant
	Class     Classification
}

// Set is a compiled group of invariants that applies each to the nodes its context names:
// a node matches an invariant whose context is the node's element definition path or its
// FHIR type (snapshots list inherited constraints under each type and element, so no
// other inheritance is needed). An invariant whose key already applied to a node through
// its path is not applied again through its type. A Set is safe for
// concurrent use.
type Set struct {
	rules   []rule
	byCtx   map[string][]int32
	skipped []Skipped

	mu     sync.RWMutex
	merged map[string]map[string][]int32 // path → type → rules (see merge)
}

type rule struct {
	inv  Invariant
	expr *Expr
}

// SetOption adjusts NewSet.
type SetOption func(*setConfig)

type setConfig struct{ narrative bool }

// WithNarrative keeps invariants that use htmlChecks(): the evaluator's Env.HTMLChecks
// must then be set.
func WithNarrative() SetOption { return func(c *setConfig) { c.narrative = true } }

// NewSet compiles invariants. Those that cannot be evaluated over one resource
// (terminology, resolution of other resources, narrative checks without WithNarrative)
// are left out and listed by Skipped; an expression that does not compile is an error.
func NewSet(invs []Invariant, opts ...SetOption) (*Set, error) {
	var cfg setConfig
	for _, o := range opts {
		o(&cfg)
	}
	s := &Set{byCtx: map[string][]int32{}, merged: map[string]map[string][]int32{}}
	compiled := map[string]*Expr{} // snapshots repeat expressions under many contexts; an Expr is shared safely
	for _, inv := range invs {
		x, ok := compiled[inv.Expression]
		if !ok {
			var err error
			if x, err = Compile(inv.Expression); err != nil {
				return nil, &InvariantError{Key: inv.Key, Context: inv.Context, Err: err}
			}
			compiled[inv.Expression] = x
		}
		c := x.Class()
		if c.Class != Evaluable && !(c.Class == NeedsNarrative && cfg.narrative) {
			s.skipped = append(s.skipped, Skipped{Invariant: inv, Class: c})
			continue
		}
		ctx := inv.Context
		s.byCtx[ctx] = append(s.byCtx[ctx], int32(len(s.rules)))
		s.rules = append(s.rules, rule{inv: inv, expr: x})
	}
	return s, nil
}

// InvariantError is an invariant whose expression does not compile.
type InvariantError struct {
	Key, Context string
	Err          error
}

func (e *InvariantError) Error() string {
	return "fhirpath: invariant " + e.Key + " at " + e.Context + ": " + e.Err.Error()
}

func (e *InvariantError) Unwrap() error { return e.Err }

// Len returns the number of invariants the set evaluates.
func (s *Set) Len() int { return len(s.rules) }

// Skipped lists the invariants left out, with the reason.
func (s *Set) Skipped() []Skipped { return s.skipped }

// Check evaluates every invariant on every node it applies to and appends to dst the
// violations: results that are false, and errors. An empty result (unknown, as when
// dates of different precisions are compared) is not a violation. With a dst of enough
// capacity a check that finds nothing does not allocate once ev has seen the tree's
// element definitions (ev remembers, per Set, which invariants apply to a path and type).
func (s *Set) Check(ev *Evaluator, t *Tree, dst []Violation) []Violation {
	for i := range t.nodes {
		for _, r := range s.rulesFor(ev, &t.nodes[i]) {
			dst = s.apply(ev, t, NodeID(i), r, dst)
		}
	}
	return dst
}

// Applies returns the number of invariants Check evaluates on node i.
func (s *Set) Applies(t *Tree, i NodeID) int {
	return len(s.merge(&t.nodes[i]))
}

// merge lists the invariants of a node's path, then those of its type whose key did not
// apply through the path.
func (s *Set) merge(n *Node) []int32 {
	byPath := s.byCtx[n.Path]
	if n.Type == n.Path {
		return byPath
	}
	out := append([]int32(nil), byPath...)
rules:
	for _, r := range s.byCtx[n.Type] {
		for _, p := range byPath {
			if s.rules[p].inv.Key == s.rules[r].inv.Key {
				continue rules
			}
		}
		out = append(out, r)
	}
	return out
}

// ruleCache remembers, for an Evaluator and a Set, the invariants of (path, type) pairs,
// keyed by the strings' addresses: Typers hand out the same strings for every line, so
// after the first lines a node's invariants are found without hashing its path.
type ruleCache struct {
	set     *Set
	entries [512]ruleEntry
}

type ruleEntry struct {
	path, typ *byte
	plen      int
	tlen      int
	rules     []int32
}

func (s *Set) rulesFor(ev *Evaluator, n *Node) []int32 {
	c := ev.rules
	if c == nil || c.set != s {
		c = &ruleCache{set: s}
		ev.rules = c
	}
	p, t := unsafe.StringData(n.Path), unsafe.StringData(n.Type)
	k := uint64(uintptr(unsafe.Pointer(p))) ^ uint64(uintptr(unsafe.Pointer(t)))*31
	h := (k * 0x9E3779B97F4A7C15) >> (64 - 9) // Fibonacci hashing into 512 entries
	e := &c.entries[h]
	if e.path == p && e.typ == t && e.plen == len(n.Path) && e.tlen == len(n.Type) && p != nil {
		return e.rules
	}
	rules := s.mergedFor(n)
	*e = ruleEntry{path: p, typ: t, plen: len(n.Path), tlen: len(n.Type), rules: rules}
	return rules
}

// mergedFor returns merge(n), computed once per path and type.
func (s *Set) mergedFor(n *Node) []int32 {
	s.mu.RLock()
	rules, ok := s.merged[n.Path][n.Type]
	s.mu.RUnlock()
	if ok {
		return rules
	}
	rules = s.merge(n)
	s.mu.Lock()
	m := s.merged[n.Path]
	if m == nil {
		m = map[string][]int32{}
		s.merged[n.Path] = m
	}
	m[n.Type] = rules
	s.mu.Unlock()
	return rules
}

func (s *Set) apply(ev *Evaluator, t *Tree, n NodeID, r int32, dst []Violation) []Violation {
	rl := &s.rules[r]
	res, err := ev.Test(rl.expr, t, n)
	if err != nil || res == False {
		dst = append(dst, Violation{Invariant: &rl.inv, Node: n, Err: err})
	}
	return dst
}

// AppendLocation appends node i's FHIRPath location to dst:
// Observation.component[1].value.ofType(Quantity). Repeated elements carry their index;
// a choice element names its type.
func (t *Tree) AppendLocation(dst []byte, i NodeID) []byte {
	var stack [64]NodeID
	depth := 0
	for c := i; c >= 0 && depth < len(stack); c = t.nodes[c].parent {
		stack[depth] = c
		depth++
	}
	for k := depth - 1; k >= 0; k-- {
		c := stack[k]
		n := &t.nodes[c]
		if n.parent < 0 {
			dst = append(dst, n.Type...)
			continue
		}
		dst = append(dst, '.')
		dst = append(dst, n.Name...)
		idx, many := t.siblingIndex(c)
		if many {
			dst = append(dst, '[')
			dst = strconv.AppendInt(dst, int64(idx), 10)
			dst = append(dst, ']')
		}
		if n.Choice {
			dst = append(dst, ".ofType("...)
			dst = append(dst, n.Type...)
			dst = append(dst, ')')
		}
	}
	return dst
}

// siblingIndex returns the index of c among its parent's children of the same name, and
// whether there is more than one.
func (t *Tree) siblingIndex(c NodeID) (int, bool) {
	n := &t.nodes[c]
	idx, count := 0, 0
	for s := t.nodes[n.parent].first; s >= 0; s = t.nodes[s].next {
		if t.nodes[s].Name == n.Name {
			if s == c {
				idx = count
			}
			count++
		}
	}
	return idx, count > 1
}
