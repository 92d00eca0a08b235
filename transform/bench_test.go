package transform

import (
	"bytes"
	"fmt"
	"io"
	"runtime"
	"testing"
	"time"

	"github.com/fhirload/fhirload/internal/testlines"
	"github.com/fhirload/fhirload/registry"
)

func benchLines(b *testing.B, opts Options, file string) {
	lines := testlines.All(b, file)
	if len(lines) > 2000 {
		lines = lines[:2000]
	}
	runLines(b, mustNew(b, opts), lines)
}

// runLines measures Stream.Next over lines, reporting lines/s of wall-clock time and,
// steadier on a shared machine, the CPU time of the benchmark's thread per line
// (cpu-ns/line) and the lines per CPU-second it makes (cpu-lines/s).
func runLines(b *testing.B, tr *Transformer, lines [][]byte) {
	st := tr.NewStream("bench")
	var bytes int64
	for _, l := range lines {
		bytes += int64(len(l))
	}
	defer lockThread()()
	b.SetBytes(bytes / int64(len(lines)))
	b.ReportAllocs()
	b.ResetTimer()
	cpu := threadCPU()
	for i := 0; i < b.N; i++ {
		if _, _, err := st.Next(lines[i%len(lines)]); err != nil {
			b.Fatal(err)
		}
	}
	cpu = threadCPU() - cpu
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lines/s")
	if cpu > 0 {
		b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/line")
		b.ReportMetric(float64(b.N)/cpu.Seconds(), "cpu-lines/s")
	}
}

// BenchmarkValidateObservation measures Next (parse, validate, rewrite references,
// copy out) over the sample Observations, one core.
func BenchmarkValidateObservation(b *testing.B) {
	benchLines(b, Options{}, "../testdata/sample/Observation.ndjson.gz")
}

// BenchmarkValidateObservationDerive is the same with ids: derive (two UUIDv5 per line).
func BenchmarkValidateObservationDerive(b *testing.B) {
	benchLines(b, Options{IDs: IDsDerive}, "../testdata/sample/Observation.ndjson.gz")
}

// BenchmarkValidatePatient measures Next over the sample Patients.
func BenchmarkValidatePatient(b *testing.B) {
	benchLines(b, Options{}, "../testdata/sample/Patient.ndjson.gz")
}

// BenchmarkMapCSV measures mapping + validating Synthea CSV observation rows.
func BenchmarkMapCSV(b *testing.B) {
	lines := testlines.All(b, "../testdata/shared/flat/observations.csv")
	tr := mustNew(b, Options{Format: FormatCSV, IDs: IDsDerive, Mapping: "../mappings/synthea-csv.yaml"})
	st := tr.NewStream("observations.csv")
	if _, skip, _ := st.Next(lines[0]); !skip {
		b.Fatal("header not skipped")
	}
	rows := lines[1:]
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		st.Next(rows[i%len(rows)])
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}

// benchTypeLines measures Next over the lines of one fhir-all file.
func benchTypeLines(b *testing.B, opts Options, file string) {
	lines := allLines(b)[file]
	if len(lines) > 2000 {
		lines = lines[:2000]
	}
	runLines(b, mustNew(b, opts), lines)
}

// BenchmarkValidateExplanationOfBenefit: Synthea EOBs average 5 KB, the largest type.
func BenchmarkValidateExplanationOfBenefit(b *testing.B) {
	benchTypeLines(b, Options{}, "ExplanationOfBenefit.ndjson.gz")
}

func BenchmarkValidateClaim(b *testing.B) { benchTypeLines(b, Options{}, "Claim.ndjson.gz") }

func BenchmarkValidateEncounter(b *testing.B) { benchTypeLines(b, Options{}, "Encounter.ndjson.gz") }

// BenchmarkValidateMixed measures Next over the whole Synthea population (17 types, in
// file order, 38,970 lines) with ids: derive and an Index resolving every reference.
func BenchmarkValidateMixed(b *testing.B) {
	files := sortedFiles(b)
	x, _ := buildIndex(b, IndexOptions{}, files)
	var lines [][]byte
	for _, f := range files {
		lines = append(lines, allLines(b)[f]...)
	}
	runLines(b, mustNew(b, Options{IDs: IDsDerive, Resolver: x}), lines)
}

// BenchmarkValidateObservationResolver is BenchmarkValidateObservation with an Index
// of the sample population resolving subject (Encounters are not in it: unresolved).
func BenchmarkValidateObservationResolver(b *testing.B) {
	x := NewIndex(IndexOptions{})
	defer x.Close()
	for _, f := range []string{"../testdata/sample/Patient.ndjson.gz", "../testdata/sample/Observation.ndjson.gz"} {
		for _, l := range testlines.All(b, f) {
			typ, id, _ := ScanID(l)
			x.Add(typ, id)
		}
	}
	x.Freeze()
	benchLines(b, Options{Resolver: x}, "../testdata/sample/Observation.ndjson.gz")
}

