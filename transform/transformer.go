package transform

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/fhirload/fhirload/registry"
)

// Option values.
const (
	IDsKeep   = "keep"   // use the resource's id (flat records: the mapping's id field)
	IDsDerive = "derive" // UUIDv5 over the type and a key (see DeriveID)

	FormatFHIR   = "fhir"   // one FHIR JSON resource per line (NDJSON)
	FormatBundle = "bundle" // a JSON document whose top level is a Bundle: its entries (see BundleDecoder, Stream.NextEntry)
	FormatCSV    = "csv"    // CSV with a header line, mapped by Options.Mapping
	FormatFlat   = "flat"   // one flat JSON object per line, mapped by Options.Mapping
)

// Options configures a Transformer. Zero values select the defaults.
type Options struct {
	Profile string // "seed" (default) | "base"
	IDs     string // "keep" (default) | "derive"
	Format  string // "fhir" (default) | "bundle" | "csv" | "flat"
	Mapping string // path of the mapping YAML; required for csv/flat
	// Resolver, when set, gives the type of the run's resource a urn:uuid: reference
	// points at (see Resolver and Index); references to resources not in the run are
	// then kept and counted in Resource.Unresolved. Without it a urn:uuid: reference
	// takes its type element's type, else the element's first target type.
	Resolver Resolver
	// Extensions says what happens to an extension whose URL is neither a core
	// extension nor defined in ProfilePackages: "lenient" (default) accepts it and
	// lists it in Resource.UnknownExtensions; "strict" rejects the line (rule "ext:" and
	// the URL). Known extensions are checked either way (see extension.go).
	Extensions string
	// ProfilePackages are FHIR packages (.tgz files on local disk, e.g. US Core's) whose
	// profiles, extension definitions and value sets are added to the core package's
	// (see packages.go for what is read). A resource is checked against the profiles its
	// meta.profile declares; a declared profile found in neither is listed in
	// Resource.UnknownProfiles, never a rejection by itself.
	ProfilePackages []string
}

// Transformer turns lines into validated resources. It is safe for concurrent use;
// each goroutine works through its own Stream.
type Transformer struct {
	profile, ids, format string
	resolver             Resolver
	defs                 *definitions
	strictExt            bool
	schema               *schema
	mapping              *mapping
	mappingHash          string
	pool                 sync.Pool // *validator for Validate and Replay
	// off turns checks off; benchmarks use it to state the cost of each check.
	off checks
}

// checks is a set of the validator's checks beyond the structural walk.
type checks uint8

const (
	checkInvariants checks = 1 << iota
	checkNarrative
	checkExtensions
	checkProfiles
)

// New checks the options, loads the mapping (csv/flat) and builds the validator.
// Errors name the bad option or mapping key.
func New(opts Options) (*Transformer, error) {
	t := &Transformer{profile: opts.Profile, ids: opts.IDs, format: opts.Format, resolver: opts.Resolver}
	if t.profile == "" {
		t.profile = ProfileSeed
	}
	if t.ids == "" {
		t.ids = IDsKeep
	}
	if t.format == "" {
		t.format = FormatFHIR
	}
	if t.profile != ProfileSeed && t.profile != ProfileBase {
		return nil, fmt.Errorf("transform: profile must be %q or %q", ProfileSeed, ProfileBase)
	}
	if t.ids != IDsKeep && t.ids != IDsDerive {
		return nil, fmt.Errorf("transform: ids must be %q or %q", IDsKeep, IDsDerive)
	}
	switch opts.Extensions {
	case "", ExtensionsLenient:
	case ExtensionsStrict:
		t.strictExt = true
	default:
		return nil, fmt.Errorf("transform: extensions must be %q or %q", ExtensionsLenient, ExtensionsStrict)
	}
	defs, err := definitionsFor(opts.ProfilePackages)
	if err != nil {
		return nil, err
	}
	t.defs = defs
	switch t.format {
	case FormatFHIR, FormatBundle:
	case FormatCSV, FormatFlat:
		if opts.Mapping == "" {
			return nil, fmt.Errorf("transform: mapping is required for format %q", t.format)
		}
		raw, err := os.ReadFile(opts.Mapping)
		if err != nil {
			return nil, fmt.Errorf("transform: mapping: %w", err)
		}
		m, err := parseMapping(raw)
		if err != nil {
			return nil, fmt.Errorf("transform: mapping %s: %w", opts.Mapping, err)
		}
		if m.name == "" {
			m.name = filepath.Base(opts.Mapping)
		}
		sum := sha256.Sum256(raw)
		t.mappingHash = hex.EncodeToString(sum[:])
		t.mapping = m
	default:
		return nil, fmt.Errorf("transform: format must be %q, %q, %q or %q", FormatFHIR, FormatBundle, FormatCSV, FormatFlat)
	}
	s, err := schemaFor(t.profile)
	if err != nil {
		return nil, err
	}
	t.schema = s
	t.pool.New = func() any { v := t.newValidator(); return &v }
	return t, nil
}

