// Package benchkit holds what the benchmarks share: a deterministic generator of
// Synthea-like FHIR NDJSON and a no-op FHIR endpoint that answers like a server
// without storing anything. It is used by cmd/fhirload-gen, cmd/noopfhir,
// pipeline benchmarks and scripts/bench.sh; nothing in the product depends on it.
package benchkit

import (
	"bufio"
	"crypto/sha1"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"

	"github.com/fhirload/fhirload/internal/fhirpath"
	"github.com/fhirload/fhirload/registry"
)

// GenOptions configures Generate. Zero values take the defaults.
type GenOptions struct {
	// Bytes is the approximate total size to write (Patients plus Observations);
	// generation stops after the first Patient group that reaches it. Used when
	// Patients is 0; default 10 MB.
	Bytes int64
	// Patients is the exact number of Patients (each with its Observations).
	Patients int
	// ObservationsPerPatient is how many Observations each Patient gets, default 40.
	ObservationsPerPatient int
	// Seed selects the data set; the same options always produce the same bytes.
	Seed uint64
}

// GenStats says what Generate wrote.
type GenStats struct {
	Patients, Observations int64
	PatientBytes, ObsBytes int64
}

// Resources is the number of resources written.
func (s GenStats) Resources() int64 { return s.Patients + s.Observations }

// Generate writes Synthea-like Patients to patients and their Observations to
// observations, one resource per line. Patients are about 1.2 KB, Observations
// 0.8-1.3 KB (vital signs, lab values, blood-pressure panels). Ids are stable
// UUIDs derived from the seed and the record number; each Observation's
// subject is a urn:uuid: reference to its Patient, as in a Synthea bundle
// export. Every line is valid under the transform's "seed" profile. Nothing
// in it is real: names, dates and values are drawn from small fixed lists.
func Generate(patients, observations io.Writer, o GenOptions) (GenStats, error) {
	if o.ObservationsPerPatient <= 0 {
		o.ObservationsPerPatient = 40
	}
	if o.Patients <= 0 && o.Bytes <= 0 {
		o.Bytes = 10 << 20
	}
	pw := &countWriter{w: patients}
	ow := &countWriter{w: observations}
	pb := bufio.NewWriterSize(pw, 256<<10)
	ob := bufio.NewWriterSize(ow, 1<<20)
	g := gen{rnd: rand.New(rand.NewPCG(o.Seed, 0x9e3779b97f4a7c15)), seed: o.Seed}
	var st GenStats
	var line []byte
	for p := 0; ; p++ {
		if o.Patients > 0 && p >= o.Patients {
			break
		}
		if o.Patients <= 0 && pw.n+ow.n+int64(pb.Buffered()+ob.Buffered()) >= o.Bytes {
			break
		}
		pid := g.uuid("Patient", int64(p))
		line = g.patient(line[:0], pid, p)
		if _, err := pb.Write(line); err != nil {
			return st, fmt.Errorf("write patients: %w", err)
		}
		st.Patients++
		for k := 0; k < o.ObservationsPerPatient; k++ {
			n := int64(p)*int64(o.ObservationsPerPatient) + int64(k)
			line = g.observation(line[:0], g.uuid("Observation", n), pid, p, k)
			if _, err := ob.Write(line); err != nil {
				return st, fmt.Errorf("write observations: %w", err)
			}
			st.Observations++
		}
	}
	if err := pb.Flush(); err != nil {
		return st, fmt.Errorf("write patients: %w", err)
	}
	if err := ob.Flush(); err != nil {
		return st, fmt.Errorf("write observations: %w", err)
	}
	st.PatientBytes, st.ObsBytes = pw.n, ow.n
	return st, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

type gen struct {
	rnd  *rand.Rand
	seed uint64
	buf  [64]byte
}

// uuid is a stable version-5-shaped UUID of (seed, kind, n).
func (g *gen) uuid(kind string, n int64) []byte {
	h := sha1.New()
	b := strconv.AppendUint(g.buf[:0], g.seed, 10)
	b = append(b, '|')
	b = append(b, kind...)
	b = append(b, '|')
	b = strconv.AppendInt(b, n, 10)
	h.Write(b)
	var sum [sha1.Size]byte
	s := h.Sum(sum[:0])
	s[6] = s[6]&0x0f | 0x50
	s[8] = s[8]&0x3f | 0x80
	const hex = "0123456789abcdef"
	out := make([]byte, 0, 36)
	for i := 0; i < 16; i++ {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			out = append(out, '-')
		}
		out = append(out, hex[s[i]>>4], hex[s[i]&0xf])
	}
	return out
}

