package fhirstore

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fhirload/fhirload/internal/testlines"
)

// sampleDir holds the shared Synthea sample: 100 Patients, 16,315 Observations.
const sampleDir = "../testdata/sample"

// readNDJSON returns the lines of a gzipped NDJSON file of the sample.
func readNDJSON(tb testing.TB, name string) [][]byte {
	tb.Helper()
	return testlines.All(tb, filepath.Join(sampleDir, name))
}

// batchOfPuts wraps resources into a batch Bundle of PUT entries.
func batchOfPuts(tb testing.TB, typ string, resources [][]byte) []byte {
	tb.Helper()
	var b bytes.Buffer
	b.WriteString(`{"resourceType":"Bundle","type":"batch","entry":[`)
	for i, r := range resources {
		var head struct{ ID string }
		if err := json.Unmarshal(r, &head); err != nil {
			tb.Fatal(err)
		}
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"resource":%s,"request":{"method":"PUT","url":"%s/%s"}}`, r, typ, head.ID)
	}
	b.WriteString("]}")
	return b.Bytes()
}

// entryStatuses returns the response.status of every entry of a response Bundle.
func entryStatuses(t testing.TB, r *resp) []string {
	t.Helper()
	var b struct {
		Entry []struct {
			Response struct {
				Status string `json:"status"`
			} `json:"response"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(r.body, &b); err != nil {
		t.Fatalf("bad Bundle: %v", err)
	}
	out := make([]string, len(b.Entry))
	for i, e := range b.Entry {
		out[i] = e.Response.Status
	}
	return out
}

// loadSample loads the sample through batch Bundles of 100 PUT entries,
// with Observation subjects rewritten from urn:uuid to Patient/{id} as the
// pipeline's transform does, and returns the Observations as loaded. Under
// the race detector it loads the first 20 Patients and their Observations
// only (see raceEnabled).
func loadSample(t *testing.T, e *testEnv) (patients, observations [][]byte) {
	t.Helper()
	patients = readNDJSON(t, "Patient.ndjson.gz")
	observations = readNDJSON(t, "Observation.ndjson.gz")
	for i, o := range observations {
		observations[i] = bytes.Replace(o, []byte(`"subject":{"reference":"urn:uuid:`), []byte(`"subject":{"reference":"Patient/`), 1)
	}
	if raceEnabled {
		patients = patients[:20]
		keep := map[string]bool{}
		for _, p := range patients {
			var h struct{ ID string }
			if err := json.Unmarshal(p, &h); err != nil {
				t.Fatal(err)
			}
			keep[`"subject":{"reference":"Patient/`+h.ID+`"`] = true
		}
		observations = slices.DeleteFunc(observations, func(o []byte) bool {
			for k := range keep {
				if bytes.Contains(o, []byte(k)) {
					return false
				}
			}
			return true
		})
	}
	for _, set := range []struct {
		typ string
		res [][]byte
	}{{"Patient", patients}, {"Observation", observations}} {
		// Two clients, like a loader would, to use both cores.
		chunks := slices.Collect(slices.Chunk(set.res, 100))
		var wg sync.WaitGroup
		for w := range 2 {
			wg.Go(func() {
				for i := w; i < len(chunks); i += 2 {
					r := e.do("POST", "", batchOfPuts(t, set.typ, chunks[i]))
					if r.status != http.StatusOK {
						t.Errorf("batch: status %d: %.300s", r.status, r.body)
						return
					}
					for j, s := range entryStatuses(t, r) {
						if s != "201 Created" {
							t.Errorf("%s entry %d: status %q", set.typ, j, s)
							return
						}
					}
				}
			})
		}
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}
	}
	return patients, observations
}

// sampleObs is what the test reads from an Observation, independently of
// the server's indexing code.
type sampleObs struct {
	ID       string
	Patient  string
	Codes    []string // system|code
	Category []string // code
	When     time.Time
}

