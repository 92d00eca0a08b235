module github.com/fhirload/fhirload/transform/oracle

go 1.26.8

replace github.com/fhirload/fhirload => ../..

require github.com/google/fhir/go v0.7.4 // indirect
