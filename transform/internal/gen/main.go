// Command gen generates transform/zz_generated.go from the FHIR R4 StructureDefinitions,
// ValueSets and CodeSystems in transform/spec/. Run it with `go generate ./transform`.
//
// It walks the definitions reachable from Patient and Observation (every datatype an
// element, a choice type or an extension value can hold) and writes, for each complex
// type and backbone element, its JSON field names, element cardinalities, choice groups,
// reference targets and required-binding value sets, plus each primitive's regex as
// published (the hand-written checkers are tested against these regexes).
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"go/format"
	"log"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

type typeRef struct {
	Code          string   `json:"code"`
	TargetProfile []string `json:"targetProfile"`
	Extension     []struct {
		URL         string `json:"url"`
		ValueURL    string `json:"valueUrl"`
		ValueString string `json:"valueString"`
	} `json:"extension"`
}

type element struct {
	Path             string    `json:"path"`
	Min              int       `json:"min"`
	Max              string    `json:"max"`
	Type             []typeRef `json:"type"`
	ContentReference string    `json:"contentReference"`
	MaxLength        int       `json:"maxLength"`
	Binding          *struct {
		Strength string `json:"strength"`
		ValueSet string `json:"valueSet"`
	} `json:"binding"`
}

type structureDefinition struct {
	ID       string `json:"id"`
	Kind     string `json:"kind"`
	Type     string `json:"type"`
	Abstract bool   `json:"abstract"`
	Snapshot struct {
		Element []element `json:"element"`
	} `json:"snapshot"`
}

type concept struct {
	Code    string    `json:"code"`
	Concept []concept `json:"concept"`
}

type codeSystem struct {
	URL     string    `json:"url"`
	Concept []concept `json:"concept"`
}

type valueSet struct {
	URL     string `json:"url"`
	Compose struct {
		Include []struct {
			System   string    `json:"system"`
			Concept  []concept `json:"concept"`
			ValueSet []string  `json:"valueSet"`
		} `json:"include"`
	} `json:"compose"`
}

// genField is one JSON property of a generated type.
type genField struct {
	JSON    string
	Elem    int
	Kind    string // Go constant name of the kind
	Type    string // complex type name when Kind is kindObject
	PrimExt bool   // the "_name" companion of a primitive
}

// genElem is one element definition of a generated type.
type genElem struct {
	Name     string
	Min      int
	Many     bool
	Choice   bool
	ValueSet string
	Targets  []string
	Default  string
}

// defaultTargets overrides the first target profile as the type a urn:uuid reference
// without a type element is taken to point at, where the first listed is not the usual one.
var defaultTargets = map[string]string{
	"Patient.generalPractitioner": "Practitioner",
}

type genType struct {
	Name     string
	Resource bool
	Fields   []genField
	Elems    []genElem
}

type generator struct {
	dir      string
	sds      map[string]*structureDefinition
	types    map[string]*genType
	order    []string
	queue    []string
	valueSet map[string]bool
	used     map[string]bool
}

var primitiveKinds = map[string]string{
	"boolean": "kindBoolean", "integer": "kindInteger", "positiveInt": "kindPositiveInt",
	"unsignedInt": "kindUnsignedInt", "decimal": "kindDecimal", "string": "kindString",
	"markdown": "kindMarkdown", "code": "kindCode", "id": "kindID", "uri": "kindURI",
	"url": "kindURL", "canonical": "kindCanonical", "oid": "kindOID", "uuid": "kindUUID",
	"date": "kindDate", "dateTime": "kindDateTime", "instant": "kindInstant", "time": "kindTime",
	"base64Binary": "kindBase64Binary", "xhtml": "kindXHTML",
}

func main() {
	spec := flag.String("spec", "spec", "folder with the R4 definitions")
	out := flag.String("out", "zz_generated.go", "output file")
	flag.Parse()
	g := &generator{dir: *spec, sds: map[string]*structureDefinition{}, types: map[string]*genType{},
		valueSet: map[string]bool{}, used: map[string]bool{}}
	g.enqueue("Patient")
	g.enqueue("Observation")
	g.enqueue("Element")
	for len(g.queue) > 0 {
		name := g.queue[0]
		g.queue = g.queue[1:]
		g.genSD(name)
	}
	src := g.render()
	formatted, err := format.Source(src)
	if err != nil {
		os.WriteFile(*out, src, 0o644)
		log.Fatalf("gofmt generated code: %v", err)
	}
	if err := os.WriteFile(*out, formatted, 0o644); err != nil {
		log.Fatal(err)
	}
	if os.Getenv("GEN_LIST_USED") != "" {
		var names []string
		for n := range g.used {
			names = append(names, n)
		}
		sort.Strings(names)
		fmt.Println(strings.Join(names, "\n"))
	}
}

func (g *generator) readJSON(name string, v any) bool {
	b, err := os.ReadFile(filepath.Join(g.dir, name))
	if os.IsNotExist(err) {
		return false
	}
	if err != nil {
		log.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		log.Fatalf("%s: %v", name, err)
	}
	g.used[name] = true
	return true
}

