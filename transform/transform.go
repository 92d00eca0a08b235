// Package transform turns one input line (or one entry of a Bundle document) into a
// validated FHIR R4 resource of any type: parse, map (flat records), validate, settle
// the id, rewrite references. The validator is built from the registry package: the
// structure of every type, then the specification's rules — invariants, narratives,
// extensions and the profiles a resource declares — each rejection naming its rule
// (Error.Rule). For a
// run it also offers the pre-pass (ScanID, Index) that resolves urn:uuid: references
// across files, the Bundle document decoder and format sniffing. It knows nothing of
// where bytes come from or go. See README.md.
package transform

//go:generate go test -run ^TestInvariantTable$ -update-invariants .

import "fmt"

// Reasons a line is rejected; they are dead-letter reason codes.
const (
	ReasonParse   = "parse"   // not JSON / not a record
	ReasonInvalid = "invalid" // JSON but not a valid resource for the profile
	ReasonMapping = "mapping" // a flat record that the mapping cannot map
)

// Error explains why a line was rejected. It never contains values from the
// line (no PHI): only a location (FHIRPath-like, or a CSV column name) and a reason.
type Error struct {
	Reason string // ReasonParse, ReasonInvalid or ReasonMapping
	// Rule is the rule the line breaks, when it is one of the specification's named
	// rules: an invariant's key ("obs-6", "ele-1", "txt-1", "ext-1"), "ext:" and an
	// extension's URL, or a declared profile's URL. Empty for the structural checks
	// (unknown element, cardinality, JSON type, primitive format, binding, reference
	// syntax), which Message names.
	Rule     string
	Location string // e.g. "Patient.name[0].family", "observations.csv:VALUE"
	Message  string // e.g. "required element missing", "obs-6: dataAbsentReason SHALL only be present if …"
}

func (e *Error) Error() string {
	if e.Location == "" {
		return e.Reason + ": " + e.Message
	}
	return fmt.Sprintf("%s: %s: %s", e.Reason, e.Location, e.Message)
}

// Resource is a validated resource ready to send: Body is its JSON with ids and
// references rewritten, number literals as written.
type Resource struct {
	Type string // any concrete R4 resource type: "Patient", "Claim", …
	ID   string
	Body []byte
	// Unresolved counts the urn:uuid: references left as they were: with a Resolver,
	// those whose target is not in the run; without, those on elements that allow any
	// type and carry no type element. The run report sums them (unresolved_references).
	Unresolved int
	// IDDerived is true when the source had no id (nor a Bundle fullUrl uuid) and the id
	// was derived from its first identifier or its content (see DeriveID). The run
	// report counts them (ids_derived).
	IDDerived bool
	// UnknownExtensions lists, once each, the URLs of the line's extensions (in any
	// resource of the line, nested ones included) that are neither core extensions nor
	// defined in Options.ProfilePackages; they were accepted (Options.Extensions
	// "lenient"). A URL that is not printable ASCII of at most 256 bytes is replaced by
	// "(unprintable url)". The run report counts lines per URL (unknown_extensions).
	UnknownExtensions []string
	// UnknownProfiles lists, once each, the profiles declared in the meta.profile of
	// the line's resources (version suffix removed) that are neither core profiles nor
	// in Options.ProfilePackages: not checked, and not a reason to reject the line. The
	// run report counts lines per URL (unknown_profiles).
	UnknownProfiles []string
}
