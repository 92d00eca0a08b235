package transform

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/fhirload/fhirload/internal/testlines"
)

const syntheaMapping = "../mappings/synthea-csv.yaml"

// loadCSV runs every line of a CSV file through one stream.
func loadCSV(t *testing.T, tr *Transformer, file string) (res []Resource, errs []*Error) {
	t.Helper()
	st := tr.NewStream(file)
	for i, line := range testlines.All(t, file) {
		r, skip, err := st.Next(line)
		switch {
		case i == 0:
			if !skip || err != nil || string(st.Header()) != string(line) {
				t.Fatalf("%s: header not consumed (skip %v, err %v)", file, skip, err)
			}
		case skip:
			t.Fatalf("%s:%d: a record was skipped", file, i+1)
		case err != nil:
			errs = append(errs, asError(t, err))
		default:
			res = append(res, r)
		}
	}
	return res, errs
}

func TestSyntheaCSV(t *testing.T) {
	for _, ids := range []string{IDsDerive, IDsKeep} {
		tr := mustNew(t, Options{Format: FormatCSV, IDs: ids, Mapping: syntheaMapping})
		// Observations first: references must not depend on the order.
		obs, obsErrs := loadCSV(t, tr, "../testdata/shared/flat/observations.csv")
		pats, patErrs := loadCSV(t, tr, "../testdata/shared/flat/patients.csv")
		if len(patErrs) != 0 || len(pats) != 27 {
			t.Fatalf("ids=%s: %d patients, errors %v", ids, len(pats), patErrs)
		}
		if ids == IDsKeep {
			// Observations have no id column: with ids: keep every row fails, naming why.
			if len(obs) != 0 || len(obsErrs) != 990 || obsErrs[0].Reason != ReasonMapping {
				t.Fatalf("ids=keep: %d observations, %d errors", len(obs), len(obsErrs))
			}
			continue
		}
		if len(obs)+len(obsErrs) != 990 {
			t.Fatalf("%d mapped + %d rejected != 990 rows", len(obs), len(obsErrs))
		}
		for _, e := range obsErrs {
			t.Logf("rejected: %v", e)
		}
		if len(obs) != 990 {
			t.Fatalf("%d of 990 observation rows mapped", len(obs))
		}
		patientRefs := map[string]bool{}
		for _, p := range pats {
			patientRefs["Patient/"+p.ID] = true
			var doc struct {
				Gender    string
				BirthDate string
				Address   []struct{ PostalCode string }
			}
			if err := json.Unmarshal(p.Body, &doc); err != nil {
				t.Fatal(err)
			}
			if doc.Gender != "male" && doc.Gender != "female" || len(doc.BirthDate) != 10 {
				t.Fatalf("patient %s: gender/birthDate not mapped", p.ID)
			}
		}
		if !strings.Contains(string(pats[0].Body), `"postalCode":"02155"`) || !strings.Contains(string(pats[1].Body), `"valueDecimal":-70.46398463383107`) {
			t.Errorf("zip or coordinate literal not kept: %s", pats[0].Body)
		}
		seen := map[string]bool{}
		values := map[string]int{}
		for _, o := range obs {
			var doc struct {
				ID            string
				Subject       struct{ Reference string }
				ValueQuantity *struct{ Value json.Number }
				ValueString   *string
				Code          struct {
					Coding []struct{ System, Code string }
				}
			}
			if err := json.Unmarshal(o.Body, &doc); err != nil {
				t.Fatal(err)
			}
			if !patientRefs[doc.Subject.Reference] {
				t.Fatalf("observation %s: subject %q is not a mapped patient", o.ID, doc.Subject.Reference)
			}
			if seen[o.ID] {
				t.Fatalf("duplicate id %s", o.ID)
			}
			seen[o.ID] = true
			switch {
			case doc.ValueQuantity != nil:
				values["numeric"]++
			case doc.ValueString != nil:
				values["text"]++
			}
			if c := doc.Code.Coding[0]; c.Code == "QALY" && c.System == "http://loinc.org" {
				t.Fatal("QALY mapped as LOINC")
			}
		}
		if values["numeric"] != 599 || values["text"] != 391 {
			t.Fatalf("values %v, want numeric 599 text 391", values)
		}
		// Deterministic across runs (a new Transformer, same input).
		again, _ := loadCSV(t, mustNew(t, Options{Format: FormatCSV, IDs: ids, Mapping: syntheaMapping}), "../testdata/shared/flat/observations.csv")
		for i := range obs {
			if again[i].ID != obs[i].ID || string(again[i].Body) != string(obs[i].Body) {
				t.Fatalf("row %d differs between runs", i+1)
			}
		}
	}
}

