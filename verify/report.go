package verify

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/fhirload/fhirload/pipeline"
)

// Report is the verify report (DESIGN.md "Run report": the fields verify
// writes). Invariant:
// Lines == SkippedBlank + Verified + Skipped + Unreachable + Unsettled, and
// Verified == Matched + Missing + Different; len(Mismatches) +
// MismatchesOmitted == Missing + Different.
type Report struct {
	RunID    string    `json:"run_id"`
	Command  string    `json:"command"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	Seconds  float64   `json:"seconds"`
	Objects  int64     `json:"objects"`
	Lines    int64     `json:"lines"`

	SkippedBlank int64 `json:"skipped_blank"`
	Verified     int64 `json:"verified"`  // read back and compared
	Matched      int64 `json:"matched"`   // the target holds the resource as the source says
	Missing      int64 `json:"missing"`   // the target does not hold it
	Different    int64 `json:"different"` // it holds a different resource
	// Skipped lines would have been dead-lettered by run (the transform
	// rejects them, or they cannot be read): there is nothing to compare.
	Skipped        int64            `json:"skipped"`
	SkippedReasons map[string]int64 `json:"skipped_reasons,omitempty"`
	// Unreachable resources could not be read back (the server refused the
	// read, or retries were exhausted): the verification is incomplete.
	Unreachable int64 `json:"unreachable"`
	Unsettled   int64 `json:"unsettled"` // lines left without a verdict when a fatal error stopped verify

	// RepeatedIDs counts the resources (type and id) found again on other
	// lines of the sources by the reference pre-pass: where such lines
	// differ, the target holds one of them and the others are different.
	RepeatedIDs int64 `json:"repeated_ids,omitempty"`

	Mismatches        []Mismatch `json:"mismatches"`
	MismatchesOmitted int64      `json:"mismatches_omitted,omitempty"` // mismatches beyond the listed ones

	ReadMethod         string  `json:"read_method,omitempty"`
	Retries            int64   `json:"retries"`
	Throttled          int64   `json:"throttled,omitempty"`
	ResourcesPerSecond float64 `json:"resources_per_second"` // verified per second
	Interrupted        bool    `json:"interrupted,omitempty"`
	Fatal              string  `json:"fatal,omitempty"`
}

// NewReport builds the verify report from the runner's report of a run
// whose Sink was s: the counts are the runner's (lines settle in one place),
// the mismatches are the Sink's.
func NewReport(rep *pipeline.Report, s *Sink) *Report {
	r := &Report{
		RunID: rep.RunID, Command: rep.Command, Started: rep.Started, Finished: rep.Finished, Seconds: rep.Seconds,
		Objects: rep.Objects, Lines: rep.Lines, SkippedBlank: rep.SkippedBlank, Unsettled: rep.Unsettled,
		Matched: rep.Loaded, Retries: rep.Retries, Throttled: rep.Throttled,
		Interrupted: rep.Interrupted, Fatal: rep.Fatal, RepeatedIDs: rep.RepeatedIDs,
	}
	for reason, n := range rep.DeadLetterReasons {
		switch reason {
		case string(ReasonMissing):
			r.Missing = n
		case string(ReasonDifferent):
			r.Different = n
		case string(ReasonUnreachable):
			r.Unreachable = n
		default:
			if r.SkippedReasons == nil {
				r.SkippedReasons = map[string]int64{}
			}
			r.SkippedReasons[reason] = n
			r.Skipped += n
		}
	}
	r.Verified = r.Matched + r.Missing + r.Different
	if r.Seconds > 0 {
		r.ResourcesPerSecond = float64(r.Verified) / r.Seconds
	}
	r.Mismatches, r.MismatchesOmitted = s.Mismatches()
	if r.Mismatches == nil {
		r.Mismatches = []Mismatch{}
	}
	return r
}

// Reconciles reports whether the report's invariants hold.
func (r *Report) Reconciles() bool {
	return r.Lines == r.SkippedBlank+r.Verified+r.Skipped+r.Unreachable+r.Unsettled &&
		r.Verified == r.Matched+r.Missing+r.Different &&
		int64(len(r.Mismatches))+r.MismatchesOmitted == r.Missing+r.Different
}

// ExitCode is verify's exit code: 1 when it could not finish its job (a
// fatal error, lines left unsettled, resources that could not be read
// back), 130 when interrupted, 2 when the target misses or differs on any
// resource, else 0. Skipped lines do not count: run would have
// dead-lettered them, so the target is not expected to hold them.
func (r *Report) ExitCode() int {
	switch {
	case r.Fatal != "":
		return 1
	case r.Interrupted:
		return 130
	case r.Unsettled > 0 || r.Unreachable > 0:
		return 1
	case r.Missing > 0 || r.Different > 0:
		return 2
	}
	return 0
}

// Incomplete is the one-line reason of exit code 1 without a fatal error.
func (r *Report) Incomplete() string {
	switch {
	case r.Unreachable > 0:
		return fmt.Sprintf("verification incomplete: %d resources could not be read back (see the log for why)", r.Unreachable)
	case r.Unsettled > 0:
		return fmt.Sprintf("verification incomplete: %d lines have no verdict", r.Unsettled)
	}
	return ""
}

// WriteFile writes the report as indented JSON (0600: it names sources).
func (r *Report) WriteFile(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o600)
}

// summaryMismatches is how many mismatches the stderr summary lists.
const summaryMismatches = 10

// Summary writes the human summary (stderr): the counts, and the first
// mismatches with their source line and paths.
func (r *Report) Summary(w io.Writer) {
	fmt.Fprintf(w, "%s %s: %d objects, %d lines: %d verified (%d matched, %d missing, %d different), %d skipped, %d unreachable, %d blank; %d retries; %.1fs, %.0f resources/s\n",
		r.Command, r.RunID, r.Objects, r.Lines, r.Verified, r.Matched, r.Missing, r.Different, r.Skipped,
		r.Unreachable, r.SkippedBlank, r.Retries, r.Seconds, r.ResourcesPerSecond)
	if len(r.SkippedReasons) > 0 {
		parts := make([]string, 0, len(r.SkippedReasons))
		for _, k := range slices.Sorted(maps.Keys(r.SkippedReasons)) {
			parts = append(parts, fmt.Sprintf("%s=%d", k, r.SkippedReasons[k]))
		}
		fmt.Fprintf(w, "  skipped (run would dead-letter them) by reason: %s\n", strings.Join(parts, " "))
	}
	for i, m := range r.Mismatches {
		if i == summaryMismatches {
			fmt.Fprintf(w, "  ... %d more mismatches in the report\n", int64(len(r.Mismatches)-i)+r.MismatchesOmitted)
			break
		}
		fmt.Fprintf(w, "  %s %s:%d %s/%s", m.Kind, m.Source, m.Line, m.Type, m.ID)
		if len(m.Paths) > 0 {
			fmt.Fprintf(w, " at %s", strings.Join(m.Paths, ", "))
			if m.PathsOmitted > 0 {
				fmt.Fprintf(w, " (+%d more)", m.PathsOmitted)
			}
		}
		fmt.Fprintln(w)
	}
	if r.Different > 0 {
		fmt.Fprintln(w, "  (different: the target holds another version — changed by another writer, or described differently by another line of the source)")
	}
	if len(r.Mismatches) <= summaryMismatches && r.MismatchesOmitted > 0 {
		fmt.Fprintf(w, "  ... %d more mismatches not listed (the report keeps the first %d by source and line)\n",
			r.MismatchesOmitted, len(r.Mismatches))
	}
	if r.Unsettled > 0 {
		fmt.Fprintf(w, "  %d lines unsettled: verify stopped before they got a verdict\n", r.Unsettled)
	}
	if !r.Reconciles() {
		fmt.Fprintf(w, "  WARNING: report does not reconcile: lines %d != blank %d + verified %d + skipped %d + unreachable %d + unsettled %d\n",
			r.Lines, r.SkippedBlank, r.Verified, r.Skipped, r.Unreachable, r.Unsettled)
	}
}
