package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Issue 14, defect 2: a dead-letter folder on a 2 MB disk, 3,500 lines of
// which 3,000 invalid. The run stops with exit 1; the report counts as
// dead-lettered exactly the entries the store lists for the run, the lines
// neither loaded nor stored are `unsettled`, the report reconciles, and no
// empty segment is left. Once space is freed, a rerun ends exact.
// (Tests run as root here and on CI: the tmpfs is a real full disk.)
func TestFullDeadLetterDiskReportIsExact(t *testing.T) {
	w := newWorkspace(t, "", "")
	mnt := filepath.Join(w.dir, "dlmount")
	must(t, os.Mkdir(mnt, 0o700))
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount a 2 MB tmpfs (needs root): %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", mnt).Run() })
	w.edit(t, fmt.Sprintf("deadletter: {url: \"file://%s\"}", filepath.Join(w.dir, "deadletter")),
		fmt.Sprintf("deadletter: {url: \"file://%s\"}", filepath.Join(mnt, "dl")))

	var b strings.Builder
	pad := strings.Repeat("x", 400) // entries of about 1 KB: 3,000 do not fit in 2 MB
	for i := 1; i <= 3500; i++ {
		if i%7 == 0 {
			b.WriteString(patientLine(fmt.Sprintf("ok%d", i)) + "\n")
			continue
		}
		fmt.Fprintf(&b, `{"resourceType":"Patient","id":"bad%d","name":[{"family":"%s","given":["G"]}],"gender":"robot"}`+"\n", i, pad)
	}
	src := filepath.Join(w.dir, "in.ndjson")
	must(t, os.WriteFile(src, []byte(b.String()), 0o600))

	code, rep, log := w.runBin(t, "run", src)
	if code != 1 || rep == nil || rep.Fatal == "" || !strings.Contains(lastLine(log), "dead-letter store") {
		t.Fatalf("exit %d report %+v, want 1 naming the dead-letter store\n%s", code, rep, tail(log))
	}
	if rep.Lines == 0 || rep.Unsettled == 0 || !rep.Reconciles() {
		t.Fatalf("report %+v: want lines read, some unsettled, reconciled", rep)
	}
	stored := w.deadLetters(t)
	if int64(len(stored)) != rep.DeadLettered {
		t.Fatalf("report says %d dead-lettered, the store lists %d", rep.DeadLettered, len(stored))
	}
	if n := strings.Count(log, "dead-lettered\t"); n != 0 && int64(n) != rep.DeadLettered {
		t.Fatalf("%d dead-lettered log lines, %d stored", n, rep.DeadLettered)
	}
	segs, _ := filepath.Glob(filepath.Join(mnt, "dl", "segments", "*"))
	for _, s := range segs {
		if fi, err := os.Stat(s); err == nil && fi.Size() == 0 {
			t.Errorf("empty segment %s left behind", s)
		}
	}

	// Space freed (a bigger disk, the entries kept): the rerun ends exact.
	if out, err := exec.Command("mount", "-o", "remount,size=64m", mnt).CombinedOutput(); err != nil {
		t.Fatalf("remount: %v: %s", err, out)
	}
	code, rep, log = w.runBin(t, "run", src)
	if code != 2 || rep.Lines != 3500 || rep.Loaded != 500 || rep.DeadLettered != 3000 || rep.Unsettled != 0 {
		t.Fatalf("rerun: exit %d %+v\n%s", code, rep, tail(log))
	}
	// The listing shows each line once (the newest entry of a line).
	if n := len(w.deadLetters(t)); n != 3000 {
		t.Fatalf("the store lists %d entries after the rerun, want 3000", n)
	}
}
