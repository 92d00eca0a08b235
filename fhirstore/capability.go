package fhirstore

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"time"

	spec "github.com/fhirload/fhirload/registry"
)

// The CapabilityStatement (GET metadata) is generated from what the server
// does, never written by hand: every resource type of the registry with
// the interactions the router serves (typeInteractions), the search
// parameters the catalog supports (with their definitions), the _include
// and _revinclude values (every supported reference parameter), and the
// security the server enforces. A test (TestCapabilityStatementIsTruthful)
// exercises what it claims.

// typeInteractions are the interactions served for every type.
var typeInteractions = []string{"read", "vread", "update", "patch", "delete", "history-instance", "history-type", "create", "search-type"}

// systemInteractions are the interactions served at the base.
var systemInteractions = []string{"transaction", "batch", "search-system", "history-system"}

// capabilityJSON renders the CapabilityStatement once; implementationURL
// is a placeholder for the base URL a request used (see metadata).
func capabilityJSON(now time.Time, opts Options) []byte {
	type code struct {
		Code string `json:"code"`
	}
	type searchParam struct {
		Name          string `json:"name"`
		Definition    string `json:"definition,omitempty"`
		Type          string `json:"type"`
		Documentation string `json:"documentation,omitempty"`
	}
	type operation struct {
		Name       string `json:"name"`
		Definition string `json:"definition"`
	}
	type resource struct {
		Type              string        `json:"type"`
		Profile           string        `json:"profile"`
		Interaction       []code        `json:"interaction"`
		Versioning        string        `json:"versioning"`
		ReadHistory       bool          `json:"readHistory"`
		UpdateCreate      bool          `json:"updateCreate"`
		ConditionalCreate bool          `json:"conditionalCreate"`
		ConditionalRead   string        `json:"conditionalRead"`
		ConditionalUpdate bool          `json:"conditionalUpdate"`
		ConditionalDelete string        `json:"conditionalDelete"`
		SearchInclude     []string      `json:"searchInclude,omitempty"`
		SearchRevInclude  []string      `json:"searchRevInclude,omitempty"`
		SearchParam       []searchParam `json:"searchParam"`
		Operation         []operation   `json:"operation,omitempty"`
	}
	codes := func(cs []string) []code {
		out := make([]code, len(cs))
		for i, c := range cs {
			out[i] = code{c}
		}
		return out
	}
	cat := searchCatalog()
	// _revinclude: every supported reference parameter of every type that
	// may point at t.
	revincludes := map[string][]string{}
	for _, typ := range resourceTypes {
		tp := cat.types[typ]
		for _, c := range tp.codes {
			p := tp.byCode[c]
			if p.kind != kindRef || !p.supported() {
				continue
			}
			targets := p.targets()
			if slices.Contains(targets, "Resource") {
				targets = resourceTypes[:]
			}
			for _, target := range targets {
				revincludes[target] = append(revincludes[target], typ+":"+c)
			}
		}
	}
	var resources []resource
	for _, typ := range spec.R4().ResourceTypes() {
		tp := cat.types[typ]
		r := resource{Type: typ, Profile: "http://hl7.org/fhir/StructureDefinition/" + typ, Interaction: codes(typeInteractions),
			Versioning: "versioned-update", ReadHistory: true, UpdateCreate: true,
			ConditionalCreate: true, ConditionalUpdate: true, ConditionalRead: "full-support", ConditionalDelete: "single"}
		if typ == "Patient" {
			r.Operation = []operation{{Name: "everything", Definition: "http://hl7.org/fhir/OperationDefinition/Patient-everything"}}
		}
		for _, c := range tp.codes {
			p := tp.byCode[c]
			if !p.supported() {
				continue
			}
			sp := searchParam{Name: c, Type: p.kind.String()}
			if p.def != nil {
				sp.Definition = p.def.URL
			}
			r.SearchParam = append(r.SearchParam, sp)
			if p.kind == kindRef {
				r.SearchInclude = append(r.SearchInclude, typ+":"+c)
			}
		}
		r.SearchRevInclude = slices.Compact(slices.Sorted(slices.Values(revincludes[typ])))
		resources = append(resources, r)
	}
	security := map[string]any{"cors": len(opts.CORSOrigins) > 0}
	switch opts.Auth {
	case "none":
		security["description"] = "No authentication (fhirload serve --auth none): every request is served with every scope."
	default:
		security["description"] = "AWS Signature Version 4 (service healthlake, region " + opts.Region +
			"); each access key carries SMART system scopes (system/{Type|*}.{read|write|*} or SMART v2 letters) checked per interaction and per Bundle entry."
		security["service"] = []map[string]any{{"text": "AWS SigV4 (service healthlake)"}}
	}
	version := opts.Version
	if version == "" {
		version = "dev"
	}
	var systemParams []searchParam
	for _, c := range cat.common {
		p := cat.types["Patient"].byCode[c]
		sp := searchParam{Name: c, Type: p.kind.String()}
		if p.def != nil {
			sp.Definition = p.def.URL
		}
		systemParams = append(systemParams, sp)
	}
	var compartments []string
	for _, c := range []string{"Patient", "Encounter", "RelatedPerson", "Practitioner", "Device"} {
		if cat.compartment(c) != nil {
			compartments = append(compartments, "http://hl7.org/fhir/CompartmentDefinition/"+strings.ToLower(c))
		}
	}
	b, _ := json.Marshal(map[string]any{
		"resourceType": "CapabilityStatement",
		"id":           "fhirload-serve",
		"name":         "FhirloadServe",
		"title":        "fhirload serve",
		"status":       "active",
		"experimental": false,
		"date":         now.UTC().Format(time.RFC3339),
		"publisher":    "fhirload",
		"kind":         "instance",
		"software":     map[string]string{"name": "fhirload serve", "version": version},
		"implementation": map[string]string{
			"description": "Local HealthLake-compatible FHIR R4 server on SQLite (profile " + profileName(opts.Profile) + ").",
			"url":         implementationURL,
		},
		"fhirVersion": "4.0.1",
		"format":      []string{"application/fhir+json", "json"},
		"patchFormat": []string{contentTypeJSONPatch},
		"rest": []map[string]any{{
			"mode":        "server",
			"security":    security,
			"resource":    resources,
			"interaction": codes(systemInteractions),
			"searchParam": systemParams,
			"compartment": compartments,
		}},
	})
	return b
}

// implementationURL stands for the base URL in the rendered statement.
const implementationURL = "\u0000base\u0000"

var implementationMarker = func() []byte { b, _ := json.Marshal(implementationURL); return b }()

// metadata returns the CapabilityStatement for a request whose base URL
// is base.
func (s *Server) metadata(base string) []byte {
	u, _ := json.Marshal(base)
	return bytes.Replace(s.capability, implementationMarker, u, 1)
}

func profileName(p string) string {
	if p == "" {
		return ProfileBase
	}
	return p
}
