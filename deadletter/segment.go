package deadletter

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"

	"go.uber.org/zap"
)

// Segment formats.
//
// Format 1 (S3 segment objects, and local segments written before commit
// markers): every complete line is a record. An S3 object is written whole
// by one PutObject, so it holds exactly one committed group.
//
// Format 2 (local segments): the first line is segmentHeader; records follow
// in groups, each closed by a commit line {"op":"commit","n":N} written in
// the same write as its records. A group counts only once its commit line is
// complete: records after the last commit line (a write cut short by a full
// disk, or a crash) are never visible, whatever was left on disk.
const segmentHeader = `{"op":"segment","format":2}` + "\n"

var commitPrefix = []byte(`{"op":"commit"`)

// commitLine returns the line that commits a group of n records.
func commitLine(n int) []byte {
	return []byte(`{"op":"commit","n":` + strconv.Itoa(n) + "}\n")
}

// isCommit reports whether line (with its '\n') is a complete commit line,
// and the number of records it commits.
func isCommit(line []byte) (int, bool) {
	if !bytes.HasPrefix(line, commitPrefix) || !bytes.HasSuffix(line, []byte("\n")) {
		return 0, false
	}
	var c struct {
		Op string `json:"op"`
		N  int    `json:"n"`
	}
	if json.Unmarshal(line, &c) != nil || c.Op != "commit" {
		return 0, false
	}
	return c.N, true
}

// scanSegment reads one segment and calls apply for each committed record,
// in order. Only lines containing needle are decoded when it is set (Get).
// An unfinished end (a torn last line; in format 2, records without their
// commit line) is skipped with a warning naming the segment and the byte
// offset where it starts — at debug level when the segment's writer is still
// writing it. Lines that are not records are skipped with a warning.
func scanSegment(seg segment, needle []byte, log *zap.Logger, apply func(record)) error {
	br := bufio.NewReaderSize(seg.r, 64<<10)
	var (
		off     int64 // offset of the current line
		format  = 1
		pending []record // format 2: the records of the open group
		groupAt int64    // offset of the open group's first line
		inGroup int      // lines of the open group, decoded or not
	)
	decode := func(line []byte, at int64) (record, bool) {
		var rec record
		if derr := json.Unmarshal(line, &rec); derr != nil || rec.ID == "" {
			log.Warn("dead-letter: skipping a segment line that is not a record",
				zap.String("segment", seg.name), zap.Int64("offset", at))
			return rec, false
		}
		return rec, true
	}
	for first := true; ; first = false {
		line, err := br.ReadBytes('\n')
		at := off
		off += int64(len(line))
		if err != nil && err != io.EOF {
			return fmt.Errorf("dead-letter read segment %s: %w", seg.name, err)
		}
		if err == io.EOF {
			if len(line) > 0 || len(pending) > 0 || inGroup > 0 {
				start := at
				if format == 2 && inGroup > 0 {
					start = groupAt
				}
				unfinished(seg, log, start, off-start)
			}
			return nil
		}
		if first && string(line) == segmentHeader {
			format = 2
			continue
		}
		if format == 1 {
			if len(bytes.TrimSpace(line)) > 0 && (needle == nil || bytes.Contains(line, needle)) {
				if rec, ok := decode(line, at); ok {
					apply(rec)
				}
			}
			continue
		}
		if _, ok := isCommit(line); ok {
			for _, rec := range pending {
				apply(rec)
			}
			pending, inGroup = pending[:0], 0
			continue
		}
		if inGroup == 0 {
			groupAt = at
		}
		inGroup++
		if needle == nil || bytes.Contains(line, needle) {
			if rec, ok := decode(line, at); ok {
				pending = append(pending, rec)
			}
		}
	}
}

// unfinished reports the unfinished end of a segment.
func unfinished(seg segment, log *zap.Logger, offset, size int64) {
	if seg.live != nil && seg.live() {
		log.Debug("dead-letter: a segment's last write is in progress; its records are not listed yet",
			zap.String("segment", seg.name), zap.Int64("offset", offset))
		return
	}
	log.Warn("dead-letter: ignoring the torn end of a segment (a write cut short by a crash or a full disk; "+
		"nothing there was acknowledged)", zap.String("segment", seg.name), zap.Int64("offset", offset),
		zap.Int64("bytes", size))
}

// committedEnd returns the offset just past the last commit line of a
// format-2 segment read from r (0 when there is none, or when r is not a
// format-2 segment: see format).
func committedEnd(r io.Reader) (end int64, format int, err error) {
	br := bufio.NewReaderSize(r, 64<<10)
	var off int64
	for first := true; ; first = false {
		line, err := br.ReadBytes('\n')
		off += int64(len(line))
		if err == io.EOF {
			return end, format, nil
		}
		if err != nil {
			return 0, 0, err
		}
		if first {
			if string(line) != segmentHeader {
				return 0, 1, nil
			}
			format = 2
			continue
		}
		if _, ok := isCommit(line); ok {
			end = off
		}
	}
}
