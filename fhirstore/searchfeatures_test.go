package fhirstore

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

// searchWorld is a small population for the search-result features: two
// Patients of one Organization, a Practitioner, an Encounter and five
// Observations.
func searchWorld(t *testing.T) *testEnv {
	t.Helper()
	clock := &fakeClock{t: time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)}
	e := newEnv(t, Options{now: clock.now})
	obs := func(id, subject, code, date string, value float64, status, extra string) string {
		b, _ := json.Marshal(value)
		return `{"resourceType":"Observation","id":"` + id + `","status":"` + status + `","code":{"coding":[{"system":"http://loinc.org","code":"` + code +
			`"}],"text":"` + map[string]string{"8867-4": "Heart rate", "29463-7": "Body weight"}[code] + `"},"subject":{"reference":"Patient/` + subject +
			`"},"effectiveDateTime":"` + date + `","valueQuantity":{"value":` + string(b) + `,"system":"http://unitsofmeasure.org","code":"kg"}` + extra + `}`
	}
	for _, r := range []struct{ path, body string }{
		{"Organization/org1", `{"resourceType":"Organization","id":"org1","name":"General"}`},
		{"Practitioner/dr1", `{"resourceType":"Practitioner","id":"dr1","name":[{"family":"Who"}],"meta":{"profile":["http://example.org/StructureDefinition/doc"],` +
			`"security":[{"system":"http://terminology.hl7.org/CodeSystem/v3-Confidentiality","code":"R"}]},"text":{"status":"generated","div":"<div xmlns=\"http://www.w3.org/1999/xhtml\">Dr Who</div>"}}`},
		{"Patient/pa", `{"resourceType":"Patient","id":"pa","name":[{"family":"Alpha","given":["A"]}],"gender":"female","managingOrganization":{"reference":"Organization/org1"}}`},
		{"Patient/pb", `{"resourceType":"Patient","id":"pb","name":[{"family":"Beta","given":["B"]}],"gender":"male","managingOrganization":{"reference":"Organization/org1"},"meta":{"tag":[{"system":"urn:t","code":"vip"}]}}`},
		{"Encounter/en1", `{"resourceType":"Encounter","id":"en1","status":"finished","class":{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"AMB"},"subject":{"reference":"Patient/pa"}}`},
		{"Observation/o1", obs("o1", "pa", "29463-7", "2020-01-01", 70, "final", `,"encounter":{"reference":"Encounter/en1"},"performer":[{"reference":"Practitioner/dr1"}]`)},
		{"Observation/o2", obs("o2", "pa", "29463-7", "2021-06-01", 72.5, "final", `,"note":[{"text":"after lunch"}]`)},
		{"Observation/o3", obs("o3", "pa", "8867-4", "2019-11-20", 60, "amended", "")},
		{"Observation/o4", obs("o4", "pb", "29463-7", "2015-05-05", 90, "final", "")},
		{"Observation/o5", obs("o5", "pb", "8867-4", "2021-06-01", 80, "preliminary", `,"performer":[{"reference":"Practitioner/dr1"}]`)},
	} {
		mustStatus(t, e.do("PUT", r.path, []byte(r.body)), http.StatusCreated, r.path)
		clock.advance(time.Second)
	}
	return e
}

// searchBundle is the part of a searchset the tests read.
type searchBundle struct {
	Total *int `json:"total"`
	Link  []struct{ Relation, URL string }
	Entry []struct {
		Resource map[string]any
		Search   struct{ Mode string }
	}
}

func (b searchBundle) link(rel string) string {
	for _, l := range b.Link {
		if l.Relation == rel {
			return l.URL
		}
	}
	return ""
}

// ids lists the entries as Type/id, the included ones with a + prefix.
func (b searchBundle) ids() []string {
	var out []string
	for _, en := range b.Entry {
		s := en.Resource["resourceType"].(string) + "/" + en.Resource["id"].(string)
		if en.Search.Mode == "include" {
			s = "+" + s
		}
		out = append(out, s)
	}
	return out
}

func searchOf(t *testing.T, e *testEnv, query string, opts ...reqOpt) searchBundle {
	t.Helper()
	r := e.do("GET", query, nil, opts...)
	mustStatus(t, r, http.StatusOK, query)
	var b searchBundle
	if err := json.Unmarshal(r.body, &b); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return b
}