var (
	families = []string{"Lemke", "Okuneva", "Schinner", "Hartmann", "Bergstrom", "Kuvalis", "Runolfsdottir", "Wisozk", "Hermiston", "Keebler"}
	givens   = []string{"Abram", "Lettie", "Marcos", "Shanna", "Dewey", "Karine", "Hollis", "Mirella", "Tyree", "Augustina"}
	cities   = []string{"Boston", "Easthampton", "Worcester", "Springfield", "Lowell", "Cambridge", "Quincy", "Salem"}
	streets  = []string{"Nikolaus Gate", "Harber Way", "Kuhic Rue", "Bode Brook", "Cremin Wall", "Dach Center"}
)

func pick(r *rand.Rand, s []string) string { return s[r.IntN(len(s))] }

func (g *gen) date(b []byte, fromYear, years int) []byte {
	y := fromYear + g.rnd.IntN(years)
	m := 1 + g.rnd.IntN(12)
	d := 1 + g.rnd.IntN(28)
	b = strconv.AppendInt(b, int64(y), 10)
	b = append(b, '-')
	b = pad2(b, m)
	b = append(b, '-')
	return pad2(b, d)
}

func pad2(b []byte, n int) []byte {
	if n < 10 {
		b = append(b, '0')
	}
	return strconv.AppendInt(b, int64(n), 10)
}

func (g *gen) digits(b []byte, n int) []byte {
	for i := 0; i < n; i++ {
		b = append(b, byte('0'+g.rnd.IntN(10)))
	}
	return b
}

func (g *gen) patient(b, id []byte, p int) []byte {
	r := g.rnd
	b = append(b, `{"resourceType":"Patient","id":"`...)
	b = append(b, id...)
	b = append(b, `","meta":{"profile":["http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"]},"extension":[{"url":"http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName","valueString":"`...)
	b = append(b, pick(r, givens)...)
	b = append(b, ' ')
	b = append(b, pick(r, families)...)
	b = append(b, `"},{"url":"http://hl7.org/fhir/StructureDefinition/patient-birthPlace","valueAddress":{"city":"`...)
	b = append(b, pick(r, cities)...)
	b = append(b, `","state":"Massachusetts","country":"US"}}],"identifier":[{"system":"https://github.com/synthetichealth/synthea","value":"`...)
	b = append(b, id...)
	b = append(b, `"},{"type":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v2-0203","code":"MR","display":"Medical Record Number"}],"text":"Medical Record Number"},"system":"http://hospital.smarthealthit.org","value":"MRN`...)
	b = strconv.AppendInt(b, int64(p), 10)
	b = append(b, `"},{"type":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v2-0203","code":"SS","display":"Social Security Number"}],"text":"Social Security Number"},"system":"http://hl7.org/fhir/sid/us-ssn","value":"999-`...)
	b = g.digits(b, 2)
	b = append(b, '-')
	b = g.digits(b, 4)
	b = append(b, `"}],"name":[{"use":"official","family":"`...)
	b = append(b, pick(r, families)...)
	b = append(b, `","given":["`...)
	b = append(b, pick(r, givens)...)
	b = append(b, `"],"prefix":["`...)
	male := r.IntN(2) == 0
	if male {
		b = append(b, `Mr."]}],"telecom":[{"system":"phone","value":"555-`...)
	} else {
		b = append(b, `Ms."]}],"telecom":[{"system":"phone","value":"555-`...)
	}
	b = g.digits(b, 3)
	b = append(b, '-')
	b = g.digits(b, 4)
	b = append(b, `","use":"home"}],"gender":"`...)
	if male {
		b = append(b, "male"...)
	} else {
		b = append(b, "female"...)
	}
	b = append(b, `","birthDate":"`...)
	b = g.date(b, 1930, 85)
	b = append(b, `","address":[{"line":["`...)
	b = strconv.AppendInt(b, int64(1+r.IntN(999)), 10)
	b = append(b, ' ')
	b = append(b, pick(r, streets)...)
	b = append(b, `"],"city":"`...)
	b = append(b, pick(r, cities)...)
	b = append(b, `","state":"Massachusetts","postalCode":"0`...)
	b = g.digits(b, 4)
	b = append(b, `","country":"US"}],"maritalStatus":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v3-MaritalStatus","code":"M","display":"M"}],"text":"M"},"multipleBirthBoolean":false,"communication":[{"language":{"coding":[{"system":"urn:ietf:bcp:47","code":"en-US","display":"English"}],"text":"English"}}]}`...)
	return append(b, '\n')
}