// definitionsFor returns the core definitions, plus those of the profile packages.
func definitionsFor(files []string) (*definitions, error) {
	if len(files) == 0 {
		return coreDefinitions()
	}
	reg := registry.R4()
	var pkgs []*fhirPackage
	for _, f := range files {
		p, err := loadPackage(f, reg)
		if err != nil {
			return nil, fmt.Errorf("transform: profile package %w", err)
		}
		pkgs = append(pkgs, p)
	}
	return newDefinitions(reg, pkgs)
}

// newValidator returns a validator for this transformer's options.
func (t *Transformer) newValidator() validator {
	return validator{s: t.schema, resolver: t.resolver, off: t.off, defs: t.defs, strictExt: t.strictExt, stepsPerNode: defaultStepsPerNode}
}

// Info describes the configuration for run reports: the profile, ids mode, format, the
// mapping's name and the SHA-256 of the mapping file (both empty for fhir).
func (t *Transformer) Info() (profile, ids, format, mappingName, mappingHash string) {
	name := ""
	if t.mapping != nil {
		name = t.mapping.name
	}
	return t.profile, t.ids, t.format, name, t.mappingHash
}

// Stream transforms the lines of one object (file). It is used by one goroutine.
type Stream struct {
	t      *Transformer
	v      validator
	object string
	flat   flatStream
}

// NewStream starts an object; objectName (a path or key) selects mapping rules by file name.
func (t *Transformer) NewStream(objectName string) *Stream {
	s := &Stream{t: t, v: t.newValidator(), object: objectName}
	s.flat.object = filepath.Base(objectName)
	return s
}

// Header returns the CSV header line of the stream (nil for fhir and flat, or before
// the first line).
func (s *Stream) Header() []byte { return s.flat.header }

// Next transforms one line. skip is true only for the CSV header line, which is consumed
// without producing a resource. err is always a *Error. Body never aliases line.
func (s *Stream) Next(line []byte) (res Resource, skip bool, err error) {
	line = stripBOM(line)
	switch s.t.format {
	case FormatCSV:
		if s.flat.header == nil {
			s.flat.setHeader(s.t.mapping, line)
			return Resource{}, true, nil
		}
		return s.t.mapRecord(&s.v, &s.flat, line)
	case FormatFlat:
		return s.t.mapRecord(&s.v, &s.flat, line)
	}
	r, e := s.t.transformFHIR(&s.v, line, nil)
	if e != nil {
		return Resource{}, false, e
	}
	return r, false, nil
}

// NextEntry transforms the resource of one Bundle entry (see BundleDecoder). A
// urn:uuid: fullUrl gives the resource its id when it has none (under ids: derive, the
// key of its derived id), so that references to the fullUrl resolve to it. err is
// always a *Error; entry errors (an entry without a resource) are returned as they are.
// Body never aliases the entry.
func (s *Stream) NextEntry(e *BundleEntry) (Resource, error) {
	if e.Err != nil {
		return Resource{}, e.Err
	}
	var fallback []byte
	if u, ok := strings.CutPrefix(e.FullURL, "urn:uuid:"); ok && checkID([]byte(u)) == "" {
		fallback = []byte(u)
	}
	r, err := s.t.transformFHIR(&s.v, e.Resource, fallback)
	if err != nil {
		return Resource{}, err
	}
	return r, nil
}