func TestSearchResultFeatures(t *testing.T) {
	e := searchWorld(t)
	for _, c := range []struct {
		query string
		want  []string // in order when the query sorts, as a set otherwise
	}{
		// _sort: several keys, - for descending, any indexed parameter.
		{"Observation?_sort=date", []string{"Observation/o4", "Observation/o3", "Observation/o1", "Observation/o2", "Observation/o5"}},
		{"Observation?_sort=-date,_id", []string{"Observation/o2", "Observation/o5", "Observation/o1", "Observation/o3", "Observation/o4"}},
		{"Observation?_sort=-date,-_id", []string{"Observation/o5", "Observation/o2", "Observation/o1", "Observation/o3", "Observation/o4"}},
		{"Observation?_sort=code,-value-quantity", []string{"Observation/o4", "Observation/o2", "Observation/o1", "Observation/o5", "Observation/o3"}},
		{"Observation?_sort=status,date", []string{"Observation/o3", "Observation/o4", "Observation/o1", "Observation/o2", "Observation/o5"}},
		{"Patient?_sort=-family", []string{"Patient/pb", "Patient/pa"}},
		// _include and _revinclude, :iterate.
		{"Observation?subject=Patient/pa&_sort=date&_include=Observation:subject", []string{"Observation/o3", "Observation/o1", "Observation/o2", "+Patient/pa"}},
		{"Observation?_id=o1&_include=Observation:*", []string{"Observation/o1", "+Patient/pa", "+Encounter/en1", "+Practitioner/dr1"}},
		{"Observation?_id=o1&_include=Observation:performer:Practitioner", []string{"Observation/o1", "+Practitioner/dr1"}},
		{"Observation?_id=o4&_include=Observation:subject&_include:iterate=Patient:organization", []string{"Observation/o4", "+Patient/pb", "+Organization/org1"}},
		{"Observation?_id=o4&_include=Observation:subject&_include=Patient:organization", []string{"Observation/o4", "+Patient/pb"}},
		{"Patient?_id=pb&_revinclude=Observation:subject", []string{"Patient/pb", "+Observation/o4", "+Observation/o5"}},
		{"Organization?_revinclude=Patient:organization&_revinclude:iterate=Observation:patient&_id=org1",
			[]string{"Organization/org1", "+Patient/pa", "+Patient/pb", "+Observation/o1", "+Observation/o2", "+Observation/o3", "+Observation/o4", "+Observation/o5"}},
		// Observation's parameters the issue names.
		{"Observation?status=final", []string{"Observation/o1", "Observation/o2", "Observation/o4"}},
		{"Observation?status:not=final", []string{"Observation/o3", "Observation/o5"}},
		{"Observation?value-quantity=gt71|http://unitsofmeasure.org|kg", []string{"Observation/o2", "Observation/o4", "Observation/o5"}},
		{"Observation?value-quantity=70", []string{"Observation/o1"}},
		{"Observation?encounter=Encounter/en1", []string{"Observation/o1"}},
		{"Observation?encounter:missing=true&subject=pa", []string{"Observation/o2", "Observation/o3"}},
		{"Observation?performer:missing=false", []string{"Observation/o1", "Observation/o5"}},
		{"Observation?code:text=heart", []string{"Observation/o3", "Observation/o5"}},
		// Chains, _has, _tag.
		{"Observation?subject:Patient.family=Beta", []string{"Observation/o4", "Observation/o5"}},
		{"Observation?patient.organization.name=General&code=8867-4", []string{"Observation/o3", "Observation/o5"}},
		{"Patient?_has:Observation:subject:code=8867-4&_has:Observation:subject:status=preliminary", []string{"Patient/pb"}},
		{"Patient?_has:Observation:patient:_has:Observation:patient:status=amended", nil},
		{"Patient?_tag=urn:t|vip", []string{"Patient/pb"}},
		{"Patient?_tag:not=urn:t|vip", []string{"Patient/pa"}},
		{"Practitioner?_profile=http://example.org/StructureDefinition/doc", []string{"Practitioner/dr1"}},
		{"Practitioner?_security=http://terminology.hl7.org/CodeSystem/v3-Confidentiality|R", []string{"Practitioner/dr1"}},
		{"Practitioner?_security:missing=true", nil},
		// date=ap: 2020-01-01 is 6 years before the clock (2026-03-01); the
		// margin is 10% of that, about 7 months either side.
		{"Observation?date=ap2020-01-01", []string{"Observation/o1", "Observation/o3"}},
		{"Observation?date=ap2021-05", []string{"Observation/o2", "Observation/o5"}},
		{"Observation?date=eq2020-01", []string{"Observation/o1"}},
	} {
		t.Run(c.query, func(t *testing.T) {
			got := searchOf(t, e, c.query).ids()
			want := slices.Clone(c.want)
			if !strings.Contains(c.query, "_sort") {
				slices.Sort(got)
				slices.Sort(want)
			} else if i := slices.IndexFunc(want, func(s string) bool { return s[0] == '+' }); i >= 0 {
				// The included part of a sorted page is a set.
				slices.Sort(got[min(i, len(got)):])
				slices.Sort(want[i:])
			}
			if !slices.Equal(got, want) {
				t.Errorf("got  %v\nwant %v", got, want)
			}
		})
	}
}