// vital is one single-valued Observation kind.
type vital struct {
	category, loinc, display, unit string
	lo, hi                         float64
}

var vitals = []vital{
	{"vital-signs", "8302-2", "Body Height", "cm", 140, 200},
	{"vital-signs", "29463-7", "Body Weight", "kg", 40, 130},
	{"vital-signs", "39156-5", "Body Mass Index", "kg/m2", 17, 40},
	{"vital-signs", "8867-4", "Heart rate", "/min", 50, 110},
	{"vital-signs", "9279-1", "Respiratory rate", "/min", 10, 24},
	{"laboratory", "2339-0", "Glucose [Mass/volume] in Blood", "mg/dL", 60, 180},
	{"laboratory", "2093-3", "Cholesterol [Mass/volume] in Serum or Plasma", "mg/dL", 120, 280},
	{"laboratory", "38483-4", "Creatinine [Mass/volume] in Blood", "mg/dL", 0.5, 1.5},
}

func (g *gen) observation(b, id, pid []byte, p, k int) []byte {
	r := g.rnd
	b = append(b, `{"resourceType":"Observation","id":"`...)
	b = append(b, id...)
	b = append(b, `","meta":{"profile":["http://hl7.org/fhir/us/core/StructureDefinition/us-core-vital-signs"]},"status":"final","category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"`...)
	bp := k%5 == 4 // every fifth is a blood-pressure panel with two components
	v := vitals[r.IntN(len(vitals))]
	cat := v.category
	if bp {
		cat = "vital-signs"
	}
	b = append(b, cat...)
	b = append(b, `","display":"`...)
	b = append(b, cat...)
	b = append(b, `"}]}],"code":{"coding":[{"system":"http://loinc.org","code":"`...)
	if bp {
		b = append(b, `85354-9","display":"Blood pressure panel with all children optional"}],"text":"Blood pressure panel with all children optional"}`...)
	} else {
		b = append(b, v.loinc...)
		b = append(b, `","display":"`...)
		b = append(b, v.display...)
		b = append(b, `"}],"text":"`...)
		b = append(b, v.display...)
		b = append(b, `"}`...)
	}
	b = append(b, `,"subject":{"reference":"urn:uuid:`...)
	b = append(b, pid...)
	b = append(b, `"},"encounter":{"reference":"urn:uuid:`...)
	b = append(b, g.uuid("Encounter", int64(p)*64+int64(k/8))...)
	b = append(b, `"},"effectiveDateTime":"`...)
	ts := len(b)
	b = g.date(b, 2005, 18)
	b = append(b, 'T')
	b = pad2(b, r.IntN(24))
	b = append(b, ':')
	b = pad2(b, r.IntN(60))
	b = append(b, ':')
	b = pad2(b, r.IntN(60))
	b = append(b, "-05:00"...)
	stamp := b[ts:]
	b = append(b, `","issued":"`...)
	b = append(b, stamp[:19]...)
	b = append(b, `.`...)
	b = g.digits(b, 3)
	b = append(b, `-05:00","performer":[{"reference":"urn:uuid:`...)
	b = append(b, g.uuid("Practitioner", int64(p%97))...)
	b = append(b, `"}]`...)
	if bp {
		b = append(b, `,"component":[`...)
		b = g.component(b, "8462-4", "Diastolic Blood Pressure", 60, 95)
		b = append(b, ',')
		b = g.component(b, "8480-6", "Systolic Blood Pressure", 100, 160)
		b = append(b, "]}\n"...)
		return b
	}
	b = append(b, `,"valueQuantity":{"value":`...)
	b = strconv.AppendFloat(b, v.lo+(v.hi-v.lo)*r.Float64(), 'f', 1, 64)
	b = append(b, `,"unit":"`...)
	b = append(b, v.unit...)
	b = append(b, `","system":"http://unitsofmeasure.org","code":"`...)
	b = append(b, v.unit...)
	b = append(b, `"},"interpretation":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation","code":"N","display":"Normal"}],"text":"Normal"}]}`...)
	return append(b, '\n')
}

