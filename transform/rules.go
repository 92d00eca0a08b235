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
	// native are the keys the validator checks itself instead of the Set: txt-1 and
	// txt-2 (the narrative checker in narrative.go).
	native map[string]bool
}

// nativeRules are invariants evaluated by the validator's own code rather than by their
// FHIRPath expression (htmlChecks() cannot say which of its two rules failed).
var nativeRules = map[string]bool{"txt-1": true, "txt-2": true}

// coreInvariants compiles the invariants once per process (shared by every profile and
// Transformer: a Set is safe for concurrent use).
var coreInvariants = sync.OnceValues(func() (*invariants, error) {
	return newInvariants(registry.R4())
})

func newInvariants(reg *registry.Registry) (*invariants, error) {
	inv := &invariants{human: map[string]string{}, native: nativeRules}
	for _, t := range reg.Types() {
		for i := range t.Elements {
			for _, c := range t.Elements[i].Constraints {
				if _, ok := inv.human[c.Key]; !ok && c.Severity == "error" {
					inv.human[c.Key] = c.Human
				}
			}
		}
	}
	set, err := reg.InvariantSet()
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

// ruleFail records a violation of rule at node n of the tree.
func (v *validator) ruleFail(rule string, n fhirpath.NodeID, msg string) bool {
	if v.err == nil {
		v.err = &Error{Reason: ReasonInvalid, Rule: rule, Location: string(v.tree.AppendLocation(nil, n)), Message: msg}
	}
	return false
}
