package deadletter

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// onlySegment returns the path of the one segment file in a local store.
func onlySegment(t *testing.T, dir string) string {
	t.Helper()
	segs, _ := filepath.Glob(filepath.Join(dir, segmentsDir, "*.ndjson"))
	if len(segs) != 1 {
		t.Fatalf("segments: %v, want one", segs)
	}
	return segs[0]
}

// TestTornEndSkippedThenRepaired: a segment whose writer died mid-write
// (a crash, a full disk) ends torn. Readers list the committed entries, skip
// the torn end with a warning naming the segment and the offset where it
// starts (and no line content), and leave the file as it is; the next
// writer's first write cuts the segment back to its last commit line (or
// removes it when nothing in it was committed), after which nothing is
// skipped any more.
func TestTornEndSkippedThenRepaired(t *testing.T) {
	secret := entry("invalid", "x", 2, "r", t0)
	secret.Line = `{"resourceType":"Patient","name":[{"family":"Secretname"}]}`
	// The segment holds the header, group 1 (line 1) and group 2 (the
	// secret line 2); tear cuts it after group 1 (its offset) plus part of
	// group 2.
	tests := []struct {
		name string
		// tear returns the segment's new content from the group-2 bytes
		// (its record and commit line).
		tear func(group2 string) string
		// without group 1: the segment had only the torn group.
		alone bool
	}{
		{"cut mid-record", func(g string) string { return g[:len(g)/3] }, false},
		{"records without their commit line", func(g string) string { return g[:strings.Index(g, `{"op":"commit"`)] }, false},
		{"commit line without its newline", func(g string) string { return g[:len(g)-1] }, false},
		{"cut mid-record, nothing committed before", func(g string) string { return g[:len(g)/3] }, true},
		{"header only", func(string) string { return "" }, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			w := open(t, dir, Options{})
			var want []int64
			committed := int64(len(segmentHeader))
			if !tc.alone {
				if err := w.Put(ctx, entry("invalid", "x", 1, "r", t0)); err != nil {
					t.Fatal(err)
				}
				want = []int64{1}
				committed = segmentFiles(t, dir)[filepath.Base(onlySegment(t, dir))]
			}
			if err := w.Put(ctx, secret); err != nil {
				t.Fatal(err)
			}
			seg := onlySegment(t, dir)
			all, _ := os.ReadFile(seg)
			w.Close() // the writer is gone (a crash releases its flock too)
			before := string(all[:committed])
			torn := before + tc.tear(string(all[committed:]))
			if err := os.WriteFile(seg, []byte(torn), 0o600); err != nil {
				t.Fatal(err)
			}

			core, logs := observer.New(zap.WarnLevel)
			if got := listedLines(t, open(t, dir, Options{Logger: zap.New(core)})); !slices.Equal(got, want) {
				t.Fatalf("listed %v, want %v", got, want)
			}
			warned := logs.FilterMessageSnippet("torn end").All()
			if torn == segmentHeader {
				// Nothing torn: a segment without groups.
				if len(warned) != 0 {
					t.Errorf("warnings: %v", logs.All())
				}
			} else if len(warned) != 1 {
				t.Fatalf("warnings: %v", logs.All())
			} else if f := warned[0].ContextMap(); f["segment"] != filepath.Base(seg) || f["offset"] != committed {
				t.Errorf("warning names %v, want segment %s offset %d", f, filepath.Base(seg), committed)
			}
			for _, l := range logs.All() {
				if strings.Contains(fmt.Sprint(l.Message, l.Context), "Secretname") {
					t.Errorf("PHI in log: %v", l)
				}
			}
			if b, _ := os.ReadFile(seg); string(b) != torn {
				t.Fatal("a reader modified the segment")
			}

			// The next writer repairs it at its first write.
			core2, logs2 := observer.New(zap.WarnLevel)
			next := open(t, dir, Options{Logger: zap.New(core2)})
			if err := next.Put(ctx, entry("invalid", "x", 3, "r", t0)); err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(seg)
			switch {
			case tc.alone && !os.IsNotExist(err):
				t.Errorf("segment without a committed record not removed: %q, %v", b, err)
			case !tc.alone && string(b) != before:
				t.Errorf("segment after repair = %q, want it cut back to %q", b, before)
			}
			if logs2.FilterMessageSnippet("repair").Len() != 1 {
				t.Errorf("repair logs: %v", logs2.All())
			}
			assertSegmentsClean(t, dir)
			logs.TakeAll()
			if got := listedLines(t, open(t, dir, Options{Logger: zap.New(core)})); !slices.Equal(got, append(want, 3)) {
				t.Fatalf("after repair: listed %v, want %v", got, append(want, 3))
			}
			if logs.Len() != 0 {
				t.Errorf("warnings after repair: %v", logs.All())
			}
		})
	}
}

