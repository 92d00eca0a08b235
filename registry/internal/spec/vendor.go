// Package spec reads the FHIR core package for the registry generator: Vendor trims the
// published package (a .tgz) to what the generator reads, and Load turns the trimmed
// file into registry.Contents.
package spec

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"
)

// Vendor reads a FHIR package (gzip tar with package/*.json) and writes the trimmed
// form the generator reads: one resource per line, keys sorted, only the resources and
// the fields the registry uses, gzip-compressed. The output depends only on the input.
//
// Kept: the StructureDefinitions of every resource, datatype, primitive, extension and
// profile (snapshot elements without documentation; differential element ids), the
// SearchParameters and CompartmentDefinitions (examples left out), the ValueSets of
// required bindings (and those they include), and the CodeSystems those include.
func Vendor(pkg io.Reader, out io.Writer) error {
	zr, err := gzip.NewReader(pkg)
	if err != nil {
		return err
	}
	tr := tar.NewReader(zr)
	files := map[string]map[string]any{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		name := path.Base(h.Name)
		if !strings.HasSuffix(name, ".json") || name == "package.json" || strings.HasPrefix(name, ".") {
			continue
		}
		kind, _, _ := strings.Cut(name, "-")
		switch kind {
		case "StructureDefinition", "SearchParameter", "CompartmentDefinition", "ValueSet", "CodeSystem":
		default:
			continue
		}
		raw, err := io.ReadAll(tr)
		if err != nil {
			return err
		}
		d := json.NewDecoder(bytes.NewReader(raw))
		d.UseNumber()
		var m map[string]any
		if err := d.Decode(&m); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		files[name] = m
	}

	keep := map[string]map[string]any{}
	valueSets := map[string]map[string]any{}
	codeSystems := map[string]map[string]any{}
	for _, m := range files {
		switch m["resourceType"] {
		case "ValueSet":
			valueSets[str(m["url"])] = m
		case "CodeSystem":
			codeSystems[str(m["url"])] = m
		}
	}
	required := map[string]bool{}
	for name, m := range files {
		id := str(m["id"])
		switch m["resourceType"] {
		case "StructureDefinition":
			if m["kind"] == "logical" {
				continue
			}
			keep[name] = trimSD(m)
			for _, e := range elems(m, "snapshot") {
				if b, ok := e["binding"].(map[string]any); ok && b["strength"] == "required" && b["valueSet"] != nil {
					url, _, _ := strings.Cut(str(b["valueSet"]), "|")
					required[url] = true
				}
			}
		case "SearchParameter":
			if strings.HasPrefix(id, "example") {
				continue
			}
			keep[name] = pick(m, "resourceType", "id", "url", "name", "code", "base", "type", "expression", "xpathUsage",
				"target", "modifier", "comparator", "multipleOr", "multipleAnd", "chain", "component", "description")
		case "CompartmentDefinition":
			if strings.HasPrefix(id, "example") {
				continue
			}
			keep[name] = pick(m, "resourceType", "id", "url", "code", "resource")
		}
	}
	// Value sets of required bindings, with the value sets and code systems they include.
	var queue []string
	for url := range required {
		queue = append(queue, url)
	}
	slices.Sort(queue)
	seenVS := map[string]bool{}
	neededCS := map[string]bool{}
	for len(queue) > 0 {
		url := queue[0]
		queue = queue[1:]
		if seenVS[url] {
			continue
		}
		seenVS[url] = true
		vs := valueSets[url]
		if vs == nil {
			continue
		}
		for _, part := range []string{"include", "exclude"} {
			compose, _ := vs["compose"].(map[string]any)
			incs, _ := compose[part].([]any)
			for _, inc := range incs {
				im, _ := inc.(map[string]any)
				if s := str(im["system"]); s != "" {
					neededCS[s] = true
				}
				subs, _ := im["valueSet"].([]any)
				for _, sub := range subs {
					u, _, _ := strings.Cut(str(sub), "|")
					queue = append(queue, u)
				}
			}
		}
	}
	for name, m := range files {
		switch m["resourceType"] {
		case "ValueSet":
			if seenVS[str(m["url"])] {
				keep[name] = trimValueSet(m)
			}
		case "CodeSystem":
			if neededCS[str(m["url"])] {
				keep[name] = trimCodeSystem(m)
			}
		}
	}

	names := make([]string, 0, len(keep))
	for n := range keep {
		names = append(names, n)
	}
	slices.Sort(names)
	zw, err := gzip.NewWriterLevel(out, gzip.BestCompression)
	if err != nil {
		return err
	}
	for _, n := range names {
		b, err := json.Marshal(keep[n])
		if err != nil {
			return fmt.Errorf("%s: %w", n, err)
		}
		if _, err := zw.Write(append(b, '\n')); err != nil {
			return err
		}
	}
	return zw.Close()
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

func pick(m map[string]any, keys ...string) map[string]any {
	out := map[string]any{}
	for _, k := range keys {
		if v, ok := m[k]; ok {
			out[k] = v
		}
	}
	return out
}

func elems(m map[string]any, part string) []map[string]any {
	p, _ := m[part].(map[string]any)
	list, _ := p["element"].([]any)
	out := make([]map[string]any, 0, len(list))
	for _, e := range list {
		if em, ok := e.(map[string]any); ok {
			out = append(out, em)
		}
	}
	return out
}

func trimSD(m map[string]any) map[string]any {
	out := pick(m, "resourceType", "id", "url", "name", "kind", "abstract", "type", "baseDefinition", "derivation",
		"context", "contextInvariant")
	var snap []any
	for _, e := range elems(m, "snapshot") {
		te := pick(e, "id", "path", "sliceName", "min", "max", "contentReference", "isModifier", "isSummary",
			"mustSupport", "maxLength", "slicing")
		for k, v := range e {
			if strings.HasPrefix(k, "fixed") || strings.HasPrefix(k, "pattern") {
				te[k] = v
			}
		}
		if b, ok := e["binding"].(map[string]any); ok {
			te["binding"] = pick(b, "strength", "valueSet")
		}
		if cs, ok := e["constraint"].([]any); ok {
			var list []any
			for _, c := range cs {
				if cm, ok := c.(map[string]any); ok {
					list = append(list, pick(cm, "key", "severity", "human", "expression", "source"))
				}
			}
			te["constraint"] = list
		}
		if ts, ok := e["type"].([]any); ok {
			var list []any
			for _, t := range ts {
				tm, ok := t.(map[string]any)
				if !ok {
					continue
				}
				tt := pick(tm, "code", "profile", "targetProfile")
				if xs, ok := tm["extension"].([]any); ok {
					var keepX []any
					for _, x := range xs {
						xm, _ := x.(map[string]any)
						u := str(xm["url"])
						if strings.HasSuffix(u, "/structuredefinition-fhir-type") || strings.HasSuffix(u, "/regex") {
							keepX = append(keepX, xm)
						}
					}
					if keepX != nil {
						tt["extension"] = keepX
					}
				}
				list = append(list, tt)
			}
			te["type"] = list
		}
		snap = append(snap, te)
	}
	out["snapshot"] = map[string]any{"element": snap}
	var diff []any
	for _, e := range elems(m, "differential") {
		diff = append(diff, pick(e, "id"))
	}
	if diff != nil {
		out["differential"] = map[string]any{"element": diff}
	}
	return out
}

func trimValueSet(m map[string]any) map[string]any {
	out := pick(m, "resourceType", "id", "url", "name")
	compose, ok := m["compose"].(map[string]any)
	if !ok {
		return out
	}
	tc := map[string]any{}
	for _, part := range []string{"include", "exclude"} {
		incs, _ := compose[part].([]any)
		var list []any
		for _, inc := range incs {
			im, _ := inc.(map[string]any)
			ti := pick(im, "system", "filter", "valueSet")
			if cs, ok := im["concept"].([]any); ok {
				var codes []any
				for _, c := range cs {
					cm, _ := c.(map[string]any)
					codes = append(codes, pick(cm, "code"))
				}
				ti["concept"] = codes
			}
			list = append(list, ti)
		}
		if list != nil {
			tc[part] = list
		}
	}
	out["compose"] = tc
	return out
}

func trimCodeSystem(m map[string]any) map[string]any {
	out := pick(m, "resourceType", "id", "url", "name", "content", "hierarchyMeaning")
	if cs, ok := m["concept"].([]any); ok {
		out["concept"] = trimConcepts(cs)
	}
	return out
}

func trimConcepts(cs []any) []any {
	var out []any
	for _, c := range cs {
		cm, _ := c.(map[string]any)
		tc := pick(cm, "code")
		if sub, ok := cm["concept"].([]any); ok {
			tc["concept"] = trimConcepts(sub)
		}
		out = append(out, tc)
	}
	return out
}
