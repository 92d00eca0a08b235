package registry

import (
	"github.com/fhirload/fhirload/internal/fhirpath"
)

// Invariants returns the error-severity invariants of every type of the registry
// (resources, datatypes, primitives), each with the path of the element it is stated
// on as its context ("Observation", "Observation.referenceRange", "Quantity"): one per
// element and key, as the snapshots list them (ele-1 on every element). Constraints
// published without an expression are left out.
func (r *Registry) Invariants() []fhirpath.Invariant {
	var out []fhirpath.Invariant
	for _, t := range r.types {
		for i := range t.Elements {
			e := &t.Elements[i]
			for _, c := range e.Constraints {
				if c.Severity == "error" && c.Expression != "" {
					out = append(out, fhirpath.Invariant{Key: c.Key, Severity: c.Severity, Context: e.Path, Expression: c.Expression})
				}
			}
		}
	}
	return out
}

// InvariantSet returns Invariants compiled into one fhirpath.Set, built on first use
// and shared (a Set is safe for concurrent use). Those the engine cannot evaluate over
// one resource are left out and listed by Set.Skipped: htmlChecks() (txt-1, txt-2: a
// caller checks narratives itself) and resolve() of another resource's content.
func (r *Registry) InvariantSet() (*fhirpath.Set, error) {
	r.invOnce.Do(func() { r.invSet, r.invErr = fhirpath.NewSet(r.Invariants()) })
	return r.invSet, r.invErr
}
