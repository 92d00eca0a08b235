// Command extract builds the FHIRPath engine's corpus and tables from the FHIR R4 core
// package (hl7.fhir.r4.core 4.0.1). It runs in two steps:
//
//	go run ./internal/extract -tgz PATH/hl7.fhir.r4.core-4.0.1.tgz   # refresh r4-core.ndjson.gz
//	go run ./internal/extract                                         # (go generate) write the outputs
//
// The first step keeps, of every StructureDefinition and SearchParameter, only the fields
// used below, in r4-core.ndjson.gz next to this file (so go generate works in a clone
// without the package). The second writes, relative to internal/fhirpath:
//
//   - testdata/invariants.tsv.gz: every constraint of every StructureDefinition's
//     snapshot: key, severity, context (element path), expression, the definitions that
//     carry it;
//   - testdata/searchparams.tsv.gz: every SearchParameter: id, base types, type, expression;
//   - internal/r4/elements.tsv.gz: the JSON properties of every type and backbone element,
//     for the test Typer;
//   - zz_types.go: the base type of every FHIR type (for is/as/ofType).
package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"flag"
	"fmt"
	"go/format"
	"io"
	"log"
	"os"
	"path"
	"sort"
	"strings"
)

// The trimmed input.
type typeRef struct {
	Code string `json:"code"`
	// FHIRType is the structuredefinition-fhir-type extension of System.* codes.
	FHIRType string `json:"fhirType,omitempty"`
}

type constraint struct {
	Key        string `json:"key"`
	Severity   string `json:"severity"`
	Expression string `json:"expression,omitempty"`
}

type element struct {
	Path             string       `json:"path"`
	Type             []typeRef    `json:"type,omitempty"`
	ContentReference string       `json:"contentReference,omitempty"`
	Constraint       []constraint `json:"constraint,omitempty"`
}

type resource struct {
	ResourceType   string    `json:"resourceType"`
	ID             string    `json:"id"`
	URL            string    `json:"url,omitempty"`
	Type           string    `json:"type,omitempty"`
	Kind           string    `json:"kind,omitempty"`
	Abstract       bool      `json:"abstract,omitempty"`
	Derivation     string    `json:"derivation,omitempty"`
	BaseDefinition string    `json:"baseDefinition,omitempty"`
	Element        []element `json:"element,omitempty"` // the snapshot
	// SearchParameter
	Base       []string `json:"base,omitempty"`
	SPType     string   `json:"spType,omitempty"`
	Expression string   `json:"expression,omitempty"`
}

func main() {
	tgz := flag.String("tgz", "", "refresh the trimmed input from this hl7.fhir.r4.core-4.0.1.tgz")
	spec := flag.String("spec", "internal/extract/r4-core.ndjson.gz", "trimmed input")
	out := flag.String("out", ".", "the internal/fhirpath folder")
	flag.Parse()
	log.SetFlags(0)
	if *tgz != "" {
		if err := trim(*tgz, *spec); err != nil {
			log.Fatal(err)
		}
		return
	}
	rs, err := load(*spec)
	if err != nil {
		log.Fatal(err)
	}
	for _, step := range []func([]resource, string) error{invariants, searchParams, elements, baseTypes} {
		if err := step(rs, *out); err != nil {
			log.Fatal(err)
		}
	}
}