func (g *generator) sd(name string) *structureDefinition {
	if sd, ok := g.sds[name]; ok {
		return sd
	}
	sd := &structureDefinition{}
	if !g.readJSON("StructureDefinition-"+name+".json", sd) {
		log.Fatalf("missing StructureDefinition %s", name)
	}
	g.sds[name] = sd
	return sd
}

func (g *generator) enqueue(name string) {
	if _, ok := g.types[name]; ok {
		return
	}
	g.types[name] = nil
	g.queue = append(g.queue, name)
}

func (g *generator) genSD(name string) {
	sd := g.sd(name)
	g.genType(sd, name, sd.Snapshot.Element)
}

// children returns the direct children of path within elems.
func children(elems []element, path string) []element {
	var out []element
	prefix := path + "."
	for _, e := range elems {
		if strings.HasPrefix(e.Path, prefix) && !strings.Contains(e.Path[len(prefix):], ".") {
			out = append(out, e)
		}
	}
	return out
}

func (g *generator) genType(sd *structureDefinition, path string, elems []element) {
	t := &genType{Name: path, Resource: sd.Kind == "resource" && path == sd.ID}
	g.types[path] = t
	g.order = append(g.order, path)
	for _, e := range children(elems, path) {
		name := e.Path[len(path)+1:]
		choice := strings.HasSuffix(name, "[x]")
		base := strings.TrimSuffix(name, "[x]")
		ge := genElem{Name: name, Min: e.Min, Many: e.Max != "1" && e.Max != "0", Choice: choice}
		if e.Max == "0" {
			continue
		}
		if e.Binding != nil && e.Binding.Strength == "required" {
			vs, _, _ := strings.Cut(e.Binding.ValueSet, "|")
			ge.ValueSet = vs
			g.valueSet[vs] = true
		}
		idx := len(t.Elems)
		if e.ContentReference != "" {
			target := strings.TrimPrefix(e.ContentReference, "#")
			g.enqueueBackbone(sd, target)
			t.Fields = append(t.Fields, genField{JSON: base, Elem: idx, Kind: "kindObject", Type: target})
			t.Elems = append(t.Elems, ge)
			continue
		}
		for _, tr := range e.Type {
			code := tr.Code
			if strings.HasPrefix(code, "http://hl7.org/fhirpath/System.") {
				code = "string"
				for _, x := range tr.Extension {
					if strings.HasSuffix(x.URL, "structuredefinition-fhir-type") {
						code = x.ValueURL
					}
				}
				if t.Resource && name == "id" {
					code = "id"
				}
			}
			jsonName := base
			if choice {
				jsonName = base + strings.ToUpper(code[:1]) + code[1:]
			}
			if code == "Reference" {
				for _, p := range tr.TargetProfile {
					ge.Targets = append(ge.Targets, strings.TrimPrefix(p, "http://hl7.org/fhir/StructureDefinition/"))
				}
				if len(ge.Targets) > 0 && ge.Targets[0] != "Resource" {
					ge.Default = ge.Targets[0]
				}
				if d, ok := defaultTargets[e.Path]; ok {
					ge.Default = d
				}
			}
			switch {
			case primitiveKinds[code] != "":
				t.Fields = append(t.Fields, genField{JSON: jsonName, Elem: idx, Kind: primitiveKinds[code]})
				if code != "xhtml" && !(name == "id" || (path == "Extension" && name == "url")) {
					g.enqueue("Element")
					t.Fields = append(t.Fields, genField{JSON: "_" + jsonName, Elem: idx, Kind: "kindObject", Type: "Element", PrimExt: true})
				}
			case code == "Resource":
				t.Fields = append(t.Fields, genField{JSON: jsonName, Elem: idx, Kind: "kindResource"})
			case code == "BackboneElement" || code == "Element":
				g.enqueueBackbone(sd, e.Path)
				t.Fields = append(t.Fields, genField{JSON: jsonName, Elem: idx, Kind: "kindObject", Type: e.Path})
			default:
				g.enqueue(code)
				t.Fields = append(t.Fields, genField{JSON: jsonName, Elem: idx, Kind: "kindObject", Type: code})
			}
		}
		t.Elems = append(t.Elems, ge)
	}
	sort.Slice(t.Fields, func(i, j int) bool { return t.Fields[i].JSON < t.Fields[j].JSON })
}

func (g *generator) enqueueBackbone(sd *structureDefinition, path string) {
	if _, ok := g.types[path]; ok {
		return
	}
	g.genType(sd, path, sd.Snapshot.Element)
}

func collect(cs []concept, out *[]string) {
	for _, c := range cs {
		*out = append(*out, c.Code)
		collect(c.Concept, out)
	}
}

