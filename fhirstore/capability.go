package fhirstore

import (
	"encoding/json"
	"slices"
	"time"
)

// capabilityStatement describes what the server does, for GET metadata.
func capabilityStatement(now time.Time) []byte {
	type searchParamDef struct {
		Name string `json:"name"`
		Type string `json:"type"`
	}
	type interaction struct {
		Code string `json:"code"`
	}
	type resource struct {
		Type            string           `json:"type"`
		Interaction     []interaction    `json:"interaction"`
		Versioning      string           `json:"versioning"`
		ReadHistory     bool             `json:"readHistory"`
		UpdateCreate    bool             `json:"updateCreate"`
		ConditionalRead string           `json:"conditionalRead"`
		ConditionalDel  string           `json:"conditionalDelete"`
		SearchParam     []searchParamDef `json:"searchParam"`
	}
	var inter []interaction
	for _, c := range []string{"read", "vread", "update", "delete", "history-instance", "create", "search-type"} {
		inter = append(inter, interaction{c})
	}
	var resources []resource
	for _, t := range resourceTypes {
		tp := searchCatalog().types[t]
		var sps []searchParamDef
		for _, n := range tp.codes {
			if d := tp.byCode[n]; d.supported() {
				sps = append(sps, searchParamDef{n, d.kind.String()})
			}
		}
		slices.SortFunc(sps, func(a, b searchParamDef) int {
			if a.Name < b.Name {
				return -1
			}
			return 1
		})
		resources = append(resources, resource{Type: t, Interaction: inter, Versioning: "versioned", ReadHistory: true,
			UpdateCreate: true, ConditionalRead: "not-supported", ConditionalDel: "not-supported", SearchParam: sps})
	}
	b, _ := json.Marshal(map[string]any{
		"resourceType": "CapabilityStatement",
		"status":       "active",
		"date":         now.UTC().Format(time.RFC3339),
		"publisher":    "fhirload",
		"kind":         "instance",
		"software":     map[string]string{"name": "fhirload serve"},
		"implementation": map[string]string{
			"description": "Local HealthLake-compatible FHIR R4 server. Every R4 resource type can be stored, read and searched by _id, _lastUpdated and identifier.",
		},
		"fhirVersion": "4.0.1",
		"format":      []string{"application/fhir+json", "json"},
		"rest": []map[string]any{{
			"mode": "server",
			"security": map[string]any{
				"description": "AWS Signature Version 4 (service healthlake) with SMART system scopes per key.",
			},
			"resource":    resources,
			"interaction": []interaction{{"batch"}, {"transaction"}},
		}},
	})
	return b
}
