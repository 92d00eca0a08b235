// Package corpus reads the invariants and search parameters extracted from the R4 core
// package (../../testdata, written by ../extract) and renders the invariant table
// (INVARIANTS.md).
package corpus

import (
	"bufio"
	"compress/gzip"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Invariant is one constraint of a StructureDefinition snapshot.
type Invariant struct {
	Key         string
	Severity    string // error, warning
	Context     string // element path: "Observation", "Observation.referenceRange", "Quantity"
	Expression  string
	Definitions []string // StructureDefinition ids that carry it
}

// SearchParam is one SearchParameter.
type SearchParam struct {
	ID         string
	Base       []string
	Type       string
	Expression string
}

func readTSV(file string, cols int, row func([]string)) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return err
	}
	sc := bufio.NewScanner(zr)
	sc.Buffer(nil, 1<<20)
	sc.Scan() // header
	for sc.Scan() {
		fields := strings.Split(sc.Text(), "\t")
		if len(fields) != cols {
			return fmt.Errorf("%s: %d fields, want %d", file, len(fields), cols)
		}
		row(fields)
	}
	return sc.Err()
}

// Invariants reads testdata/invariants.tsv.gz from the fhirpath folder dir.
func Invariants(dir string) ([]Invariant, error) {
	var out []Invariant
	err := readTSV(filepath.Join(dir, "testdata", "invariants.tsv.gz"), 5, func(f []string) {
		out = append(out, Invariant{Key: f[0], Severity: f[1], Context: f[2], Expression: f[3], Definitions: strings.Split(f[4], ",")})
	})
	return out, err
}

// SearchParams reads testdata/searchparams.tsv.gz from the fhirpath folder dir.
func SearchParams(dir string) ([]SearchParam, error) {
	var out []SearchParam
	err := readTSV(filepath.Join(dir, "testdata", "searchparams.tsv.gz"), 4, func(f []string) {
		out = append(out, SearchParam{ID: f[0], Base: strings.Split(f[1], ","), Type: f[2], Expression: f[3]})
	})
	return out, err
}
