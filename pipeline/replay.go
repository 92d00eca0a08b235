package pipeline

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/fhirload/fhirload/deadletter"
	"github.com/fhirload/fhirload/ingest"
)

// ReplaySource is the Source of `fhirload replay`: the dead-letter entries
// selected by an operator, run again through the current transform and
// sink by the same Runner as fresh input (same concurrency). The entries of
// lines are handed out chunk at a time as Objects whose Replay field holds
// them; an entry that stands for a whole object (unreadable-object,
// missing-object) becomes that object again, read from the line where it
// stopped.
//
// Settling is the runner's: a replayed line that loads retires its entry;
// one that fails again replaces it with one more attempt and the new
// reason. An entry with nothing to replay (a line too long to keep) fails
// again as it was and stays for an operator to purge.
type ReplaySource struct {
	lines   []deadletter.Entry
	objects []deadletter.Entry
	chunk   int
	open    func(e deadletter.Entry) (ingest.Object, error)
}

// NewReplaySource returns the source of entries. chunk is how many line
// entries go into one Object (at least one batch per slot of the sink's
// concurrency keeps the sink busy). open turns an object-level entry into
// the object to read again; nil means such entries fail as they were.
func NewReplaySource(entries []deadletter.Entry, chunk int, open func(e deadletter.Entry) (ingest.Object, error)) *ReplaySource {
	s := &ReplaySource{chunk: max(chunk, 1), open: open}
	n := 0
	for i := range entries {
		if objectEntry(&entries[i]) {
			n++
		}
	}
	// Sized once: an entry is a large struct, and replays list many.
	s.objects = make([]deadletter.Entry, 0, n)
	s.lines = make([]deadletter.Entry, 0, len(entries)-n)
	for i := range entries {
		if objectEntry(&entries[i]) {
			s.objects = append(s.objects, entries[i])
		} else {
			s.lines = append(s.lines, entries[i])
		}
	}
	return s
}

// objectEntry reports whether e stands for a whole object (or its unread
// rest) rather than for one line.
func objectEntry(e *deadletter.Entry) bool {
	return (e.Reason == deadletter.ReasonUnreadableObject || e.Reason == deadletter.ReasonMissingObject) &&
		e.Stage == deadletter.StageRead && len(e.Line) == 0 && e.LineBase64 == ""
}

// Next returns the next chunk of entries, or an object to read again.
func (s *ReplaySource) Next(ctx context.Context) (Object, error) {
	if err := ctx.Err(); err != nil {
		return Object{}, err
	}
	if len(s.lines) > 0 {
		n := min(s.chunk, len(s.lines))
		o := Object{Object: ingest.Object{URI: "deadletter", Size: -1}, Replay: s.lines[:n:n]}
		s.lines = s.lines[n:]
		return o, nil
	}
	if len(s.objects) > 0 {
		e := s.objects[0]
		s.objects = s.objects[1:]
		if s.open != nil {
			if obj, err := s.open(e); err == nil {
				return Object{Object: obj, ReplayOf: &e, ResumeAfter: max(e.Source.Line-1, 0)}, nil
			}
		}
		// It cannot be opened here (standard input, an unknown scheme): it
		// fails again as it was.
		return Object{Object: ingest.Object{URI: "deadletter", Size: -1}, Replay: []deadletter.Entry{e}}, nil
	}
	return Object{}, io.EOF
}

// Close does nothing.
func (s *ReplaySource) Close() error { return nil }

// ObjectOpener returns the opener of object-level entries for env: local
// files and S3 objects (the version now in place: the entry's ETag is not
// pinned, the object may have been rewritten to fix it).
func ObjectOpener(ctx context.Context, env SourceEnv) func(e deadletter.Entry) (ingest.Object, error) {
	return func(e deadletter.Entry) (ingest.Object, error) {
		switch uri := e.Source.URI; {
		case strings.HasPrefix(uri, "file://"):
			return ingest.LocalObject(strings.TrimPrefix(uri, "file://"))
		case strings.HasPrefix(uri, "s3://"):
			bucket, key, err := ingest.ParseS3URI(uri)
			if err != nil {
				return ingest.Object{}, err
			}
			c, err := env.S3(ctx)
			if err != nil {
				return ingest.Object{}, err
			}
			return (&ingest.S3Source{Client: c, Logger: env.Logger}).Object(bucket, key, "", -1), nil
		}
		return ingest.Object{}, fmt.Errorf("%s cannot be read again", e.Source.URI)
	}
}

// OriginsOf is the Source of the objects the entries came from (each once),
// for the reference pre-pass of a replay: the replayed lines then find their
// references' targets in their own objects as the run did. Objects that can
// no longer be opened are left out; a reference into a file that is not
// among them stays as written (counted unresolved).
func OriginsOf(entries []deadletter.Entry, open func(e deadletter.Entry) (ingest.Object, error)) Source {
	seen := map[string]bool{}
	var objs []Object
	for _, e := range entries {
		if seen[e.Source.URI] {
			continue
		}
		seen[e.Source.URI] = true
		if o, err := open(e); err == nil {
			objs = append(objs, Object{Object: o})
		}
	}
	return &objectList{objs: objs}
}

// objectList is a Source of a fixed list of objects.
type objectList struct{ objs []Object }

func (l *objectList) Next(ctx context.Context) (Object, error) {
	if err := ctx.Err(); err != nil {
		return Object{}, err
	}
	if len(l.objs) == 0 {
		return Object{}, io.EOF
	}
	o := l.objs[0]
	l.objs = l.objs[1:]
	return o, nil
}

func (l *objectList) Close() error { return nil }

// DeadLetterMessage stores a queue message that cannot be understood (not
// an S3 event, or records of one that cannot be read), verbatim, so that it
// is kept before the message is deleted. It is counted like any dead letter.
func (r *Runner) DeadLetterMessage(ctx context.Context, queueURL, messageID string, body []byte, reason string) error {
	line, b64 := deadletter.MakeLine(body)
	now := time.Now().UTC()
	e := deadletter.Entry{
		RunID: r.d.RunID, Reason: deadletter.ReasonReceive, Stage: deadletter.StageReceive,
		Message: "queue message not understood: " + reason,
		Source:  deadletter.Source{URI: queueURL + "#" + messageID},
		Line:    line, LineBase64: b64, Attempts: 1, FirstFailed: now, LastFailed: now, Transform: r.info,
	}
	r.c.lines.Add(1)
	st := settlement{failed: []failedLine{{e: e}}}
	if !r.settle(ctx, &objectRun{r: r, log: r.log}, &st) {
		return fmt.Errorf("dead-letter store: %w", r.fatalErr())
	}
	return nil
}
