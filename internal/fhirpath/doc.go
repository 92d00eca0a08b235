// Package fhirpath is a FHIRPath (N1, as FHIR R4 uses it) engine for the specification's
// invariants and search parameters, built to run at line speed inside the validator.
//
// # Use
//
//	x, err := fhirpath.Compile("dataAbsentReason.empty() or value.empty()") // once
//	var tree fhirpath.Tree
//	var ev fhirpath.Evaluator                                                 // one per goroutine
//	err = tree.Build(line, typer)                                             // or Tree.Add while walking
//	ok, err := ev.Test(x, &tree, 0)                                           // True, False or Empty
//
// An Expr is immutable and shared; a Tree and an Evaluator are reused line after line and,
// once warm, evaluating a simple invariant does not allocate.
//
// # Data model
//
// A Tree is an arena of typed nodes (element name, FHIR type, element definition path),
// linked parent / first child / next sibling, whose primitive values are byte spans of the
// source line: nothing is decoded until an expression needs it. It has two producers: a
// caller that already walks the JSON (the validator) appends nodes with Tree.Add, and
// Tree.Build parses FHIR JSON with a Typer that answers, for a parent element and a JSON
// property, the element's name, type and path. FHIR's JSON rules are applied there:
// resourceType is not an element, _name companions merge into their primitive, a choice
// property (valueQuantity) is the element value of type Quantity, resources inside
// resources (contained, Bundle.entry.resource) are resources.
//
// # Semantics
//
// Collections, empty propagation, singleton evaluation, three-valued logic, equality and
// equivalence, decimal arithmetic, partial-precision dates (@2020 < @2020-01 is empty),
// quantities with UCUM time/mass/length/volume conversions and calendar durations follow
// the N1 specification. Deliberate choices, each where R4's own expressions need it:
//   - A FHIR primitive is also an instance of its System type (que-7: answer is Boolean).
//   - "as" filters a collection rather than failing on several items (R4 search
//     parameters apply it to repeating elements).
//   - matches() finds the pattern anywhere in the string (R4 anchors with ^…$ where it
//     means the whole string); the syntax is Go's RE2, in single-line mode.
//   - resolve() knows the target's type only (from the reference text, a Reference's
//     type, a contained #id, or Env.ResolveURN for urn: references); looking inside a
//     resolved target is an error wrapping ErrNeedsResolution. Classify says which
//     expressions that affects.
//   - memberOf() fails with ErrNeedsTerminology; htmlChecks() calls Env.HTMLChecks.
//   - A dateTime with a time and no zone is taken as UTC.
//   - A primitive with only an id or extensions (no value) is an empty input to the
//     string functions, not an error (ref-1 on a reference explained by a
//     data-absent-reason holds).
//
// # Cost
//
// Evaluator.Limit bounds the work of the evaluations between two ResetSteps (Steps
// counts expression steps, items compared and nodes walked); past it an evaluation fails
// with ErrBudget. A caller sets it in proportion to a tree's size so that no tree costs
// time quadratic in its size. Subexpressions of a lambda's argument that do not depend
// on the item (where('#'+id in %resource.descendants().reference)) are evaluated once per
// evaluation.
//
// Errors never carry values from the data: positions, type names and function names only.
package fhirpath

//go:generate go run ./internal/extract
//go:generate go run ./internal/invtable
