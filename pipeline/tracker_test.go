package pipeline

import "testing"

// TestLineTrackerCheckpointsOutOfOrder: batches that finish out of order move
// the committed prefix by several at once; a checkpoint is still due after
// every checkpointBatches batches of progress. Here every three batches finish
// in reverse order, so the prefix moves 3 at a time; the build before checked
// next%20 and saw its first multiple of 20 at batch 60.
func TestLineTrackerCheckpointsOutOfOrder(t *testing.T) {
	const group, batches = 3, 99
	var tr lineTracker
	tr.open(0)
	var due []int64 // committed lines; batch b covers lines 10b+1 … 10b+10
	for id := 0; id < batches; id += group {
		for b := id + group - 1; b >= id; b-- {
			if line, ok := tr.done(b, int64(10*b+10)); ok {
				due = append(due, line)
			}
		}
	}
	prev := int64(0)
	for _, line := range due {
		if gap := (line - prev) / 10; gap < checkpointBatches || gap >= checkpointBatches+group {
			t.Errorf("checkpoint %d batches after the one before; want %d to %d", gap, checkpointBatches, checkpointBatches+group-1)
		}
		if line%(10*group) != 0 {
			t.Errorf("checkpoint at line %d: not the end of a committed prefix", line)
		}
		prev = line
	}
	if left := (int64(10*batches) - prev) / 10; left >= checkpointBatches+group {
		t.Errorf("checkpoints due at lines %v: the last %d batches had none", due, left)
	}
	if tr.committed != 10*batches {
		t.Errorf("committed %d, want %d", tr.committed, 10*batches)
	}
}
