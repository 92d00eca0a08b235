// Command gen writes the registry's embedded binary form from the vendored, trimmed FHIR
// package (`go generate ./registry`), or re-vendors the package:
//
//	go run ./registry/internal/gen -spec registry/spec/hl7.fhir.r4.core-4.0.1.trimmed.ndjson.gz -out registry/r4.bin
//	go run ./registry/internal/gen -vendor hl7.fhir.r4.core-4.0.1.tgz -spec registry/spec/hl7.fhir.r4.core-4.0.1.trimmed.ndjson.gz
//
// Both outputs depend only on their input: running either twice gives the same bytes.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"log"
	"os"

	"github.com/fhirload/fhirload/registry/internal/spec"
)

func main() {
	specPath := flag.String("spec", "spec/hl7.fhir.r4.core-4.0.1.trimmed.ndjson.gz", "the trimmed package (read; written with -vendor)")
	out := flag.String("out", "r4.bin", "the registry's binary form to write")
	vendor := flag.String("vendor", "", "a FHIR package .tgz to trim into -spec (instead of generating)")
	flag.Parse()
	log.SetFlags(0)
	if *vendor != "" {
		in, err := os.Open(*vendor)
		if err != nil {
			log.Fatal(err)
		}
		defer in.Close()
		var buf bytes.Buffer
		if err := spec.Vendor(in, &buf); err != nil {
			log.Fatalf("vendor %s: %v", *vendor, err)
		}
		if err := os.WriteFile(*specPath, buf.Bytes(), 0o644); err != nil {
			log.Fatal(err)
		}
		fmt.Printf("wrote %s (%d bytes)\n", *specPath, buf.Len())
		return
	}
	b, err := spec.Binary(*specPath)
	if err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(*out, b, 0o644); err != nil {
		log.Fatal(err)
	}
}
