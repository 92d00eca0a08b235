// Command invtable writes INVARIANTS.md from testdata/invariants.tsv.gz; run it from
// internal/fhirpath (go generate does).
package main

import (
	"log"
	"os"

	"github.com/fhirload/fhirload/internal/fhirpath/internal/corpus"
)

func main() {
	invs, err := corpus.Invariants(".")
	if err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile("INVARIANTS.md", corpus.Table(invs), 0o644); err != nil {
		log.Fatal(err)
	}
}