func parseSampleObs(t testing.TB, lines [][]byte) []sampleObs {
	t.Helper()
	out := make([]sampleObs, len(lines))
	for i, l := range lines {
		var o struct {
			ID      string `json:"id"`
			Subject struct {
				Reference string `json:"reference"`
			} `json:"subject"`
			Code     codeableConcept   `json:"code"`
			Category []codeableConcept `json:"category"`
			When     string            `json:"effectiveDateTime"`
		}
		if err := json.Unmarshal(l, &o); err != nil {
			t.Fatal(err)
		}
		w, err := time.Parse(time.RFC3339, o.When)
		if err != nil {
			t.Fatalf("effectiveDateTime %d: %v", i, err)
		}
		s := sampleObs{ID: o.ID, Patient: strings.TrimPrefix(o.Subject.Reference, "Patient/"), When: w}
		for _, c := range o.Code.Coding {
			s.Codes = append(s.Codes, c.System+"|"+c.Code)
		}
		for _, cat := range o.Category {
			for _, c := range cat.Coding {
				s.Category = append(s.Category, c.Code)
			}
		}
		out[i] = s
	}
	return out
}

// searchAll pages through a search by its next links and returns the ids of
// all entries, failing on a duplicate or a total that disagrees.
func searchAll(t *testing.T, e *testEnv, query string) []string {
	t.Helper()
	next := e.base + query
	var ids []string
	seen := map[string]bool{}
	total := -1.0
	for pages := 0; next != ""; pages++ {
		if pages > 1000 {
			t.Fatal("too many pages")
		}
		r := e.do("GET", next, nil)
		mustStatus(t, r, http.StatusOK, query)
		var b struct {
			Type  string  `json:"type"`
			Total float64 `json:"total"`
			Link  []struct{ Relation, URL string }
			Entry []struct {
				Resource struct{ ID string }
			}
		}
		if err := json.Unmarshal(r.body, &b); err != nil {
			t.Fatal(err)
		}
		if b.Type != "searchset" {
			t.Fatalf("type %q", b.Type)
		}
		if total >= 0 && b.Total != total {
			t.Fatalf("%s: total changed between pages: %v then %v", query, total, b.Total)
		}
		total = b.Total
		next = ""
		for _, l := range b.Link {
			if l.Relation == "next" {
				next = l.URL
			}
		}
		for _, en := range b.Entry {
			if seen[en.Resource.ID] {
				t.Fatalf("%s: %s returned twice", query, en.Resource.ID)
			}
			seen[en.Resource.ID] = true
			ids = append(ids, en.Resource.ID)
		}
	}
	if float64(len(ids)) != total {
		t.Fatalf("%s: paged through %d entries, total says %v", query, len(ids), total)
	}
	return ids
}

func searchCount(t *testing.T, e *testEnv, query string) int {
	t.Helper()
	sep := "?"
	if strings.Contains(query, "?") {
		sep = "&"
	}
	r := e.do("GET", query+sep+"_summary=count", nil)
	mustStatus(t, r, http.StatusOK, query)
	m := r.json(t)
	if _, ok := m["entry"]; ok {
		t.Errorf("%s: _summary=count returned entries", query)
	}
	return int(m["total"].(float64))
}