func (g *gen) component(b []byte, loinc, display string, lo, hi float64) []byte {
	b = append(b, `{"code":{"coding":[{"system":"http://loinc.org","code":"`...)
	b = append(b, loinc...)
	b = append(b, `","display":"`...)
	b = append(b, display...)
	b = append(b, `"}],"text":"`...)
	b = append(b, display...)
	b = append(b, `"},"valueQuantity":{"value":`...)
	b = strconv.AppendInt(b, int64(lo+(hi-lo)*g.rnd.Float64()), 10)
	return append(b, `,"unit":"mm[Hg]","system":"http://unitsofmeasure.org","code":"mm[Hg]"}}`...)
}

// DefaultMixedTypes returns the types GenerateMixed writes per patient by default:
// common clinical and financial types, several of which Synthea's R4 export does not
// have (DocumentReference, Provenance, ServiceRequest, Coverage, Appointment, Specimen,
// Goal).
func DefaultMixedTypes() []string {
	return []string{
		"Encounter", "Observation", "Condition", "Procedure", "MedicationRequest", "Immunization",
		"AllergyIntolerance", "DiagnosticReport", "DocumentReference", "Provenance", "ServiceRequest",
		"Coverage", "Claim", "Appointment", "Specimen", "Goal", "CarePlan",
	}
}

// DefaultSharedTypes returns the types GenerateMixed writes once for the whole
// population (after every patient, so that references to them come first in the stream).
func DefaultSharedTypes() []string {
	return []string{"Organization", "Location", "Practitioner", "PractitionerRole", "Medication", "Device"}
}

// MixedOptions configures GenerateMixed. Zero values take the defaults.
type MixedOptions struct {
	Patients    int      // default 10
	PerPatient  int      // resources of each type per patient, default 3
	Shared      int      // resources of each shared type, default 5
	Types       []string // per-patient types (Patient is always written), default DefaultMixedTypes()
	SharedTypes []string // default DefaultSharedTypes()
	Seed        uint64
}

// MixedStats says what GenerateMixed wrote.
type MixedStats struct {
	Resources  int64
	Bytes      int64
	References int64 // urn:uuid: references written
	PerType    map[string]int64
}

