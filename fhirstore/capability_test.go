package fhirstore

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/fhirload/fhirload/internal/benchkit"
	spec "github.com/fhirload/fhirload/registry"
)

// capStatement is the part of a CapabilityStatement the tests read.
type capStatement struct {
	ResourceType   string
	FhirVersion    string
	Software       struct{ Name, Version string }
	Implementation struct{ Description, URL string }
	Rest           []struct {
		Mode     string
		Security struct {
			Cors        bool
			Description string
			Service     []struct{ Text string }
		}
		Interaction []struct{ Code string }
		SearchParam []struct{ Name, Type string }
		Resource    []struct {
			Type              string
			Interaction       []struct{ Code string }
			ConditionalCreate bool
			ConditionalUpdate bool
			ConditionalRead   string
			ConditionalDelete string
			SearchInclude     []string
			SearchRevInclude  []string
			SearchParam       []struct{ Name, Type, Definition string }
			Operation         []struct{ Name, Definition string }
		}
		Operation   []struct{ Name, Definition string }
		Compartment []string
	}
}

func capabilityOf(t *testing.T, e *testEnv) capStatement {
	t.Helper()
	r := e.do("GET", "metadata", nil)
	mustStatus(t, r, http.StatusOK, "metadata")
	var cs capStatement
	if err := json.Unmarshal(r.body, &cs); err != nil {
		t.Fatal(err)
	}
	return cs
}