func TestSearchAgainstSynthea(t *testing.T) {
	e := newEnv(t, Options{})
	patients, obsLines := loadSample(t, e)
	obs := parseSampleObs(t, obsLines)
	if !raceEnabled && (len(patients) != 100 || len(obs) != 16315) || raceEnabled && (len(patients) != 20 || len(obs) < 1000) {
		t.Fatalf("sample has %d patients, %d observations", len(patients), len(obs))
	}
	count := func(pred func(o sampleObs) bool) int {
		n := 0
		for _, o := range obs {
			if pred(o) {
				n++
			}
		}
		return n
	}
	ids := func(pred func(o sampleObs) bool) []string {
		var out []string
		for _, o := range obs {
			if pred(o) {
				out = append(out, o.ID)
			}
		}
		slices.Sort(out)
		return out
	}
	q := url.QueryEscape

	if got := searchCount(t, e, "Observation"); got != len(obs) {
		t.Errorf("all observations: %d, want %d", got, len(obs))
	}

	// Counts by patient, for every patient, with both reference forms.
	byPatient := map[string]int{}
	for _, o := range obs {
		byPatient[o.Patient]++
	}
	for p, want := range byPatient {
		if got := searchCount(t, e, "Observation?patient="+p); got != want {
			t.Errorf("patient=%s: %d, want %d", p, got, want)
		}
	}
	for p, want := range byPatient {
		if got := searchCount(t, e, "Observation?subject=Patient/"+p); got != want {
			t.Errorf("subject=Patient/%s: %d, want %d", p, got, want)
		}
		break
	}

	// Counts by code (system|code), for every code; code alone and system| too.
	byCode := map[string]int{}
	systems := map[string]int{}
	for _, o := range obs {
		for _, c := range o.Codes {
			byCode[c]++
		}
		seen := map[string]bool{}
		for _, c := range o.Codes {
			s, _, _ := strings.Cut(c, "|")
			if !seen[s] {
				systems[s]++
				seen[s] = true
			}
		}
	}
	for c, want := range byCode {
		if got := searchCount(t, e, "Observation?code="+q(c)); got != want {
			t.Errorf("code=%s: %d, want %d", c, got, want)
		}
	}
	for s, want := range systems {
		if got := searchCount(t, e, "Observation?code="+q(s+"|")); got != want {
			t.Errorf("code=%s|: %d, want %d", s, got, want)
		}
	}
	if got, want := searchCount(t, e, "Observation?code=8302-2"), byCode["http://loinc.org|8302-2"]; got != want {
		t.Errorf("code=8302-2: %d, want %d", got, want)
	}
	// Two codes ORed.
	if got, want := searchCount(t, e, "Observation?code="+q("http://loinc.org|8302-2,http://loinc.org|72514-3")),
		byCode["http://loinc.org|8302-2"]+byCode["http://loinc.org|72514-3"]; got != want {
		t.Errorf("two codes: %d, want %d", got, want)
	}

	// Category.
	byCat := map[string]int{}
	for _, o := range obs {
		for _, c := range o.Category {
			byCat[c]++
		}
	}
	for c, want := range byCat {
		if got := searchCount(t, e, "Observation?category="+q(c)); got != want {
			t.Errorf("category=%s: %d, want %d", c, got, want)
		}
	}

	// Date prefixes and ranges; the test's own reading of the instants, in UTC.
	day := func(s string) time.Time { t0, _ := time.Parse("2006-01-02", s); return t0 }
	y2015, y2016 := day("2015-01-01"), day("2016-01-01")
	d := day("2011-02-02")
	for _, c := range []struct {
		query string
		pred  func(time.Time) bool
	}{
		{"date=ge2015-01-01", func(w time.Time) bool { return !w.Before(y2015) }},
		{"date=lt2015-01-01", func(w time.Time) bool { return w.Before(y2015) }},
		{"date=gt2015", func(w time.Time) bool { return !w.Before(y2016) }},
		{"date=le2015", func(w time.Time) bool { return w.Before(y2016) }},
		{"date=2015", func(w time.Time) bool { return !w.Before(y2015) && w.Before(y2016) }},
		{"date=eq2015-06", func(w time.Time) bool { return !w.Before(day("2015-06-01")) && w.Before(day("2015-07-01")) }},
		{"date=ne2015", func(w time.Time) bool { return w.Before(y2015) || !w.Before(y2016) }},
		{"date=ge2015-01-01&date=lt2016-01-01", func(w time.Time) bool { return !w.Before(y2015) && w.Before(y2016) }},
		{"date=2011-02-02", func(w time.Time) bool { return !w.UTC().Before(d) && w.UTC().Before(d.AddDate(0, 0, 1)) }},
		{"date=ge2011-02-02T21:30:49Z&date=le2011-02-02T21:30:49Z", func(w time.Time) bool {
			return w.Equal(day("2011-02-02").Add(21*time.Hour + 30*time.Minute + 49*time.Second))
		}},
		{"date=lt2011-02-02T16:30:49-05:00", func(w time.Time) bool { return w.Before(time.Date(2011, 2, 2, 21, 30, 49, 0, time.UTC)) }},
	} {
		want := count(func(o sampleObs) bool { return c.pred(o.When) })
		if got := searchCount(t, e, "Observation?"+strings.ReplaceAll(c.query, "+", "%2B")); got != want {
			t.Errorf("%s: %d, want %d", c.query, got, want)
		}
	}

	// Patient + code + date range, and paging through every result.
	var somePatient string
	for p, n := range byPatient {
		if n > 150 {
			somePatient = p
			break
		}
	}
	wantIDs := ids(func(o sampleObs) bool {
		return o.Patient == somePatient && slices.Contains(o.Codes, "http://loinc.org|8302-2")
	})
	if len(wantIDs) == 0 {
		t.Fatal("test data lacks the code for the patient")
	}
	got := searchAll(t, e, "Observation?patient="+somePatient+"&code="+q("http://loinc.org|8302-2")+"&_count=2")
	slices.Sort(got)
	if !slices.Equal(got, wantIDs) {
		t.Errorf("patient+code paged: %d ids, want %d", len(got), len(wantIDs))
	}
	got = searchAll(t, e, "Observation?patient="+somePatient+"&date=ge2015&_count=17")
	slices.Sort(got)
	if want := ids(func(o sampleObs) bool { return o.Patient == somePatient && !o.When.Before(y2015) }); !slices.Equal(got, want) {
		t.Errorf("patient+date paged: %d ids, want %d", len(got), len(want))
	}
	// A larger result set, paged 100 at a time: the smallest category with
	// more than two pages.
	cat := ""
	for c, n := range byCat {
		if n > 200 && (cat == "" || n < byCat[cat]) {
			cat = c
		}
	}
	got = searchAll(t, e, "Observation?category="+q(cat))
	if len(got) != byCat[cat] {
		t.Errorf("category=%s paged: %d, want %d", cat, len(got), byCat[cat])
	}

	// Patients.
	type pat struct {
		ID         string
		Gender     string
		BirthDate  string
		Name       []humanName
		Identifier []identifier
	}
	var pats []pat
	for _, l := range patients {
		var p pat
		if err := json.Unmarshal(l, &p); err != nil {
			t.Fatal(err)
		}
		pats = append(pats, p)
	}
	pcount := func(pred func(p pat) bool) int {
		n := 0
		for _, p := range pats {
			if pred(p) {
				n++
			}
		}
		return n
	}
	first := pats[0]
	family := first.Name[0].Family
	for _, c := range []struct {
		query string
		pred  func(p pat) bool
	}{
		{"gender=female", func(p pat) bool { return p.Gender == "female" }},
		{"gender=male", func(p pat) bool { return p.Gender == "male" }},
		{"birthdate=lt1970", func(p pat) bool { return p.BirthDate < "1970" }},
		{"birthdate=ge1980-06-01&birthdate=le1990", func(p pat) bool { return p.BirthDate >= "1980-06-01" && p.BirthDate <= "1990-12-31" }},
		{"birthdate=" + first.BirthDate, func(p pat) bool { return p.BirthDate == first.BirthDate }},
		{"family=" + q(strings.ToUpper(family[:3])), func(p pat) bool {
			return slices.ContainsFunc(p.Name, func(n humanName) bool {
				return strings.HasPrefix(strings.ToLower(n.Family), strings.ToLower(family[:3]))
			})
		}},
		{"family:exact=" + q(family), func(p pat) bool {
			return slices.ContainsFunc(p.Name, func(n humanName) bool { return n.Family == family })
		}},
		{"given=" + q(first.Name[0].Given[0]), func(p pat) bool {
			return slices.ContainsFunc(p.Name, func(n humanName) bool {
				return slices.ContainsFunc(n.Given, func(g string) bool {
					return strings.HasPrefix(strings.ToLower(g), strings.ToLower(first.Name[0].Given[0]))
				})
			})
		}},
		{"name=" + q(family) + "&gender=" + first.Gender, func(p pat) bool {
			return p.Gender == first.Gender && slices.ContainsFunc(p.Name, func(n humanName) bool {
				return strings.HasPrefix(strings.ToLower(n.Family), strings.ToLower(family))
			})
		}},
		{"identifier=" + q(first.Identifier[2].System+"|"+first.Identifier[2].Value), func(p pat) bool {
			return slices.Contains(p.Identifier, first.Identifier[2])
		}},
		{"identifier=" + q(first.Identifier[2].Value), func(p pat) bool {
			return slices.ContainsFunc(p.Identifier, func(i identifier) bool { return i.Value == first.Identifier[2].Value })
		}},
		{"_id=" + first.ID + "," + pats[1].ID, func(p pat) bool { return p.ID == first.ID || p.ID == pats[1].ID }},
	} {
		want := pcount(c.pred)
		if got := searchCount(t, e, "Patient?"+c.query); got != want {
			t.Errorf("Patient?%s: %d, want %d", c.query, got, want)
		}
	}
}

// Shapes of FHIR elements, decoded with encoding/json: the tests' own view
// of the data, independent of the store's decoding.
type coding struct {
	System string `json:"system"`
	Code   string `json:"code"`
}

type codeableConcept struct {
	Coding []coding `json:"coding"`
}

type identifier struct {
	System string `json:"system"`
	Value  string `json:"value"`
}

type humanName struct {
	Text   string   `json:"text"`
	Family string   `json:"family"`
	Given  []string `json:"given"`
	Prefix []string `json:"prefix"`
	Suffix []string `json:"suffix"`
}
