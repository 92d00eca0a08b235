// Command fhirload-gen writes a deterministic synthetic data set for
// benchmarks: DIR/Patient.ndjson and DIR/Observation.ndjson, Synthea-like
// resources of about 1 KB each with stable ids and urn:uuid: subject
// references, valid under the "seed" profile. The same flags always produce
// the same bytes. Nothing in it is real.
//
//	fhirload-gen --out DIR [--size 100MB | --patients N] [--obs-per-patient 40] [--seed 1]
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/fhirload/fhirload/internal/benchkit"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("fhirload-gen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "", "output `directory` (created)")
	size := fs.String("size", "10MB", "approximate total `size` (KB, MB, GB suffixes), used without --patients")
	patients := fs.Int("patients", 0, "exact number of Patients (overrides --size)")
	perPatient := fs.Int("obs-per-patient", 40, "Observations per Patient")
	seed := fs.Uint64("seed", 1, "data set `seed`")
	mixed := fs.Int("mixed", 0, "instead: a population of many resource types (benchkit.GenerateMixed) for this many `patients`, in mixed.ndjson")
	perType := fs.Int("per-type", 3, "with --mixed: resources of each type per patient")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 1
	}
	if *out == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "fhirload-gen: --out DIR is required and there are no arguments")
		return 1
	}
	if *mixed > 0 {
		return generateMixed(*out, benchkit.MixedOptions{Patients: *mixed, PerPatient: *perType, Seed: *seed}, stdout, stderr)
	}
	n, err := parseSize(*size)
	if err != nil {
		fmt.Fprintf(stderr, "fhirload-gen: --size: %v\n", err)
		return 1
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		fmt.Fprintf(stderr, "fhirload-gen: %v\n", err)
		return 1
	}
	st, err := generate(*out, benchkit.GenOptions{Bytes: n, Patients: *patients, ObservationsPerPatient: *perPatient, Seed: *seed})
	if err != nil {
		fmt.Fprintf(stderr, "fhirload-gen: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "patients=%d observations=%d resources=%d bytes=%d\n",
		st.Patients, st.Observations, st.Resources(), st.PatientBytes+st.ObsBytes)
	return 0
}

func generate(dir string, o benchkit.GenOptions) (benchkit.GenStats, error) {
	pf, err := os.Create(filepath.Join(dir, "Patient.ndjson"))
	if err != nil {
		return benchkit.GenStats{}, err
	}
	defer pf.Close()
	of, err := os.Create(filepath.Join(dir, "Observation.ndjson"))
	if err != nil {
		return benchkit.GenStats{}, err
	}
	defer of.Close()
	st, err := benchkit.Generate(pf, of, o)
	if err != nil {
		return st, err
	}
	if err := pf.Close(); err != nil {
		return st, err
	}
	return st, of.Close()
}

// parseSize reads "123", "10KB", "200MB", "2GB" (powers of 1024).
// generateMixed writes dir/mixed.ndjson.
func generateMixed(dir string, o benchkit.MixedOptions, stdout, stderr io.Writer) int {
	err := os.MkdirAll(dir, 0o755)
	var f *os.File
	if err == nil {
		f, err = os.Create(filepath.Join(dir, "mixed.ndjson"))
	}
	var st benchkit.MixedStats
	if err == nil {
		st, err = benchkit.GenerateMixed(f, o)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "fhirload-gen: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "resources=%d types=%d bytes=%d\n", st.Resources, len(st.PerType), st.Bytes)
	return 0
}

func parseSize(s string) (int64, error) {
	s = strings.ToUpper(strings.TrimSpace(s))
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		m      int64
	}{{"GB", 1 << 30}, {"MB", 1 << 20}, {"KB", 1 << 10}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}, {"B", 1}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSuffix(s, u.suffix), u.m
			break
		}
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("%q is not a size", s)
	}
	return int64(v * float64(mult)), nil
}
