package pipeline

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Report is the run report (DESIGN.md "Run report"). Invariant:
// Lines == SkippedBlank + Loaded + DeadLettered + Unsettled, where Unsettled
// (0 in a run that finished) counts the lines left without a durable
// outcome when a fatal error or an abandoned drain stopped the run.
type Report struct {
	RunID              string           `json:"run_id"`
	Command            string           `json:"command"`
	Started            time.Time        `json:"started"`
	Finished           time.Time        `json:"finished"`
	Seconds            float64          `json:"seconds"`
	Objects            int64            `json:"objects"`
	Lines              int64            `json:"lines"`
	SkippedBlank       int64            `json:"skipped_blank"`
	Loaded             int64            `json:"loaded"`
	Created            int64            `json:"created"`
	Updated            int64            `json:"updated"`
	DeadLettered       int64            `json:"dead_lettered"`
	DeadLetterReasons  map[string]int64 `json:"dead_letter_reasons"`
	Unsettled          int64            `json:"unsettled"`
	Retries            int64            `json:"retries"`
	ResourcesPerSecond float64          `json:"resources_per_second"`

	// Additions to the DESIGN.md schema (additive only).
	SkippedObjects      int64            `json:"skipped_objects,omitempty"`       // already done per checkpoint
	MissingObjects      int64            `json:"missing_objects,omitempty"`       // notified but gone: dead-lettered as missing-object
	UnreadableObjects   int64            `json:"unreadable_objects,omitempty"`    // could not be opened or read to the end: dead-lettered as unreadable-object
	ReleasedObjects     int64            `json:"released_objects,omitempty"`      // watch: unreadable, released for redelivery (the queue's redrive policy parks them)
	IDsDerived          int64            `json:"ids_derived"`                     // resources without an id that got a stable derived one
	UnresolvedRefs      int64            `json:"unresolved_references"`           // urn:uuid references whose target is not in the run (kept as written)
	RepeatedIDs         int64            `json:"repeated_ids,omitempty"`          // ids found again under the same type by the reference pre-pass: the same resource on several lines
	DeadLetterLocations map[string]int64 `json:"dead_letter_locations,omitempty"` // "reason location" -> count (transform failures)
	DeadLetterRules     map[string]int64 `json:"dead_letter_rules,omitempty"`     // the specification's rule broken -> count (obs-6, txt-1, ext:URL, a profile URL)
	UnknownExtensions   map[string]int64 `json:"unknown_extensions,omitempty"`    // extension URL not defined in the core package or transform.profiles -> lines
	UnknownProfiles     map[string]int64 `json:"unknown_profiles,omitempty"`      // declared profile not known -> lines
	Throttled           int64            `json:"throttled,omitempty"`             // 429 answers seen
	Interrupted         bool             `json:"interrupted,omitempty"`           // stopped by a signal before the end
	Fatal               string           `json:"fatal,omitempty"`                 // the one-line reason of a fatal stop
}

// Reconciles reports whether the report's invariant holds.
func (r *Report) Reconciles() bool {
	return r.Lines == r.SkippedBlank+r.Loaded+r.DeadLettered+r.Unsettled
}

// ExitCode is the exit code of run, replay and validate for this report.
func (r *Report) ExitCode() int {
	switch {
	case r.Fatal != "":
		return 1
	case r.Interrupted:
		return 130
	case r.DeadLettered > 0 || r.Unsettled > 0:
		return 2
	}
	return 0
}

// WriteFile writes the report as indented JSON (0600: it names sources).
func (r *Report) WriteFile(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o600)
}

