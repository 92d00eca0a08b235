package transform_test

import (
	"bytes"
	"fmt"

	"github.com/fhirload/fhirload/transform"
)

// A Stream turns the lines of one object into validated resources, or says
// why a line is rejected: a reason, a FHIRPath location and the rule, never a
// value of the line.
func ExampleStream_Next() {
	t, err := transform.New(transform.Options{Profile: transform.ProfileSeed, IDs: transform.IDsKeep})
	if err != nil {
		fmt.Println(err)
		return
	}
	s := t.NewStream("file:///in/Observation.ndjson")
	for _, line := range []string{
		`{"resourceType":"Observation","id":"o1","status":"final","code":{"text":"weight"},"subject":{"reference":"urn:uuid:6c5d9ca9-54d7-42f5-bfae-a7c19cd217f2"},"valueQuantity":{"value":72.5,"unit":"kg"}}`,
		`{"resourceType":"Observation","id":"o2","status":"final","code":{"text":"weight"},"valueString":"72.5","dataAbsentReason":{"text":"n/a"}}`,
		`{"resourceType":"Observation","id":"o3","status":"done","code":{"text":"weight"}}`,
	} {
		res, _, err := s.Next([]byte(line))
		if err != nil {
			fmt.Println("rejected:", err)
			continue
		}
		i := bytes.Index(res.Body, []byte(`"subject"`))
		fmt.Printf("%s/%s %s\n", res.Type, res.ID, res.Body[i:i+70])
	}
	// Output:
	// Observation/o1 "subject":{"reference":"Patient/6c5d9ca9-54d7-42f5-bfae-a7c19cd217f2"}
	// rejected: invalid: Observation: obs-6: dataAbsentReason SHALL only be present if Observation.value[x] is not present
	// rejected: invalid: Observation.status: code not in the required value set http://hl7.org/fhir/ValueSet/observation-status
}