// trim reads the package and writes the fields used, one resource per line, sorted by
// file name.
func trim(tgz, dst string) error {
	f, err := os.Open(tgz)
	if err != nil {
		return err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return err
	}
	tr := tar.NewReader(zr)
	files := map[string][]byte{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		base := path.Base(h.Name)
		if !strings.HasPrefix(base, "StructureDefinition-") && !strings.HasPrefix(base, "SearchParameter-") {
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			return err
		}
		files[base] = b
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	for _, n := range names {
		r, err := trimOne(files[n])
		if err != nil {
			return fmt.Errorf("%s: %w", n, err)
		}
		if r == nil {
			continue
		}
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		buf.Write(b)
		buf.WriteByte('\n')
	}
	return writeGzip(dst, buf.Bytes())
}

func trimOne(b []byte) (*resource, error) {
	var raw struct {
		ResourceType   string `json:"resourceType"`
		ID             string `json:"id"`
		URL            string `json:"url"`
		Type           string `json:"type"`
		Kind           string `json:"kind"`
		Abstract       bool   `json:"abstract"`
		Derivation     string `json:"derivation"`
		BaseDefinition string `json:"baseDefinition"`
		Snapshot       *struct {
			Element []struct {
				Path string `json:"path"`
				Type []struct {
					Code      string `json:"code"`
					Extension []struct {
						URL      string `json:"url"`
						ValueURL string `json:"valueUrl"`
					} `json:"extension"`
				} `json:"type"`
				ContentReference string       `json:"contentReference"`
				Constraint       []constraint `json:"constraint"`
			} `json:"element"`
		} `json:"snapshot"`
		Base       []string `json:"base"`
		Expression string   `json:"expression"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, err
	}
	r := &resource{ResourceType: raw.ResourceType, ID: raw.ID, URL: raw.URL}
	if raw.ResourceType == "SearchParameter" {
		var sp struct {
			Type string `json:"type"`
		}
		if err := json.Unmarshal(b, &sp); err != nil {
			return nil, err
		}
		r.Base, r.SPType, r.Expression = raw.Base, sp.Type, raw.Expression
		return r, nil
	}
	if raw.Snapshot == nil {
		return nil, nil // the two examples without a snapshot define nothing
	}
	r.Type, r.Kind, r.Abstract, r.Derivation, r.BaseDefinition = raw.Type, raw.Kind, raw.Abstract, raw.Derivation, raw.BaseDefinition
	for _, e := range raw.Snapshot.Element {
		el := element{Path: e.Path, ContentReference: e.ContentReference}
		for _, c := range e.Constraint {
			el.Constraint = append(el.Constraint, constraint{Key: c.Key, Severity: c.Severity, Expression: c.Expression})
		}
		for _, t := range e.Type {
			tr := typeRef{Code: t.Code}
			for _, x := range t.Extension {
				if strings.HasSuffix(x.URL, "/structuredefinition-fhir-type") {
					tr.FHIRType = x.ValueURL
				}
			}
			el.Type = append(el.Type, tr)
		}
		r.Element = append(r.Element, el)
	}
	return r, nil
}

func load(file string) ([]resource, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return nil, err
	}
	var rs []resource
	sc := bufio.NewScanner(zr)
	sc.Buffer(nil, 64<<20)
	for sc.Scan() {
		var r resource
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, err
		}
		rs = append(rs, r)
	}
	return rs, sc.Err()
}

func writeGzip(file string, data []byte) error {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return err
	}
	// A fixed header (no name, no time) keeps the output reproducible.
	if _, err := zw.Write(data); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return os.WriteFile(file, buf.Bytes(), 0o644)
}

func clean(s string) string {
	return strings.NewReplacer("\t", " ", "\n", " ", "\r", " ").Replace(s)
}

func invariants(rs []resource, out string) error {
	type key struct{ key, sev, ctx, expr string }
	sources := map[key][]string{}
	for _, r := range rs {
		if r.ResourceType != "StructureDefinition" {
			continue
		}
		for _, e := range r.Element {
			for _, c := range e.Constraint {
				k := key{c.Key, c.Severity, e.Path, clean(c.Expression)}
				if s := sources[k]; len(s) == 0 || s[len(s)-1] != r.ID {
					sources[k] = append(sources[k], r.ID)
				}
			}
		}
	}
	keys := make([]key, 0, len(sources))
	for k := range sources {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		a, b := keys[i], keys[j]
		if a.key != b.key {
			return a.key < b.key
		}
		if a.ctx != b.ctx {
			return a.ctx < b.ctx
		}
		if a.sev != b.sev {
			return a.sev < b.sev
		}
		return a.expr < b.expr
	})
	var buf bytes.Buffer
	buf.WriteString("key\tseverity\tcontext\texpression\tdefinitions\n")
	for _, k := range keys {
		fmt.Fprintf(&buf, "%s\t%s\t%s\t%s\t%s\n", k.key, k.sev, k.ctx, k.expr, strings.Join(sources[k], ","))
	}
	log.Printf("invariants: %d (key, severity, context, expression)", len(keys))
	return writeGzip(path.Join(out, "testdata/invariants.tsv.gz"), buf.Bytes())
}

func searchParams(rs []resource, out string) error {
	var buf bytes.Buffer
	buf.WriteString("id\tbase\ttype\texpression\n")
	n := 0
	for _, r := range rs {
		if r.ResourceType != "SearchParameter" {
			continue
		}
		fmt.Fprintf(&buf, "%s\t%s\t%s\t%s\n", r.ID, strings.Join(r.Base, ","), r.SPType, clean(r.Expression))
		n++
	}
	log.Printf("search parameters: %d", n)
	return writeGzip(path.Join(out, "testdata/searchparams.tsv.gz"), buf.Bytes())
}

// typeName is the FHIR type of a type code (System.* codes by their fhir-type extension).
func typeName(t typeRef) string {
	if t.FHIRType != "" {
		return t.FHIRType
	}
	if name, ok := strings.CutPrefix(t.Code, "http://hl7.org/fhirpath/System."); ok {
		switch name {
		case "String":
			return "string"
		case "Boolean":
			return "boolean"
		case "Integer":
			return "integer"
		case "Decimal":
			return "decimal"
		case "Date":
			return "date"
		case "DateTime":
			return "dateTime"
		case "Time":
			return "time"
		}
	}
	return t.Code
}

// definitions returns the specialisations: the base types and resources (not profiles,
// not logical models, not the examples).
func definitions(rs []resource) []resource {
	var defs []resource
	for _, r := range rs {
		if r.ResourceType != "StructureDefinition" || r.Kind == "logical" || r.Derivation == "constraint" {
			continue
		}
		if r.Derivation == "" && r.Type != "Element" && r.Type != "Resource" && r.Type != "Base" {
			continue
		}
		defs = append(defs, r)
	}
	return defs
}

func elements(rs []resource, out string) error {
	var buf bytes.Buffer
	buf.WriteString("def\tjson\tname\ttype\tpath\tchildren\tchoice\tkind\n")
	rows := 0
	for _, r := range definitions(rs) {
		hasChildren := map[string]bool{}
		for _, e := range r.Element {
			if i := strings.LastIndexByte(e.Path, '.'); i >= 0 {
				hasChildren[e.Path[:i]] = true
			}
		}
		kind := r.Kind
		fmt.Fprintf(&buf, "%s\t\t\t%s\t%s\t%s\t0\t%s\n", r.Type, r.Type, r.Type, r.Type, kind)
		for _, e := range r.Element[1:] {
			i := strings.LastIndexByte(e.Path, '.')
			parent, name := e.Path[:i], e.Path[i+1:]
			if r.Kind == "primitive-type" && name == "value" {
				continue // the primitive's value is not a JSON property
			}
			choice := strings.HasSuffix(name, "[x]")
			base := strings.TrimSuffix(name, "[x]")
			if e.ContentReference != "" {
				ref := strings.TrimPrefix(e.ContentReference, "#")
				typ := "BackboneElement"
				for _, x := range r.Element {
					if x.Path == ref && len(x.Type) == 1 {
						typ = typeName(x.Type[0])
					}
				}
				// The element is defined by the one it refers to (Questionnaire.item.item by
				// Questionnaire.item), whose invariants apply to it.
				fmt.Fprintf(&buf, "%s\t%s\t%s\t%s\t%s\t%s\t0\t\n", parent, name, name, typ, ref, ref)
				rows++
				continue
			}
			for _, t := range e.Type {
				typ := typeName(t)
				children := typ
				if hasChildren[e.Path] {
					children = e.Path
				}
				key, c := name, 0
				if choice {
					key, c = base+strings.ToUpper(typ[:1])+typ[1:], 1
				}
				fmt.Fprintf(&buf, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t\n", parent, key, base, typ, e.Path, children, c)
				rows++
			}
		}
	}
	log.Printf("elements: %d JSON properties", rows)
	return writeGzip(path.Join(out, "internal/r4/elements.tsv.gz"), buf.Bytes())
}

func baseTypes(rs []resource, out string) error {
	base := map[string]string{}
	for _, r := range definitions(rs) {
		if r.BaseDefinition == "" {
			continue
		}
		base[r.Type] = path.Base(r.BaseDefinition)
	}
	base["BackboneElement"] = "Element"
	names := make([]string, 0, len(base))
	for n := range base {
		names = append(names, n)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	buf.WriteString("// Code generated by internal/extract from hl7.fhir.r4.core 4.0.1; DO NOT EDIT.\n\npackage fhirpath\n\n")
	buf.WriteString("// fhirBase is the base type of every FHIR R4 type and resource.\nvar fhirBase = map[string]string{\n")
	for _, n := range names {
		fmt.Fprintf(&buf, "\t%q: %q,\n", n, base[n])
	}
	buf.WriteString("}\n")
	src, err := format.Source(buf.Bytes())
	if err != nil {
		return err
	}
	log.Printf("types: %d", len(names))
	return os.WriteFile(path.Join(out, "zz_types.go"), src, 0o644)
}
