package fhirstore

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/fhirload/fhirload/internal/benchkit"
	spec "github.com/fhirload/fhirload/registry"
)

// mixedPopulation generates a GenerateMixed population of the given types
// (every R4 type when nil), with its urn:uuid references rewritten to
// Type/id as the pipeline's transform writes them, and returns its lines.
func mixedPopulation(t testing.TB, o benchkit.MixedOptions) [][]byte {
	t.Helper()
	var buf bytes.Buffer
	if _, err := benchkit.GenerateMixed(&buf, o); err != nil {
		t.Fatal(err)
	}
	lines := bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte("\n"))
	types := map[string]string{}
	for _, l := range lines {
		var h struct{ ResourceType, ID string }
		if err := json.Unmarshal(l, &h); err != nil {
			t.Fatal(err)
		}
		types[h.ID] = h.ResourceType
	}
	ref := regexp.MustCompile(`"reference":"urn:uuid:([0-9a-f-]{36})"`)
	for i, l := range lines {
		lines[i] = ref.ReplaceAllFunc(l, func(m []byte) []byte {
			id := string(ref.FindSubmatch(m)[1])
			return []byte(`"reference":"` + types[id] + "/" + id + `"`)
		})
	}
	return lines
}

// loadLines loads resources through batch Bundles of PUTs and fails on any
// entry that is not 200 or 201.
func loadLines(t testing.TB, e *testEnv, lines [][]byte) {
	t.Helper()
	for chunk := range slices.Chunk(lines, 100) {
		var b bytes.Buffer
		b.WriteString(`{"resourceType":"Bundle","type":"batch","entry":[`)
		for i, r := range chunk {
			var h struct{ ResourceType, ID string }
			if err := json.Unmarshal(r, &h); err != nil {
				t.Fatal(err)
			}
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `{"resource":%s,"request":{"method":"PUT","url":"%s/%s"}}`, r, h.ResourceType, h.ID)
		}
		b.WriteString("]}")
		r := e.do("POST", "", b.Bytes())
		if r.status != 200 {
			t.Fatalf("batch: %d %.500s", r.status, r.body)
		}
		for i, st := range entryStatuses(t, r) {
			if !strings.HasPrefix(st, "20") {
				t.Fatalf("entry %s: %.2000s", st, chunk[i])
			}
		}
	}
}

// simplePath returns the element names of a parameter expression that is
// a plain path of non-choice elements from the type ("Provenance.target"
// → [target]), or nil.
func simplePath(typ, expr string) []string {
	parts := strings.Split(expr, ".")
	if len(parts) < 2 || parts[0] != typ {
		return nil
	}
	rt := spec.R4().Type(typ)
	for i := 1; i < len(parts); i++ {
		if !regexp.MustCompile(`^[a-zA-Z]+$`).MatchString(parts[i]) {
			return nil
		}
		found := false
		for _, el := range rt.Elements {
			if el.Path == strings.Join(parts[:i+1], ".") {
				found = true
			}
		}
		if !found {
			return nil
		}
	}
	return parts[1:]
}

// walk returns the values at path in a decoded JSON resource, arrays
// flattened.
func walk(v any, path []string) []any {
	if len(path) == 0 {
		if arr, ok := v.([]any); ok {
			return arr
		}
		return []any{v}
	}
	switch x := v.(type) {
	case []any:
		var out []any
		for _, e := range x {
			out = append(out, walk(e, path)...)
		}
		return out
	case map[string]any:
		if c, ok := x[path[0]]; ok {
			return walk(c, path[1:])
		}
	}
	return nil
}