// BenchmarkScanID measures the pre-pass scan over Claim lines (4 KB, id second).
func BenchmarkScanID(b *testing.B) {
	lines := allLines(b)["Claim.ndjson.gz"]
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, _, ok := ScanID(lines[i%len(lines)]); !ok {
			b.Fatal("scan failed")
		}
	}
}

// BenchmarkBundleDecoder streams the largest Synthea Bundle (1.3 MB, pretty-printed).
func BenchmarkBundleDecoder(b *testing.B) {
	files := bundleFiles(b)
	raw, err := io.ReadAll(openGzip(b, files[len(files)-1]))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		d := NewBundleDecoder(bytes.NewReader(raw), BundleOptions{})
		for {
			if _, err := d.Next(); err == io.EOF {
				break
			} else if err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkIndex1M builds an index of 1M UUID ids (Add, Freeze) and reports its heap;
// then measures TypeOf.
func BenchmarkIndex1M(b *testing.B) {
	const n = 1_000_000
	ids := make([][]byte, n)
	for i := range ids {
		ids[i] = []byte(fmt.Sprintf("%08x-%04x-4%03x-8%03x-%012x", i*2654435761%(1<<32), i%65536, i%4096, (i/7)%4096, i*40503))
	}
	typ := []byte("Observation")
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	x := NewIndex(IndexOptions{MaxMemory: 1 << 30})
	defer x.Close()
	for _, id := range ids {
		x.Add(typ, id)
	}
	if err := x.Freeze(); err != nil {
		b.Fatal(err)
	}
	build := time.Since(start)
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, ok := x.TypeOf(ids[i%n]); !ok {
			b.Fatal("not found")
		}
	}
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(n), "heap-B/id")
	b.ReportMetric(build.Seconds(), "build-s")
}

// BenchmarkIndexSpilled1M is BenchmarkIndex1M with a 4 MiB memory bound: 1M ids in 4
// runs merged into one file; TypeOf reads one 4 KiB block per lookup (page cache).
func BenchmarkIndexSpilled1M(b *testing.B) {
	const n = 1_000_000
	ids := make([][]byte, n)
	for i := range ids {
		ids[i] = []byte(fmt.Sprintf("%08x-%04x-4%03x-8%03x-%012x", i*2654435761%(1<<32), i%65536, i%4096, (i/7)%4096, i*40503))
	}
	typ := []byte("Observation")
	start := time.Now()
	x := NewIndex(IndexOptions{MaxMemory: 4 << 20, Dir: b.TempDir()})
	defer x.Close()
	for _, id := range ids {
		x.Add(typ, id)
	}
	if err := x.Freeze(); err != nil {
		b.Fatal(err)
	}
	build := time.Since(start)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, ok := x.TypeOf(ids[(i*7919)%n]); !ok {
			b.Fatal("not found")
		}
	}
	b.ReportMetric(build.Seconds(), "build-s")
}

// BenchmarkSchema measures building the validator's tables for every type from the
// (already decoded) registry: what the first New of a profile costs.
func BenchmarkSchema(b *testing.B) {
	reg := registry.R4()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := newSchema(reg, ProfileSeed); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkChecks states the cost of each check beyond the structural walk: each data
// set is validated with every check, with one check turned off, and with none
// (structure-only: the structural walk, which also appends the line's FHIRPath tree).
// "vitals-declared" are the sample's 7,317 vital signs, each declaring its core profile
// (bp, bodyweight, …, vitalsigns).
func BenchmarkChecks(b *testing.B) {
	vitals, _ := declaredVitals(b)
	sets := []struct {
		name  string
		lines [][]byte
	}{
		{"Observation", allLines(b)["Observation.ndjson.gz"]},
		{"vitals-declared", vitals},
		{"Patient", allLines(b)["Patient.ndjson.gz"]},
		{"ExplanationOfBenefit", allLines(b)["ExplanationOfBenefit.ndjson.gz"]},
	}
	all := checkInvariants | checkNarrative | checkExtensions | checkProfiles
	for _, set := range sets {
		lines := set.lines
		if len(lines) > 2000 {
			lines = lines[:2000]
		}
		for _, c := range []struct {
			name string
			off  checks
		}{
			{"all", 0},
			{"no-invariants", checkInvariants},
			{"no-narrative", checkNarrative},
			{"no-extensions", checkExtensions},
			{"no-profiles", checkProfiles},
			{"structure-only", all},
		} {
			b.Run(set.name+"/"+c.name, func(b *testing.B) {
				tr := mustNew(b, Options{})
				tr.off = c.off
				runLines(b, tr, lines)
			})
		}
	}
}
