//go:build race

package fhirstore

// raceEnabled: the tests run under the race detector, which makes the
// SQLite port (C translated to Go) 15–17 times slower. Sequential tests
// that push tens of thousands of rows through it use a subset of their data
// then; .ci/run also runs them whole without -race.
const raceEnabled = true