func TestMappingErrors(t *testing.T) {
	tr := mustNew(t, Options{Format: FormatCSV, IDs: IDsDerive, Mapping: syntheaMapping})
	header := "DATE,PATIENT,ENCOUNTER,CATEGORY,CODE,DESCRIPTION,VALUE,UNITS,TYPE"
	good := "2023-10-10T04:17:47Z,3edac2e3-d223-6fae-d515-daf96ef6bc76,0622440b-ab3a-87bf-b0d7-f8145ac11cc5,vital-signs,8302-2,Body Height,127.9,cm,numeric"
	tests := []struct {
		name, file, header, row string
		reason, loc             string
	}{
		{"good", "observations.csv", header, good, "", ""},
		{"numeric not a number", "observations.csv", header, strings.Replace(good, "127.9", "Secret42", 1), ReasonMapping, "observations.csv:VALUE"},
		{"bad date", "observations.csv", header, strings.Replace(good, "2023-10-10T04:17:47Z", "10/10/2023", 1), ReasonMapping, "observations.csv:DATE"},
		{"missing patient", "observations.csv", header, strings.Replace(good, "3edac2e3-d223-6fae-d515-daf96ef6bc76", "", 1), ReasonMapping, "observations.csv:PATIENT"},
		{"unknown type", "observations.csv", header, strings.Replace(good, "numeric", "blob", 1), ReasonMapping, "observations.csv:TYPE"},
		{"short row", "observations.csv", header, "a,b,c", ReasonMapping, "observations.csv"},
		{"no rule", "other.csv", "A,B", "1,2", ReasonMapping, "other.csv"},
		{"patient bad gender", "patients.csv", "Id,BIRTHDATE,GENDER,FIRST,LAST", "p1,2000-01-01,X,A,B", ReasonMapping, "patients.csv:GENDER"},
		{"patient no family", "patients.csv", "Id,BIRTHDATE,GENDER,FIRST,LAST", "p1,2000-01-01,M,A,", ReasonMapping, "patients.csv:LAST"},
		{"patient Feb 30", "patients.csv", "Id,BIRTHDATE,GENDER,FIRST,LAST", "p1,2000-02-30,M,A,B", ReasonMapping, "patients.csv:BIRTHDATE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := tr.Replay("in/"+tt.file, []byte(tt.header), []byte(tt.row))
			if tt.reason == "" {
				if err != nil {
					t.Fatal(err)
				}
				if err := tr.Validate(res.Body); err != nil {
					t.Fatal(err)
				}
				return
			}
			e := asError(t, err)
			if e.Reason != tt.reason || e.Location != tt.loc {
				t.Fatalf("got %v, want %s at %s", e, tt.reason, tt.loc)
			}
			if strings.Contains(e.Error(), "Secret42") {
				t.Fatalf("error leaks the value: %v", e)
			}
		})
	}
}

func TestFlatFormat(t *testing.T) {
	tr := mustNew(t, Options{Format: FormatFlat, IDs: IDsDerive, Mapping: syntheaMapping})
	st := tr.NewStream("observations.ndjson")
	if st.Header() != nil {
		t.Fatal("flat streams have no header")
	}
	line := `{"DATE":"2023-10-10T04:17:47Z","PATIENT":"p1","ENCOUNTER":"","CATEGORY":"","CODE":"QALY","DESCRIPTION":"Quality adjusted life years","VALUE":23.0,"UNITS":"a","TYPE":"numeric"}`
	tr2 := mustNew(t, Options{Format: FormatFlat, IDs: IDsDerive, Mapping: "testdata/flat-mapping.yaml"})
	res, _, err := tr2.NewStream("obs.ndjson").Next([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(res.Body), `"value":23.0`) || !strings.Contains(string(res.Body), "Patient/"+DeriveID("Patient", "p1")) {
		t.Fatalf("unexpected body %s", res.Body)
	}
	_, _, err = st.Next([]byte(line)) // the synthea rules match *.csv names only
	if e := asError(t, err); e.Reason != ReasonMapping {
		t.Fatalf("got %v", e)
	}
	_, _, err = tr2.NewStream("obs.ndjson").Next([]byte(`{"DATE":"x","DATE":"y"}`))
	if e := asError(t, err); e.Reason != ReasonParse {
		t.Fatalf("duplicate key: got %v", e)
	}
}