// Summary writes the human summary (stderr).
func (r *Report) Summary(w io.Writer) {
	fmt.Fprintf(w, "%s %s: %d objects, %d lines: %d loaded (%d created, %d updated), %d dead-lettered, %d blank; %d retries; %.1fs, %.0f resources/s\n",
		r.Command, r.RunID, r.Objects, r.Lines, r.Loaded, r.Created, r.Updated, r.DeadLettered, r.SkippedBlank,
		r.Retries, r.Seconds, r.ResourcesPerSecond)
	if len(r.DeadLetterReasons) > 0 {
		keys := make([]string, 0, len(r.DeadLetterReasons))
		for k := range r.DeadLetterReasons {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = fmt.Sprintf("%s=%d", k, r.DeadLetterReasons[k])
		}
		fmt.Fprintf(w, "  dead letters by reason: %s\n", strings.Join(parts, " "))
	}
	if r.SkippedObjects > 0 {
		fmt.Fprintf(w, "  %d objects already done (checkpoint), skipped\n", r.SkippedObjects)
	}
	if r.MissingObjects > 0 {
		fmt.Fprintf(w, "  %d objects were missing (dead-lettered as missing-object)\n", r.MissingObjects)
	}
	if r.UnreadableObjects > 0 {
		fmt.Fprintf(w, "  %d objects could not be read (dead-lettered as unreadable-object; replay reads them again)\n", r.UnreadableObjects)
	}
	if r.ReleasedObjects > 0 {
		fmt.Fprintf(w, "  %d objects could not be read and were released for redelivery\n", r.ReleasedObjects)
	}
	if r.Unsettled > 0 {
		fmt.Fprintf(w, "  %d lines unsettled: neither loaded nor stored when the run stopped; their objects are not acknowledged (rerun)\n", r.Unsettled)
	}
	if !r.Reconciles() {
		fmt.Fprintf(w, "  WARNING: report does not reconcile: lines %d != blank %d + loaded %d + dead-lettered %d + unsettled %d\n",
			r.Lines, r.SkippedBlank, r.Loaded, r.DeadLettered, r.Unsettled)
	}
}

// counters are the live numbers a Runner updates from many goroutines.
type counters struct {
	objects, skippedObjects, missingObjects, unreadable, released atomic.Int64
	lines, blank, loaded, created, updated, dls, unsettled        atomic.Int64
	unresolved, idsDerived                                        atomic.Int64

	mu                   sync.Mutex
	reasons              map[string]int64
	locations            map[string]int64
	rules                map[string]int64
	extensions, profiles map[string]int64
}

func (c *counters) deadLettered(reason, location, rule string) {
	c.dls.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.reasons == nil {
		c.reasons = map[string]int64{}
		c.locations = map[string]int64{}
		c.rules = map[string]int64{}
	}
	c.reasons[reason]++
	if location != "" {
		c.locations[reason+" "+location]++
	}
	if rule != "" {
		c.rules[rule]++
	}
}

// unknown adds a batch's counts of unknown extensions and profiles.
func (c *counters) unknown(extensions, profiles map[string]int64) {
	if len(extensions) == 0 && len(profiles) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	add := func(dst *map[string]int64, src map[string]int64) {
		for k, v := range src {
			if *dst == nil {
				*dst = map[string]int64{}
			}
			(*dst)[k] += v
		}
	}
	add(&c.extensions, extensions)
	add(&c.profiles, profiles)
}

func (c *counters) report(r *Report) {
	r.Objects = c.objects.Load()
	r.SkippedObjects = c.skippedObjects.Load()
	r.MissingObjects = c.missingObjects.Load()
	r.UnreadableObjects = c.unreadable.Load()
	r.ReleasedObjects = c.released.Load()
	r.Unsettled = c.unsettled.Load()
	r.UnresolvedRefs = c.unresolved.Load()
	r.IDsDerived = c.idsDerived.Load()
	r.Lines = c.lines.Load()
	r.SkippedBlank = c.blank.Load()
	r.Loaded = c.loaded.Load()
	r.Created = c.created.Load()
	r.Updated = c.updated.Load()
	r.DeadLettered = c.dls.Load()
	c.mu.Lock()
	defer c.mu.Unlock()
	r.DeadLetterReasons = map[string]int64{}
	for k, v := range c.reasons {
		r.DeadLetterReasons[k] = v
	}
	r.DeadLetterLocations = copyCounts(c.locations)
	r.DeadLetterRules = copyCounts(c.rules)
	r.UnknownExtensions = copyCounts(c.extensions)
	r.UnknownProfiles = copyCounts(c.profiles)
}

// copyCounts copies m, or returns nil for an empty one (omitted in JSON).
func copyCounts(m map[string]int64) map[string]int64 {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]int64, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