// Replay transforms one dead-lettered line without its source; header is the CSV header
// recorded with it (ignored for fhir and flat).
func (t *Transformer) Replay(objectName string, header, line []byte) (Resource, error) {
	s := t.NewStream(objectName)
	if t.format == FormatCSV {
		if header == nil {
			return Resource{}, &Error{Reason: ReasonMapping, Location: s.flat.object, Message: "no CSV header recorded for the line"}
		}
		s.Next(header)
	}
	r, skip, err := s.Next(line)
	if err != nil {
		return Resource{}, err
	}
	if skip {
		return Resource{}, &Error{Reason: ReasonMapping, Location: s.flat.object, Message: "the line is a CSV header"}
	}
	return r, nil
}

// Validate checks a resource body under the transformer's profile. It returns nil or a *Error.
func (t *Transformer) Validate(body []byte) error {
	v := t.pool.Get().(*validator)
	defer t.pool.Put(v)
	if e := v.validate(stripBOM(body), false, false); e != nil {
		return e
	}
	return nil
}

func stripBOM(b []byte) []byte {
	if len(b) >= 3 && b[0] == 0xEF && b[1] == 0xBB && b[2] == 0xBF {
		return b[3:]
	}
	return b
}

// validate runs the schema walk over line and classifies the failure.
func (v *validator) validate(line []byte, rewrite, derive bool) *Error {
	v.reset(line)
	v.rewrite, v.derive = rewrite, derive
	if v.resource() {
		if (v.off&checkInvariants != 0 || v.checkInvariants()) &&
			(v.off&checkExtensions != 0 || v.checkExtensions()) &&
			(v.off&checkProfiles != 0 || v.checkProfiles()) {
			return nil
		}
		return v.err
	}
	e := v.err
	if e.Reason != ReasonParse {
		if se := v.checkSyntax(line); se != nil {
			return se
		}
	}
	return e
}

// transformFHIR validates a FHIR line, settles its id and rewrites references.
// fallbackID (a Bundle entry's fullUrl uuid, or nil) is the id of a resource without one.
func (t *Transformer) transformFHIR(v *validator, line, fallbackID []byte) (Resource, *Error) {
	derive := t.ids == IDsDerive
	if e := v.validate(line, true, derive); e != nil {
		return Resource{}, e
	}
	typ := v.root
	res := Resource{Type: typ, Unresolved: v.unresolved}
	v.reportUnknown(&res)
	switch {
	case !derive && v.id != nil:
		res.ID = string(v.id)
		res.Body = v.output(nil)
		return res, nil
	case !derive && fallbackID != nil:
		res.ID = string(fallbackID)
		res.Body = v.output(fallbackID)
		return res, nil
	}
	var key []byte
	switch {
	case v.id != nil:
		key = v.id
	case fallbackID != nil:
		key = fallbackID
	default:
		key = v.contentKey()
		res.IDDerived = true
	}
	id := appendDerivedID(make([]byte, 0, 36), typ, key)
	res.ID = string(id)
	res.Body = v.output(id)
	return res, nil
}

// reportUnknown copies the line's unknown extension and profile URLs into res.
func (v *validator) reportUnknown(res *Resource) {
	if len(v.unknown) > 0 {
		res.UnknownExtensions = slices.Clone(v.unknown)
	}
	if len(v.unknownProf) > 0 {
		res.UnknownProfiles = slices.Clone(v.unknownProf)
	}
}

// contentKey is the key of the derived id of a resource without an id: "system|value"
// of its first identifier when that has a value, else "sha256:" and the hex SHA-256 of
// its canonical JSON, so that key order and whitespace do not change it.
func (v *validator) contentKey() []byte {
	if v.ident.done && v.ident.hasValue {
		return append(append(append([]byte(nil), v.ident.system...), '|'), v.ident.value...)
	}
	sum := sha256.Sum256(canonicalJSON(v.b))
	return append([]byte("sha256:"), hex.EncodeToString(sum[:])...)
}