func TestSearchTotalSummaryElements(t *testing.T) {
	e := searchWorld(t)
	if b := searchOf(t, e, "Observation?_total=none"); b.Total != nil {
		t.Errorf("_total=none: total %d", *b.Total)
	}
	for _, q := range []string{"Observation?_total=accurate", "Observation?_total=estimate", "Observation"} {
		if b := searchOf(t, e, q); b.Total == nil || *b.Total != 5 {
			t.Errorf("%s: total %v, want 5", q, b.Total)
		}
	}
	if b := searchOf(t, e, "Observation?_summary=count&status=final"); b.Total == nil || *b.Total != 3 || len(b.Entry) != 0 {
		t.Errorf("_summary=count: total %v, %d entries", b.Total, len(b.Entry))
	}
	// _summary=true keeps the summary elements (Observation.note is not
	// one, code and value are) and marks the resource SUBSETTED.
	res := searchOf(t, e, "Observation?_id=o2&_summary=true").Entry[0].Resource
	if res["note"] != nil || res["code"] == nil || res["valueQuantity"] == nil || !subsetted(res) {
		t.Errorf("_summary=true: %v", res)
	}
	res = searchOf(t, e, "Observation?_id=o2&_summary=data").Entry[0].Resource
	if res["note"] == nil || res["text"] != nil || !subsetted(res) {
		t.Errorf("_summary=data: %v", res)
	}
	if res = searchOf(t, e, "Observation?_id=o2").Entry[0].Resource; res["note"] == nil || subsetted(res) {
		t.Errorf("no _summary: %v", res)
	}
	// _summary=text keeps text, id, meta and the mandatory elements.
	res = searchOf(t, e, "Practitioner?_id=dr1&_summary=text").Entry[0].Resource
	if res["text"] == nil || res["name"] != nil || !subsetted(res) {
		t.Errorf("_summary=text: %v", res)
	}
	// _elements keeps those named, and the mandatory ones (code).
	res = searchOf(t, e, "Observation?_id=o1&_elements=status,subject").Entry[0].Resource
	if res["status"] != "final" || res["subject"] == nil || res["code"] == nil || res["valueQuantity"] != nil ||
		res["effectiveDateTime"] != nil || !subsetted(res) {
		t.Errorf("_elements: %v", res)
	}
	// A read takes them too.
	r := e.do("GET", "Observation/o1?_elements=status", nil)
	mustStatus(t, r, http.StatusOK, "read _elements")
	if m := r.json(t); m["status"] != "final" || m["subject"] != nil || !subsetted(m) {
		t.Errorf("read _elements: %s", r.body)
	}
	for _, q := range []string{"Observation?_summary=maybe", "Observation?_elements=nosuch", "Observation?_total=some", "Observation?_sort=nosuch", "Observation?_include=Observation:nosuch"} {
		r := e.do("GET", q, nil)
		mustStatus(t, r, http.StatusBadRequest, q)
	}
}