// TestLiveSegmentNotRepaired: a segment whose writer is alive (it holds the
// segment's flock) may end in a write in progress. Another writer's repair
// leaves it alone, and readers skip its end quietly (debug, not warn).
func TestLiveSegmentNotRepaired(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	w := open(t, dir, Options{})
	if err := w.Put(ctx, entry("invalid", "x", 1, "r", t0)); err != nil {
		t.Fatal(err)
	}
	seg := onlySegment(t, dir)
	// A write in progress: a record, its commit line not yet written.
	f, err := os.OpenFile(seg, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	inProgress := `{"id":"20250301T020000.000000000Z-00000000","reason":"invalid"`
	if _, err := f.WriteString(inProgress); err != nil {
		t.Fatal(err)
	}
	f.Close()
	want, _ := os.ReadFile(seg)

	core, logs := observer.New(zap.DebugLevel)
	other := open(t, dir, Options{Logger: zap.New(core)})
	if err := other.Put(ctx, entry("invalid", "y", 1, "r", t0)); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(seg); string(got) != string(want) {
		t.Fatalf("a live writer's segment was repaired: %q", got)
	}
	if got := listedLines(t, other); !slices.Equal(got, []int64{1, 1}) {
		t.Fatalf("listed %v", got)
	}
	if n := logs.FilterLevelExact(zapcore.WarnLevel).Len(); n != 0 {
		t.Errorf("warnings for a write in progress: %v", logs.All())
	}
	if logs.FilterMessageSnippet("in progress").Len() == 0 {
		t.Error("no debug line for the write in progress")
	}
}

// TestFormat1Segments: segments written by the previous release (one record
// per line, no header or commit lines) are still read, a torn last line is
// skipped with a warning, and writers never modify them (the previous
// release's writers do not lock their segments).
func TestFormat1Segments(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := open(t, dir, Options{})
	var lines []string
	for i := range 3 {
		e := entry("invalid", "x", int64(i+1), "r", t0)
		e.ID = fmt.Sprintf("20250301T020000.00000000%dZ-0000000%d", i, i)
		b, err := jsonLine(record{Entry: e})
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, b)
	}
	old := lines[0] + lines[1] + lines[2][:len(lines[2])/2]
	seg := filepath.Join(dir, segmentsDir, "20250301T020000.000000000Z-42-00000000.ndjson")
	if err := os.WriteFile(seg, []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.WarnLevel)
	r := open(t, dir, Options{Logger: zap.New(core)})
	if got := listedLines(t, r); !slices.Equal(got, []int64{1, 2}) {
		t.Fatalf("listed %v, want [1 2]", got)
	}
	if w := logs.FilterMessageSnippet("torn end").All(); len(w) != 1 || w[0].ContextMap()["offset"] != int64(len(lines[0]+lines[1])) {
		t.Errorf("warnings: %v", logs.All())
	}
	if err := s.Put(ctx, entry("invalid", "x", 9, "r", t0)); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(seg); string(b) != old {
		t.Error("a format-1 segment was modified")
	}
	if got := listedLines(t, r); !slices.Equal(got, []int64{1, 2, 9}) {
		t.Fatalf("listed %v, want [1 2 9]", got)
	}
}

func jsonLine(v any) (string, error) {
	var b strings.Builder
	err := newEncoder(&b).Encode(v)
	return b.String(), err
}