// GenerateMixed writes a population of many resource types as NDJSON to w, built from
// the registry's definitions rather than from templates: for each resource it fills
// every required element (and, at random, some optional ones) with values of the
// element's type — codes of required bindings from their value sets, choice types at
// random — and points every Reference at a generated resource of a type the element
// allows, as a urn:uuid: reference (the patient's own resources first, then the shared
// ones, which are written last so that most references point forward). Patients carry
// a name with family and given (the seed profile). A resource that breaks one of the
// core invariants (registry.InvariantSet: pat-1, qty-3, lnk-1 …) is drawn again. Every
// line is valid under the transform's seed profile, and with an Index of the stream
// every reference resolves.
// The same options give the same bytes.
func GenerateMixed(w io.Writer, o MixedOptions) (MixedStats, error) {
	if o.Patients <= 0 {
		o.Patients = 10
	}
	if o.PerPatient <= 0 {
		o.PerPatient = 3
	}
	if o.Shared <= 0 {
		o.Shared = 5
	}
	if o.Types == nil {
		o.Types = DefaultMixedTypes()
	}
	if o.SharedTypes == nil {
		o.SharedTypes = DefaultSharedTypes()
	}
	reg := registry.R4()
	for _, t := range append(append([]string{}, o.Types...), o.SharedTypes...) {
		if !reg.IsResourceType(t) {
			return MixedStats{}, fmt.Errorf("benchkit: %q is not an R4 resource type", t)
		}
	}
	g := &mixGen{gen: gen{rnd: rand.New(rand.NewPCG(o.Seed, 0x5851f42d4c957f2d)), seed: o.Seed}, reg: reg,
		children: map[string][]*registry.Element{}, pools: map[string][][]byte{}}
	st := MixedStats{PerType: map[string]int64{}}
	for _, t := range o.SharedTypes {
		for k := 0; k < o.Shared; k++ {
			g.pools[t] = append(g.pools[t], g.uuid(t, int64(k)))
		}
	}
	check, err := newInvariantCheck(reg)
	if err != nil {
		return MixedStats{}, err
	}
	bw := bufio.NewWriterSize(w, 256<<10)
	var line []byte
	emit := func(typ string, id []byte) error {
		// The values are drawn at random within each element's definition; the
		// invariants (pat-1, qty-3, per-1, …) tie elements together, so a resource that
		// breaks one is drawn again.
		refs := g.refs
		for attempt := 1; ; attempt++ {
			g.refs = refs
			line = g.resource(line[:0], typ, id)
			key, ok := check.holds(line)
			if ok {
				break
			}
			if attempt == maxDraws {
				return fmt.Errorf("benchkit: no %s that satisfies the invariants in %d draws (%s)", typ, maxDraws, key)
			}
		}
		st.Resources++
		st.Bytes += int64(len(line))
		st.PerType[typ]++
		_, err := bw.Write(line)
		return err
	}
	for p := 0; p < o.Patients; p++ {
		// The patient's own ids first, so its resources can point at each other.
		for _, t := range o.Types {
			g.pools[t] = g.pools[t][:0]
			for k := 0; k < o.PerPatient; k++ {
				g.pools[t] = append(g.pools[t], g.uuid(t, int64(p*o.PerPatient+k)))
			}
		}
		pid := g.uuid("Patient", int64(p))
		g.pools["Patient"] = [][]byte{pid}
		if err := emit("Patient", pid); err != nil {
			return st, err
		}
		for _, t := range o.Types {
			for _, id := range g.pools[t] {
				if err := emit(t, id); err != nil {
					return st, err
				}
			}
		}
	}
	for _, t := range o.Types {
		delete(g.pools, t)
	}
	delete(g.pools, "Patient")
	for _, t := range o.SharedTypes {
		for _, id := range g.pools[t] {
			if err := emit(t, id); err != nil {
				return st, err
			}
		}
	}
	st.References = g.refs
	return st, bw.Flush()
}

// maxDraws bounds how often GenerateMixed draws a resource that breaks an invariant
// (an Appointment, with app-1 to app-4 tying status, start, end and cancelationReason
// together, holds on a few draws in a hundred).
const maxDraws = 20000

