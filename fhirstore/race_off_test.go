//go:build !race

package fhirstore

// raceEnabled: see race_on_test.go.
const raceEnabled = false