// oracleValues are the search values a resource matches for a reference
// or token parameter at path, computed from its JSON alone: reference
// strings (Type/id), and codes of codings, identifiers and code elements.
func oracleValues(res map[string]any, path []string, kind string) []string {
	var out []string
	for _, v := range walk(res, path) {
		switch x := v.(type) {
		case string:
			if kind == "token" {
				out = append(out, x)
			}
		case map[string]any:
			switch kind {
			case "reference":
				if r, ok := x["reference"].(string); ok {
					out = append(out, r)
				}
			case "token":
				if c, ok := x["code"].(string); ok {
					out = append(out, c)
				}
				if c, ok := x["value"].(string); ok { // Identifier
					out = append(out, c)
				}
				for _, cd := range walk(x, []string{"coding"}) {
					if m, ok := cd.(map[string]any); ok {
						if c, ok := m["code"].(string); ok {
							out = append(out, c)
						}
					}
				}
			}
		case bool:
			if kind == "token" {
				out = append(out, fmt.Sprint(x))
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// TestEveryTypeSearchesExactly: a population of every R4 resource type
// (GenerateMixed, with types the shared Synthea data does not have:
// DocumentReference, Provenance, Location, PractitionerRole, …) is loaded,
// and every reference and token parameter whose expression is a plain
// path of its type finds, for each value a resource has, exactly the
// resources whose JSON has that value — counted from the JSON by the test,
// not by the store's FHIRPath.
func TestEveryTypeSearchesExactly(t *testing.T) {
	if testing.Short() {
		t.Skip("loads a population of every type and runs ~2,000 searches")
	}
	e := newEnv(t, Options{Auth: "none", UniqueIdentifiers: []string{}})
	lines := mixedPopulation(t, benchkit.MixedOptions{Patients: 3, PerPatient: 2, Shared: 2, Types: spec.R4().ResourceTypes(), SharedTypes: []string{}, Seed: 7})
	loadLines(t, e, lines)
	// A line that repeats an id (the generator writes each Patient twice
	// when Patient is among the types) replaces the resource: the last wins.
	last := map[string]map[string]any{}
	for _, l := range lines {
		var m map[string]any
		if err := json.Unmarshal(l, &m); err != nil {
			t.Fatal(err)
		}
		last[m["resourceType"].(string)+"/"+m["id"].(string)] = m
	}
	byType := map[string][]map[string]any{}
	for _, m := range last {
		byType[m["resourceType"].(string)] = append(byType[m["resourceType"].(string)], m)
	}
	checked := map[string]int{}
	searches := 0
	for _, typ := range spec.R4().ResourceTypes() {
		tp := searchCatalog().types[typ]
		for _, code := range tp.codes {
			p := tp.byCode[code]
			if !p.supported() || (p.kind != kindRef && p.kind != kindToken) || len(p.parts) != 1 || p.parts[0].target != "" {
				continue
			}
			path := simplePath(typ, p.src)
			if path == nil {
				continue
			}
			want := map[string]int{}
			for _, res := range byType[typ] {
				for _, v := range oracleValues(res, path, p.kind.String()) {
					want[v]++
				}
			}
			values := slices.Sorted(func(yield func(string) bool) {
				for v := range want {
					if !yield(v) {
						return
					}
				}
			})
			if n := 3; len(values) > n || raceEnabled && len(values) > 1 {
				if raceEnabled {
					n = 1 // a third of the searches under -race (see raceEnabled)
				}
				values = values[:min(n, len(values))]
			}
			for _, v := range values {
				q := typ + "?" + url.QueryEscape(code) + "=" + url.QueryEscape(strings.ReplaceAll(v, ",", `\,`)) + "&_summary=count"
				r := e.do("GET", q, nil)
				searches++
				if r.status != 200 {
					t.Errorf("%s: %d %s", q, r.status, r.body)
					continue
				}
				if got := int(r.json(t)["total"].(float64)); got != want[v] {
					t.Errorf("%s: total %d, the JSON says %d", q, got, want[v])
				}
				checked[p.kind.String()]++
			}
		}
	}
	t.Logf("%d searches over %d types: %v", searches, len(byType), checked)
	for _, want := range []string{"DocumentReference", "Provenance", "Location", "PractitionerRole"} {
		if len(byType[want]) == 0 {
			t.Errorf("the population has no %s", want)
		}
	}
	if least := map[bool]int{false: 200, true: 70}[raceEnabled]; checked["reference"] < least || checked["token"] < least {
		t.Errorf("too few searches checked: %v", checked)
	}
}

// TestMixedTypeParameters: searches of the types the shared Synthea data
// does not have, by parameters of each kind, on a GenerateMixed
// population: references (with and without the type, chained through the
// target), tokens, dates and strings.
func TestMixedTypeParameters(t *testing.T) {
	e := newEnv(t, Options{Auth: "none", UniqueIdentifiers: []string{}})
	lines := mixedPopulation(t, benchkit.MixedOptions{Patients: 4, PerPatient: 2, Shared: 3, Seed: 3})
	loadLines(t, e, lines)
	var docs, provs, roles, locs []map[string]any
	for _, l := range lines {
		var m map[string]any
		if err := json.Unmarshal(l, &m); err != nil {
			t.Fatal(err)
		}
		switch m["resourceType"] {
		case "DocumentReference":
			docs = append(docs, m)
		case "Provenance":
			provs = append(provs, m)
		case "PractitionerRole":
			roles = append(roles, m)
		case "Location":
			locs = append(locs, m)
		}
	}
	count := func(q string) int {
		t.Helper()
		r := e.do("GET", q+"&_summary=count", nil)
		mustStatus(t, r, 200, q)
		return int(r.json(t)["total"].(float64))
	}
	// DocumentReference.subject: by reference, by bare id, by type modifier.
	subjects := map[string]int{}
	for _, d := range docs {
		for _, v := range oracleValues(d, []string{"subject"}, "reference") {
			subjects[v]++
		}
	}
	if len(subjects) == 0 {
		t.Fatal("no DocumentReference has a subject")
	}
	for ref, n := range subjects {
		typ, id, _ := strings.Cut(ref, "/")
		for _, q := range []string{"DocumentReference?subject=" + ref, "DocumentReference?subject=" + id, "DocumentReference?subject:" + typ + "=" + id} {
			if got := count(q); got != n {
				t.Errorf("%s: %d, want %d", q, got, n)
			}
		}
	}
	// DocumentReference.status is a required code: its system is known.
	status := map[string]int{}
	for _, d := range docs {
		status[d["status"].(string)]++
	}
	for s, n := range status {
		if got := count("DocumentReference?status=http://hl7.org/fhir/document-reference-status|" + s); got != n {
			t.Errorf("status %s: %d, want %d", s, got, n)
		}
	}
	// Provenance.target points at resources of many types; recorded is a date.
	for _, p := range provs {
		for _, ref := range oracleValues(p, []string{"target"}, "reference") {
			n := 0
			for _, q := range provs {
				if slices.Contains(oracleValues(q, []string{"target"}, "reference"), ref) {
					n++
				}
			}
			if got := count("Provenance?target=" + ref); got != n {
				t.Errorf("Provenance?target=%s: %d, want %d", ref, got, n)
			}
		}
		rec := p["recorded"].(string)
		if got := count("Provenance?recorded=" + url.QueryEscape(rec)); got < 1 {
			t.Errorf("Provenance?recorded=%s finds nothing", rec)
		}
	}
	if got := count("Provenance?recorded=lt1900"); got != 0 {
		t.Errorf("Provenance?recorded=lt1900: %d", got)
	}
	// PractitionerRole.practitioner, and a chain through it.
	for _, r := range roles {
		for _, ref := range oracleValues(r, []string{"practitioner"}, "reference") {
			n := 0
			for _, q := range roles {
				if slices.Contains(oracleValues(q, []string{"practitioner"}, "reference"), ref) {
					n++
				}
			}
			if got := count("PractitionerRole?practitioner=" + ref); got != n {
				t.Errorf("PractitionerRole?practitioner=%s: %d, want %d", ref, got, n)
			}
			_, id, _ := strings.Cut(ref, "/")
			if got := count("PractitionerRole?practitioner._id=" + id); got != n {
				t.Errorf("PractitionerRole?practitioner._id=%s: %d, want %d", id, got, n)
			}
		}
	}
	// Location.name (string: prefix, case-insensitive; :exact; :missing).
	named := 0
	for _, l := range locs {
		if _, ok := l["name"]; ok {
			named++
		}
	}
	if len(locs) == 0 || named == 0 {
		t.Fatalf("%d Locations, %d named", len(locs), named)
	}
	for q, want := range map[string]int{
		"Location?name=GENERATED": named, "Location?name:exact=generated%20text": named, "Location?name:exact=GENERATED%20text": 0,
		"Location?name:contains=ted%20te": named, "Location?name:missing=true": len(locs) - named, "Location?name:missing=false": named,
	} {
		if got := count(q); got != want {
			t.Errorf("%s: %d, want %d", q, got, want)
		}
	}
}
