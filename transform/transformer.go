package transform

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sync"
)

// Option values.
const (
	IDsKeep   = "keep"   // use the resource's id (flat records: the mapping's id field)
	IDsDerive = "derive" // UUIDv5 over the type and a key (see DeriveID)

	FormatFHIR = "fhir" // one FHIR JSON resource per line
	FormatCSV  = "csv"  // CSV with a header line, mapped by Options.Mapping
	FormatFlat = "flat" // one flat JSON object per line, mapped by Options.Mapping
)

// Options configures a Transformer. Zero values select the defaults.
type Options struct {
	Profile string // "seed" (default) | "base"
	IDs     string // "keep" (default) | "derive"
	Format  string // "fhir" (default) | "csv" | "flat"
	Mapping string // path of the mapping YAML; required for csv/flat
}

// Transformer turns lines into validated resources. It is safe for concurrent use;
// each goroutine works through its own Stream.
type Transformer struct {
	profile, ids, format string
	schema               *schema
	mapping              *mapping
	mappingHash          string
	pool                 sync.Pool // *validator for Validate and Replay
}

// New checks the options, loads the mapping (csv/flat) and builds the validator.
// Errors name the bad option or mapping key.
func New(opts Options) (*Transformer, error) {
	t := &Transformer{profile: opts.Profile, ids: opts.IDs, format: opts.Format}
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
	switch t.format {
	case FormatFHIR:
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
		return nil, fmt.Errorf("transform: format must be %q, %q or %q", FormatFHIR, FormatCSV, FormatFlat)
	}
	t.schema = newSchema(t.profile)
	t.pool.New = func() any { return &validator{s: t.schema} }
	return t, nil
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
	s := &Stream{t: t, v: validator{s: t.schema}, object: objectName}
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
	r, e := s.t.transformFHIR(&s.v, line)
	if e != nil {
		return Resource{}, false, e
	}
	return r, false, nil
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
		return nil
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
func (t *Transformer) transformFHIR(v *validator, line []byte) (Resource, *Error) {
	derive := t.ids == IDsDerive
	if e := v.validate(line, true, derive); e != nil {
		return Resource{}, e
	}
	typ := v.root
	if !derive {
		if v.id == nil {
			return Resource{}, &Error{Reason: ReasonInvalid, Location: typ + ".id", Message: "id required (ids: keep)"}
		}
		return Resource{Type: typ, ID: string(v.id), Body: v.output(nil)}, nil
	}
	var key []byte
	switch {
	case v.id != nil:
		key = v.id
	case v.ident.done && v.ident.value != nil:
		key = append(append(append(key, v.ident.system...), '|'), v.ident.value...)
	default:
		return Resource{}, &Error{Reason: ReasonInvalid, Location: typ + ".id", Message: "ids: derive needs an id or an identifier with a value"}
	}
	id := appendDerivedID(make([]byte, 0, 36), typ, key)
	return Resource{Type: typ, ID: string(id), Body: v.output(id)}, nil
}
