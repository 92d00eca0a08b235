package transform

import (
	"regexp"
	"testing"

	"github.com/fhirload/fhirload/registry"
)

// TestPrimitivesMatchSpecRegex checks each hand-written checker against the regex the
// R4 StructureDefinition publishes, on values around the edges; calendar and range
// checks are stricter than the regex on purpose and listed in stricter.
func TestPrimitivesMatchSpecRegex(t *testing.T) {
	kinds := map[string]kind{"code": kindCode, "id": kindID, "uri": kindURI, "oid": kindOID, "uuid": kindUUID,
		"date": kindDate, "dateTime": kindDateTime, "instant": kindInstant, "time": kindTime,
		"base64Binary": kindBase64Binary, "string": kindString}
	values := []string{"", " ", "a", "a b", "a  b", " a", "a ", "a\tb", "a\fb", "abc-1.2", "a_b", "é",
		"urn:oid:1.2.3", "urn:oid:3.1", "urn:oid:1.02", "urn:oid:1", "urn:uuid:6b3c1e52-8a4d-4b0e-9d27-51c38e0a7f14",
		"urn:uuid:6B3C1E52-8a4d-4b0e-9d27-51c38e0a7f14", "2021", "0000", "0001", "2021-02", "2021-13", "2021-02-28",
		"2021-02-30", "2020-02-29", "2021-02-28T10:00:00Z", "2021-02-28T10:00:00", "2021-02-28T10:00:00.5+14:00",
		"2021-02-28T10:00:00+14:01", "2021-02-28T24:00:00Z", "2021-02-28T10:00:60-05:00", "10:00:00", "10:00", "23:59:60.123",
		"aGVsbG8=", "aGVsbG8", "aGVs bG8=", "aGVsbG8=\n", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}
	stricter := map[string]bool{"date/2021-02-30": true, "dateTime/2021-02-30": true, "instant/2021-02-30": true}
	for name, k := range kinds {
		re := regexp.MustCompile(`^(?:` + registry.R4().Type(name).Regex + `)$`)
		for _, v := range values {
			want := re.MatchString(v) && v != "" // empty values are never allowed in FHIR JSON
			got := checkPrimitive(k, []byte(v)) == ""
			if got != want && !stricter[name+"/"+v] {
				t.Errorf("%s %q: checker says %v, spec regex %v", name, v, got, want)
			}
		}
	}
}