// invariantCheck evaluates the core invariants on a generated line.
type invariantCheck struct {
	set  *fhirpath.Set
	ty   fhirpath.Typer
	tree fhirpath.Tree
	ev   fhirpath.Evaluator
	viol []fhirpath.Violation
}

func newInvariantCheck(reg *registry.Registry) (*invariantCheck, error) {
	set, err := reg.InvariantSet()
	if err != nil {
		return nil, err
	}
	return &invariantCheck{set: set, ty: reg.Typer()}, nil
}

// holds reports whether every invariant holds on line, else the key of one that does not.
func (c *invariantCheck) holds(line []byte) (string, bool) {
	if err := c.tree.Build(line, c.ty); err != nil {
		return "json: " + err.Error(), false
	}
	c.viol = c.set.Check(&c.ev, &c.tree, c.viol[:0])
	if len(c.viol) > 0 {
		return c.viol[0].Invariant.Key, false
	}
	return "", true
}

type mixGen struct {
	gen
	reg      *registry.Registry
	children map[string][]*registry.Element // type name or backbone path → child elements
	pools    map[string][][]byte            // type → ids a reference may point at
	refs     int64
	n        int // running counter for values
}

// skipped says whether an optional element is left out: ids, extensions, and a
// resource's metadata and narrative, whose values a load benchmark does not need.
func skipped(e *registry.Element, depth int) bool {
	if e.Min > 0 {
		return false
	}
	switch e.Name() {
	case "id", "extension", "modifierExtension":
		return true
	case "meta", "implicitRules", "language", "text", "contained":
		return depth == 1
	}
	return false
}

func (g *mixGen) childrenOf(t *registry.Type, path string) []*registry.Element {
	if c, ok := g.children[path]; ok {
		return c
	}
	var out []*registry.Element
	prefix := path + "."
	for i := range t.Elements {
		e := &t.Elements[i]
		if strings.HasPrefix(e.Path, prefix) && !strings.Contains(e.Path[len(prefix):], ".") && e.Max != 0 {
			out = append(out, e)
		}
	}
	g.children[path] = out
	return out
}

func (g *mixGen) resource(b []byte, typ string, id []byte) []byte {
	b = append(b, `{"resourceType":"`...)
	b = append(b, typ...)
	b = append(b, `","id":"`...)
	b = append(b, id...)
	b = append(b, '"')
	if typ == "Patient" { // the seed profile: a name with family and given
		b = append(b, `,"name":[{"family":"`...)
		b = append(b, pick(g.rnd, families)...)
		b = append(b, `","given":["`...)
		b = append(b, pick(g.rnd, givens)...)
		b = append(b, `"]}]`...)
	}
	t := g.reg.Type(typ)
	b = g.membersExcept(b, t, typ, 1, true, handMade[typ].except) // after the id
	b = append(b, handMade[typ].members...)
	return append(b, "}\n"...)
}

// handMade are members written as they are, in place of random ones, for types whose
// invariants random values almost never satisfy together.
var handMade = map[string]struct {
	except  map[string]bool
	members string
}{
	// sdf-3, -6, -8, -14 … -17, -20, -23: one differential element, the root.
	"StructureDefinition": {map[string]bool{"snapshot": true, "differential": true},
		`,"differential":{"element":[{"id":"Basic","path":"Basic"}]}`},
}

// members appends the members of an object of path (a type or backbone element), each
// after a comma; comma says whether one is already written.
func (g *mixGen) members(b []byte, t *registry.Type, path string, depth int, comma bool) []byte {
	return g.membersExcept(b, t, path, depth, comma, nil)
}