func subsetted(res map[string]any) bool {
	meta, _ := res["meta"].(map[string]any)
	tags, _ := meta["tag"].([]any)
	for _, t := range tags {
		if t.(map[string]any)["code"] == "SUBSETTED" {
			return true
		}
	}
	return false
}

// TestSearchPaging walks next links forward and previous links back, in
// insertion order and sorted, and finds every match exactly once.
func TestSearchPaging(t *testing.T) {
	e := searchWorld(t)
	for _, q := range []string{"Observation?_count=2", "Observation?_count=2&_sort=-date,_id"} {
		t.Run(q, func(t *testing.T) {
			var pages [][]string
			b := searchOf(t, e, q)
			for {
				pages = append(pages, b.ids())
				next := b.link("next")
				if next == "" {
					break
				}
				if len(pages) > 5 {
					t.Fatal("paging does not end")
				}
				b = searchOf(t, e, next)
			}
			var all []string
			for _, p := range pages {
				all = append(all, p...)
			}
			if len(pages) != 3 || len(all) != 5 || len(slices.Compact(slices.Sorted(slices.Values(all)))) != 5 {
				t.Fatalf("pages %v", pages)
			}
			// Back from the last page.
			for i := len(pages) - 2; i >= 0; i-- {
				prev := b.link("previous")
				if prev == "" {
					t.Fatalf("page %d has no previous link", i+1)
				}
				b = searchOf(t, e, prev)
				if !slices.Equal(b.ids(), pages[i]) {
					t.Errorf("previous of page %d: %v, want %v", i+1, b.ids(), pages[i])
				}
			}
			if b.link("previous") != "" {
				t.Errorf("first page has a previous link")
			}
			// The links keep the search's parameters.
			u, _ := url.Parse(searchOf(t, e, q).link("next"))
			if u.Query().Get("_count") != "2" {
				t.Errorf("next link lost _count: %s", u)
			}
		})
	}
}

// TestFirstSorted: the window selection returns what a full sort does.
func TestFirstSorted(t *testing.T) {
	cs := make([]candidate, 1000)
	for i := range cs {
		cs[i] = candidate{rid: int64(i + 1), sortBy: []any{int64((i * 7919) % 97)}}
	}
	cmpc := func(x, y *candidate) int {
		if c := compareSort(x.sortBy[0], y.sortBy[0], true); c != 0 {
			return c
		}
		return int(x.rid - y.rid)
	}
	want := slices.Clone(cs)
	slices.SortFunc(want, func(x, y candidate) int { return cmpc(&x, &y) })
	for _, n := range []int{0, 1, 20, 100, 125, 126, 999, 1000} {
		got := firstSorted(slices.Clone(cs), n, cmpc)
		if len(got) != n {
			t.Fatalf("n=%d: %d", n, len(got))
		}
		for i := range got {
			if got[i].rid != want[i].rid {
				t.Fatalf("n=%d: position %d is rid %d, want %d", n, i, got[i].rid, want[i].rid)
			}
		}
	}
}

// TestDecodeRowsOf: decoding the rows of some keys gives what decoding
// every row and keeping those does, for rows of every value kind.
func TestDecodeRowsOf(t *testing.T) {
	p, e := parseResource([]byte(`{"resourceType":"Observation","id":"o1","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"1-1"}],"text":"x"},`+
		`"subject":{"reference":"Patient/p1"},"effectiveDateTime":"2020-01-01","valueQuantity":{"value":5.4,"system":"http://unitsofmeasure.org","code":"kg"}}`), true)
	if e != nil {
		t.Fatal(e)
	}
	b := encodeRows(p.rows)
	all := decodeRows(b)
	if len(all) != len(p.rows) || len(all) < 5 {
		t.Fatalf("%d rows decoded of %d", len(all), len(p.rows))
	}
	for _, r := range all {
		only := []int64{r.k}
		want := slices.DeleteFunc(slices.Clone(all), func(x keyRow) bool { return x.k != r.k })
		if got := decodeRowsOf(b, only); !slices.Equal(got, want) {
			t.Errorf("key %d: %v, want %v", r.k, got, want)
		}
	}
	if got := decodeRowsOf(b, []int64{-1}); len(got) != 0 {
		t.Errorf("absent key: %v", got)
	}
}
