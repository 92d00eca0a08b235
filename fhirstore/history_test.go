package fhirstore

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

type historyBundle struct {
	Type  string
	Total int
	Link  []struct{ Relation, URL string }
	Entry []struct {
		FullURL  string
		Resource map[string]any
		Request  struct{ Method, URL string }
		Response struct{ Status, Etag string }
	}
}

// lines renders the entries as "METHOD url status etag".
func (h historyBundle) lines() []string {
	var out []string
	for _, en := range h.Entry {
		out = append(out, en.Request.Method+" "+en.Request.URL+" "+strings.Fields(en.Response.Status)[0]+" "+en.Response.Etag)
	}
	return out
}

func (h historyBundle) link(rel string) string {
	for _, l := range h.Link {
		if l.Relation == rel {
			return l.URL
		}
	}
	return ""
}

func historyOf(t *testing.T, e *testEnv, path string) historyBundle {
	t.Helper()
	r := e.do("GET", path, nil)
	mustStatus(t, r, http.StatusOK, path)
	var h historyBundle
	if err := json.Unmarshal(r.body, &h); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if h.Type != "history" {
		t.Fatalf("%s: Bundle type %q", path, h.Type)
	}
	return h
}

func TestHistoryLevels(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	clock := &fakeClock{t: t0}
	e := newEnv(t, Options{now: clock.now})
	step := func(method, path, body string, want int, h ...string) *resp {
		t.Helper()
		var opts []reqOpt
		if len(h) > 0 {
			opts = append(opts, headers(h...))
		}
		r := e.do(method, path, []byte(body), opts...)
		mustStatus(t, r, want, method+" "+path)
		clock.advance(time.Second)
		return r
	}
	created := step("POST", "Patient", patientWith("", "MRN-70"), http.StatusCreated).json(t)["id"].(string) // t0
	step("PUT", "Patient/p1", patientJSON, http.StatusCreated)                                               // t0+1s
	step("PUT", "Patient/p1", strings.Replace(patientJSON, "male", "other", 1), http.StatusOK)               // +2s
	step("PATCH", "Patient/p1", `[{"op":"replace","path":"/gender","value":"female"}]`, http.StatusOK, "Content-Type", contentTypeJSONPatch)
	step("DELETE", "Patient/p1", "", http.StatusNoContent) // +4s
	step("PUT", "Patient/p1", patientJSON, http.StatusCreated)
	step("PUT", "Observation/o1", `{"resourceType":"Observation","id":"o1","status":"final","code":{"text":"x"}}`, http.StatusCreated) // +6s
	at := func(d time.Duration) string { return t0.Add(d).Format("2006-01-02T15:04:05.000Z") }

	p1 := []string{"PUT Patient/p1 201 W/\"5\"", "DELETE Patient/p1 204 W/\"4\"", "PATCH Patient/p1 200 W/\"3\"", "PUT Patient/p1 200 W/\"2\"", "PUT Patient/p1 201 W/\"1\""}
	post := "POST Patient 201 W/\"1\""
	obs := "PUT Observation/o1 201 W/\"1\""
	for _, c := range []struct {
		path string
		want []string
	}{
		{"Patient/p1/_history", p1},
		{"Patient/_history", append(slices.Clone(p1), post)},
		{"_history", append(append([]string{obs}, p1...), post)},
		{"Patient/p1/_history?_since=" + at(3*time.Second), p1[:3]},
		{"_history?_since=" + at(5*time.Second), []string{obs, p1[0]}},
		{"Patient/p1/_history?_at=" + at(2500*time.Millisecond), []string{p1[3]}},
		{"Patient/_history?_at=" + at(2500*time.Millisecond), []string{p1[3], post}},
		{"Patient/p1/_history?_at=" + at(4500*time.Millisecond), []string{p1[1]}},
		{"Patient/_history?_at=2025", nil},
		{"Patient/_history?_since=2026-03-02", nil},
	} {
		t.Run(c.path, func(t *testing.T) {
			h := historyOf(t, e, c.path)
			if got := h.lines(); !slices.Equal(got, c.want) || h.Total != len(c.want) {
				t.Errorf("total %d\ngot  %q\nwant %q", h.Total, got, c.want)
			}
		})
	}
	h := historyOf(t, e, "Patient/_history")
	if h.Entry[5].FullURL != e.base+"Patient/"+created || h.Entry[5].Resource["id"] != created {
		t.Errorf("POST entry: %+v", h.Entry[5])
	}
	if h.Entry[1].Resource != nil {
		t.Errorf("a deletion carries no resource: %v", h.Entry[1].Resource)
	}

	// Paging, forward and back.
	var pages [][]string
	h = historyOf(t, e, "_history?_count=3")
	for {
		pages = append(pages, h.lines())
		if h.link("next") == "" || len(pages) > 4 {
			break
		}
		h = historyOf(t, e, h.link("next"))
	}
	if len(pages) != 3 || len(pages[0]) != 3 || len(pages[2]) != 1 || h.Total != 7 {
		t.Fatalf("pages %q", pages)
	}
	h = historyOf(t, e, h.link("previous"))
	if !slices.Equal(h.lines(), pages[1]) {
		t.Errorf("previous: %q, want %q", h.lines(), pages[1])
	}

	for _, c := range []struct {
		path string
		want int
	}{
		{"Patient/nope/_history", http.StatusNotFound},
		{"Patient/_history?_since=soon", http.StatusBadRequest},
		{"Patient/_history?_at=x", http.StatusBadRequest},
		{"Patient/_history?_count=0", http.StatusBadRequest},
		{"_history?gender=male", http.StatusBadRequest},
	} {
		r := e.do("GET", c.path, nil)
		mustStatus(t, r, c.want, c.path)
	}
}