// membersExcept is members without the elements named in except (those a profile of
// the datatype forbids, such as SimpleQuantity's comparator).
func (g *mixGen) membersExcept(b []byte, t *registry.Type, path string, depth int, comma bool, except map[string]bool) []byte {
	kids := g.childrenOf(t, path)
	wrote := comma
	for _, e := range kids {
		if skipped(e, depth) || except[e.Name()] || path == "Patient" && e.Name() == "name" {
			continue
		}
		include := e.Min > 0 || depth <= 3 && g.rnd.IntN(4*depth) == 0
		if !include {
			continue
		}
		before := len(b)
		if wrote {
			b = append(b, ',')
		}
		var ok bool
		b, ok = g.element(b, t, e, depth)
		if !ok {
			b = b[:before]
			continue
		}
		wrote = true
	}
	if !wrote && !comma {
		// An object must not be empty: write its first element that can have a value.
		for _, e := range kids {
			if skipped(e, depth) || except[e.Name()] {
				continue
			}
			var ok bool
			if b, ok = g.element(b, t, e, depth); ok {
				break
			}
		}
	}
	return b
}

// element appends "name":value for e (an array for max > 1); false when no value can be
// made (the caller drops it).
func (g *mixGen) element(b []byte, t *registry.Type, e *registry.Element, depth int) ([]byte, bool) {
	var tr registry.TypeRef
	switch {
	case e.ContentReference != "":
		if depth > 4 {
			return b, false
		}
		tr = registry.TypeRef{Code: "BackboneElement"}
	case len(e.Types) == 0:
		return b, false
	case e.Min > 0 || len(e.Types) == 1:
		tr = e.Types[0]
	default:
		tr = e.Types[g.rnd.IntN(len(e.Types))]
	}
	if tr.Code == "Resource" || tr.Code == "Extension" || tr.Code == "xhtml" || tr.Code == "Narrative" || tr.Code == "Meta" {
		return b, false
	}
	start := len(b)
	b = append(b, '"')
	b = append(b, e.JSONName(tr.Code)...)
	b = append(b, `":`...)
	many := e.Max != 1
	if many {
		b = append(b, '[')
	}
	var ok bool
	b, ok = g.value(b, t, e, tr, depth)
	if !ok {
		return b[:start], false
	}
	if many {
		// Now and then a second item: some invariants need two (lnk-1: item.count() > 1).
		if depth == 1 && g.rnd.IntN(4) == 0 {
			mark := len(b)
			b = append(b, ',')
			if b, ok = g.value(b, t, e, tr, depth); !ok {
				b = b[:mark]
			}
		}
		b = append(b, ']')
	}
	return b, true
}

func (g *mixGen) value(b []byte, t *registry.Type, e *registry.Element, tr registry.TypeRef, depth int) ([]byte, bool) {
	vs := (*registry.ValueSet)(nil)
	if e.Binding.Strength == "required" {
		vs = g.reg.ValueSet(e.Binding.ValueSet)
	}
	switch tr.Code {
	case "BackboneElement", "Element":
		if depth > 5 {
			return b, false
		}
		path := e.Path
		if e.ContentReference != "" {
			path = e.ContentReference
		}
		b = append(b, '{')
		b = g.members(b, t, path, depth+1, false)
		return append(b, '}'), true
	case "Reference":
		return g.reference(b, tr), true
	case "CodeableConcept":
		if vs != nil && vs.Complete && len(vs.Codes) > 0 {
			c := vs.Codes[g.rnd.IntN(len(vs.Codes))]
			b = append(b, `{"coding":[{"system":"`...)
			b = append(b, c.System...)
			b = append(b, `","code":"`...)
			b = append(b, c.Code...)
			return append(b, `"}]}`...), true
		}
		b = append(b, `{"coding":[{"system":"http://example.org/codes","code":"c`...)
		b = strconv.AppendInt(b, int64(g.rnd.IntN(100)), 10)
		return append(b, `"}],"text":"generated"}`...), true
	case "Identifier":
		g.n++
		b = append(b, `{"system":"http://example.org/ids","value":"`...)
		b = strconv.AppendInt(b, int64(g.n), 10)
		return append(b, `"}`...), true
	case "code":
		if vs != nil {
			if !vs.Complete || len(vs.Codes) == 0 {
				c, ok := externalCodes[vs.URL]
				if !ok {
					return b, false
				}
				return strconv.AppendQuote(b, c), true
			}
			return strconv.AppendQuote(b, vs.Codes[g.rnd.IntN(len(vs.Codes))].Code), true
		}
		return append(b, `"code"`...), true
	}
	if alts, ok := primitiveChoices[tr.Code]; ok && g.rnd.IntN(3) == 0 {
		return append(b, alts[g.rnd.IntN(len(alts))]...), true
	}
	if v, ok := primitiveValues[tr.Code]; ok {
		return append(b, v...), true
	}
	ct := g.reg.Type(tr.Code)
	if ct == nil || ct.Kind != registry.Complex || depth > 5 {
		return b, false
	}
	var except map[string]bool
	for _, url := range tr.Profiles {
		if p := g.reg.Profile(url); p != nil && p.Type == ct.Name {
			for _, pe := range p.Elements {
				if pe.Max == 0 && pe.SliceName == "" && strings.Count(pe.ID, ".") == 1 {
					if except == nil {
						except = map[string]bool{}
					}
					except[pe.Name()] = true
				}
			}
		}
	}
	b = append(b, '{')
	b = g.membersExcept(b, ct, ct.Name, depth+1, false, except)
	return append(b, '}'), true
}