// TestCapabilityStatementIsTruthful: the CapabilityStatement lists every R4
// resource type, and everything it says works: each type's interactions
// (exercised on a generated resource of the type), each listed search
// parameter (a search by it is answered 200), each _include and
// _revinclude value; the software, the base URL the client used, and the
// security actually enforced (SigV4 only under --auth sigv4).
func TestCapabilityStatementIsTruthful(t *testing.T) {
	if testing.Short() {
		t.Skip("exercises every interaction and parameter of every type (~1,200 requests)")
	}
	e := newEnv(t, Options{Auth: "none", UniqueIdentifiers: []string{}, Version: "1.2.3"})
	cs := capabilityOf(t, e)
	if cs.ResourceType != "CapabilityStatement" || cs.FhirVersion != "4.0.1" || cs.Software.Name != "fhirload serve" || cs.Software.Version != "1.2.3" {
		t.Fatalf("statement: %+v", cs)
	}
	if cs.Implementation.URL != e.base {
		t.Errorf("implementation.url %q, want the base URL %q", cs.Implementation.URL, e.base)
	}
	rest := cs.Rest[0]
	if strings.Contains(rest.Security.Description, "Signature") || len(rest.Security.Service) != 0 || rest.Security.Cors {
		t.Errorf("--auth none, no CORS: security %+v", rest.Security)
	}
	var types []string
	for _, r := range rest.Resource {
		types = append(types, r.Type)
	}
	if !slices.Equal(types, spec.R4().ResourceTypes()) {
		t.Fatalf("types: %d listed, want every one of the %d R4 types", len(types), len(spec.R4().ResourceTypes()))
	}
	// One resource of every type, as the generator writes them.
	lines := mixedPopulation(t, benchkit.MixedOptions{Patients: 1, PerPatient: 1, Types: spec.R4().ResourceTypes(), SharedTypes: []string{}, Seed: 5})
	sample := map[string][]byte{}
	for _, l := range lines {
		var h struct{ ResourceType string }
		_ = json.Unmarshal(l, &h)
		sample[h.ResourceType] = l
	}
	for i, r := range rest.Resource {
		if raceEnabled && i%10 != 0 && r.Type != "Patient" && r.Type != "Observation" {
			continue // every type is exercised without -race (.ci/run), a tenth of them under it
		}
		body := sample[r.Type]
		if body == nil {
			t.Fatalf("no generated %s", r.Type)
		}
		has := func(code string) bool {
			return slices.ContainsFunc(r.Interaction, func(c struct{ Code string }) bool { return c.Code == code })
		}
		if !has("create") {
			t.Fatalf("%s: no create", r.Type)
		}
		created := e.do("POST", r.Type, body)
		if created.status != http.StatusCreated {
			t.Fatalf("%s create: %d %s", r.Type, created.status, created.body)
		}
		id := strings.Split(strings.TrimPrefix(created.header.Get("Location"), e.base+r.Type+"/"), "/")[0]
		for _, in := range r.Interaction {
			var got *resp
			switch in.Code {
			case "create":
				continue
			case "read":
				got = e.do("GET", r.Type+"/"+id, nil)
			case "vread":
				got = e.do("GET", r.Type+"/"+id+"/_history/1", nil)
			case "update":
				var m map[string]any
				_ = json.Unmarshal(body, &m)
				m["id"] = id
				b, _ := json.Marshal(m)
				got = e.do("PUT", r.Type+"/"+id, b)
			case "patch":
				got = e.do("PATCH", r.Type+"/"+id, []byte(`[{"op":"test","path":"/id","value":"`+id+`"}]`), headers("Content-Type", contentTypeJSONPatch))
			case "history-instance":
				got = e.do("GET", r.Type+"/"+id+"/_history", nil)
			case "history-type":
				got = e.do("GET", r.Type+"/_history?_count=1", nil)
			case "search-type":
				got = e.do("GET", r.Type+"?_id="+id, nil)
			case "delete":
				continue // below, after the searches
			default:
				t.Errorf("%s: interaction %s has no check", r.Type, in.Code)
				continue
			}
			if got.status >= 300 {
				t.Errorf("%s %s: %d %s", r.Type, in.Code, got.status, got.body)
			}
		}
		// The conditional interactions it claims, on the same resource.
		if r.ConditionalCreate {
			if got := e.do("POST", r.Type, body, headers("If-None-Exist", "_id="+id)); got.status != http.StatusOK {
				t.Errorf("%s conditional create: %d %s", r.Type, got.status, got.body)
			}
		}
		if r.ConditionalRead == "full-support" {
			if got := e.do("GET", r.Type+"/"+id, nil, headers("If-None-Match", "*")); got.status != http.StatusNotModified {
				t.Errorf("%s conditional read: %d %s", r.Type, got.status, got.body)
			}
		}
		if r.ConditionalUpdate {
			var m map[string]any
			_ = json.Unmarshal(body, &m)
			m["id"] = id
			b, _ := json.Marshal(m)
			if got := e.do("PUT", r.Type+"?_id="+id, b); got.status != http.StatusOK {
				t.Errorf("%s conditional update: %d %s", r.Type, got.status, got.body)
			}
		}
		for _, op := range r.Operation {
			if got := e.do("GET", r.Type+"/"+id+"/$"+op.Name, nil); got.status != http.StatusOK {
				t.Errorf("%s $%s: %d %s", r.Type, op.Name, got.status, got.body)
			}
		}
		// Every listed parameter, in one search per type (:missing works
		// for every kind); every _include and _revinclude.
		q := url.Values{}
		for _, sp := range r.SearchParam {
			q.Set(sp.Name+":missing", "false")
			if sp.Type == "" || sp.Definition == "" && sp.Name != "_id" && sp.Name != "_lastUpdated" {
				t.Errorf("%s.%s: type %q definition %q", r.Type, sp.Name, sp.Type, sp.Definition)
			}
		}
		q.Del("_id:missing")
		q.Del("_lastUpdated:missing")
		for _, param := range []string{q.Encode(), url.Values{"_include": r.SearchInclude, "_revinclude": r.SearchRevInclude}.Encode()} {
			if got := e.do("GET", r.Type+"?"+param, nil); got.status != http.StatusOK {
				t.Errorf("%s search: %d %s", r.Type, got.status, got.body)
			}
		}
		if r.ConditionalDelete == "single" {
			if got := e.do("DELETE", r.Type+"?_id="+id, nil); got.status != http.StatusNoContent {
				t.Errorf("%s conditional delete: %d %s", r.Type, got.status, got.body)
			}
		} else if has("delete") {
			if got := e.do("DELETE", r.Type+"/"+id, nil); got.status != http.StatusNoContent {
				t.Errorf("%s delete: %d %s", r.Type, got.status, got.body)
			}
		}
	}
	for _, in := range rest.Interaction {
		switch in.Code {
		case "batch", "transaction":
			b := `{"resourceType":"Bundle","type":"` + in.Code + `","entry":[{"request":{"method":"GET","url":"Patient?_count=1"}}]}`
			if got := e.do("POST", "", []byte(b)); got.status != http.StatusOK {
				t.Errorf("%s: %d %s", in.Code, got.status, got.body)
			}
		case "search-system":
			if got := e.do("GET", "?_type=Patient,Observation&_count=1", nil); got.status != http.StatusOK {
				t.Errorf("%s: %d %s", in.Code, got.status, got.body)
			}
		case "history-system":
			if got := e.do("GET", "_history?_count=1", nil); got.status != http.StatusOK {
				t.Errorf("%s: %d %s", in.Code, got.status, got.body)
			}
		default:
			t.Errorf("system interaction %s has no check", in.Code)
		}
	}
	for _, c := range rest.Compartment {
		typ := strings.TrimPrefix(c, "http://hl7.org/fhir/CompartmentDefinition/")
		typ = strings.ToUpper(typ[:1]) + typ[1:]
		if typ == "Relatedperson" {
			typ = "RelatedPerson"
		}
		if got := e.do("GET", typ+"/x/*?_count=1", nil); got.status != http.StatusOK {
			t.Errorf("compartment %s: %d %s", c, got.status, got.body)
		}
	}
	for _, sp := range rest.SearchParam {
		if sp.Name == "" || sp.Type == "" {
			t.Errorf("system search parameter %+v", sp)
		}
	}
}

// TestCapabilitySecurity: under SigV4 the statement says so and names the
// region; under --auth none it says there is none; CORS is claimed only
// with origins configured.
func TestCapabilitySecurity(t *testing.T) {
	sec := capabilityOf(t, newEnv(t, Options{})).Rest[0].Security
	if !strings.Contains(sec.Description, "Signature Version 4") || !strings.Contains(sec.Description, "us-east-1") || len(sec.Service) != 1 || sec.Cors {
		t.Errorf("sigv4: security %+v", sec)
	}
	sec = capabilityOf(t, newEnv(t, Options{Auth: "none", CORSOrigins: []string{"https://app.example.org"}})).Rest[0].Security
	if !strings.Contains(sec.Description, "No authentication") || len(sec.Service) != 0 || !sec.Cors {
		t.Errorf("none with CORS: security %+v", sec)
	}
}