// expand returns the codes of a value set and whether every code system it uses was
// available (false for external systems such as BCP 13 and ISO 4217).
func (g *generator) expand(url string) ([]string, bool) {
	id := strings.TrimPrefix(url, "http://hl7.org/fhir/ValueSet/")
	var vs valueSet
	if !g.readJSON("ValueSet-"+id+".json", &vs) {
		log.Fatalf("missing ValueSet %s", url)
	}
	var codes []string
	complete := true
	for _, inc := range vs.Compose.Include {
		for _, sub := range inc.ValueSet {
			c, ok := g.expand(sub)
			codes = append(codes, c...)
			complete = complete && ok
		}
		if inc.System == "" {
			continue
		}
		if len(inc.Concept) > 0 {
			collect(inc.Concept, &codes)
			continue
		}
		csID := inc.System[strings.LastIndex(inc.System, "/")+1:]
		var cs codeSystem
		if !strings.HasPrefix(inc.System, "http://") || !g.readJSON("CodeSystem-"+csID+".json", &cs) {
			complete = false
			continue
		}
		collect(cs.Concept, &codes)
	}
	sort.Strings(codes)
	return codes, complete
}

func (g *generator) primitiveRegexes() map[string]string {
	out := map[string]string{}
	for code := range primitiveKinds {
		sd := g.sd(code)
		for _, e := range sd.Snapshot.Element {
			if e.Path != code+".value" {
				continue
			}
			for _, tr := range e.Type {
				for _, x := range tr.Extension {
					if strings.HasSuffix(x.URL, "regex") {
						out[code] = x.ValueString
					}
				}
			}
		}
	}
	return out
}

func (g *generator) render() []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "// Code generated by transform/internal/gen from transform/spec (FHIR R4 4.0.1). DO NOT EDIT.\n\npackage transform\n\n")
	index := map[string]int{}
	for i, n := range g.order {
		index[n] = i
	}
	fmt.Fprintf(&b, "// generatedTypes returns the complex types and backbone elements reachable from\n// Patient and Observation, indexed as the type* constants.\nfunc generatedTypes() []typeDef {\n\treturn []typeDef{\n")
	for _, n := range g.order {
		t := g.types[n]
		fmt.Fprintf(&b, "\t\t{name: %q, resource: %v, fields: []fieldDef{\n", t.Name, t.Resource)
		for _, f := range t.Fields {
			typ := -1
			if f.Kind == "kindObject" {
				typ = index[f.Type]
			}
			fmt.Fprintf(&b, "\t\t\t{json: %q, elem: %d, kind: %s, typ: %d, primExt: %v},\n", f.JSON, f.Elem, f.Kind, typ, f.PrimExt)
		}
		fmt.Fprintf(&b, "\t\t}, elems: []elemDef{\n")
		for _, e := range t.Elems {
			fmt.Fprintf(&b, "\t\t\t{name: %q, min: %d, many: %v, choice: %v, valueSet: %q, targets: %#v, refDefault: %q},\n", e.Name, e.Min, e.Many, e.Choice, e.ValueSet, e.Targets, e.Default)
		}
		fmt.Fprintf(&b, "\t\t}},\n")
	}
	fmt.Fprintf(&b, "\t}\n}\n\n")
	fmt.Fprintf(&b, "// Indexes of generated types used by hand-written code.\nconst (\n")
	for _, n := range []string{"Patient", "Observation", "Element", "HumanName", "Reference", "Extension", "Identifier"} {
		fmt.Fprintf(&b, "\ttype%s = %d\n", n, index[n])
	}
	fmt.Fprintf(&b, ")\n\n")

	var vsNames []string
	for n := range g.valueSet {
		vsNames = append(vsNames, n)
	}
	sort.Strings(vsNames)
	fmt.Fprintf(&b, "// generatedValueSets returns the codes of every required-binding value set; a value set\n// over an external code system (BCP 13, ISO 4217) has external set and only code syntax is checked.\nfunc generatedValueSets() map[string]valueSetDef {\n\treturn map[string]valueSetDef{\n")
	for _, n := range vsNames {
		codes, complete := g.expand(n)
		if !complete {
			fmt.Fprintf(&b, "\t\t%q: {external: true, codes: %#v},\n", n, codes)
			continue
		}
		fmt.Fprintf(&b, "\t\t%q: {codes: %#v},\n", n, codes)
	}
	fmt.Fprintf(&b, "\t}\n}\n\n")

	var cs codeSystem
	if !g.readJSON("CodeSystem-resource-types.json", &cs) {
		log.Fatal("missing CodeSystem-resource-types.json")
	}
	var rt []string
	collect(cs.Concept, &rt)
	sort.Strings(rt)
	fmt.Fprintf(&b, "// generatedResourceTypes returns every R4 resource type name, sorted.\nfunc generatedResourceTypes() []string {\n\treturn %#v\n}\n\n", rt)

	re := g.primitiveRegexes()
	var prims []string
	for p := range re {
		prims = append(prims, p)
	}
	sort.Strings(prims)
	fmt.Fprintf(&b, "// primitiveRegexes returns the regex each R4 primitive publishes; the checkers in\n// primitive.go implement them (plus calendar and range checks) and are tested against them.\nfunc primitiveRegexes() map[string]string {\n\treturn map[string]string{\n")
	for _, p := range prims {
		fmt.Fprintf(&b, "\t\t%q: %q,\n", p, re[p])
	}
	fmt.Fprintf(&b, "\t}\n}\n")
	return b.Bytes()
}