// reference points at a generated resource of a type the element allows: the patient's
// own resources first, then shared ones; {"display":…} when none is allowed.
func (g *mixGen) reference(b []byte, tr registry.TypeRef) []byte {
	var choices []string
	for _, target := range tr.Targets {
		if target == "Resource" {
			for typ := range g.pools {
				choices = append(choices, typ)
			}
			break
		}
		if len(g.pools[target]) > 0 {
			choices = append(choices, target)
		}
	}
	if len(choices) == 0 {
		return append(b, `{"display":"not generated"}`...)
	}
	slices.Sort(choices) // map order must not change the output
	ids := g.pools[choices[g.rnd.IntN(len(choices))]]
	g.refs++
	b = append(b, `{"reference":"urn:uuid:`...)
	b = append(b, ids[g.rnd.IntN(len(ids))]...)
	return append(b, `"}`...)
}

// primitiveValues are the JSON values generated for primitive types.
var primitiveValues = map[string]string{
	"boolean": "true", "integer": "7", "positiveInt": "3", "unsignedInt": "0", "decimal": "12.5",
	"string": `"generated text"`, "markdown": `"generated *text*"`, "id": `"a1"`, "uri": `"http://example.org/fhir/x"`,
	"url": `"http://example.org/x"`, "canonical": `"http://example.org/fhir/StructureDefinition/x"`,
	"oid": `"urn:oid:1.2.3.4"`, "uuid": `"urn:uuid:6f3c1e52-8a4d-4b0e-9d27-51c38e0a7f14"`, "date": `"2021-03-04"`,
	"dateTime": `"2021-03-04T10:20:30-05:00"`, "instant": `"2021-03-04T10:20:30.123Z"`, "time": `"10:20:30"`,
	"base64Binary": `"aGVsbG8gd29ybGQ="`,
}

// primitiveChoices are other values drawn now and then, for invariants that need them
// (msq-3: coordinateSystem 0 or 1; per-1: a start before an end).
var primitiveChoices = map[string][]string{
	"boolean": {"false"}, "integer": {"0", "1", "2"}, "positiveInt": {"1", "2"}, "unsignedInt": {"1", "2"},
	"decimal": {"0.5", "1", "100"}, "date": {`"2020-12-31"`, `"2022-01-01"`},
	"dateTime": {`"2020-12-31T08:00:00Z"`, `"2022-01-01T00:00:00Z"`},
}

// externalCodes are codes of required value sets whose code systems are not in the package.
var externalCodes = map[string]string{
	"http://hl7.org/fhir/ValueSet/mimetypes":  "text/plain",
	"http://hl7.org/fhir/ValueSet/currencies": "USD",
	"http://hl7.org/fhir/ValueSet/ucum-units": "mg",
}
