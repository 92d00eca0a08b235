package registry

//go:generate go run ./internal/gen -spec spec/hl7.fhir.r4.core-4.0.1.trimmed.ndjson.gz -out r4.bin

import (
	_ "embed"
	"sync"
)

// r4Binary is the R4 registry's binary form, written by internal/gen. It is embedded
// uncompressed: decoding slices every string out of it without a copy, and gzip would
// cost more time at first use (about 10 ms) than its 0.7 MB saves in the binary.
//
//go:embed r4.bin
var r4Binary string

// r4 decodes the embedded registry once, on first use: no work happens at program
// start, and the decoded registry is immutable afterwards.
var r4 = sync.OnceValue(func() *Registry {
	r, err := decode(r4Binary)
	if err != nil {
		panic("registry: the embedded R4 registry does not decode (regenerate it with go generate ./registry): " + err.Error())
	}
	return r
})

// R4 returns the registry of FHIR R4 4.0.1 (hl7.fhir.r4.core). The first call decodes
// it (a few milliseconds, see the package's README); later calls return the same value.
func R4() *Registry { return r4() }
