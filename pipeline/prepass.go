package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"

	"go.uber.org/zap"

	"github.com/fhirload/fhirload/ingest"
	"github.com/fhirload/fhirload/transform"
)

// PrepassStats says what a pre-pass read.
type PrepassStats struct {
	Objects, Resources int64
	Spilled            bool // the index went to disk (past transform.index_memory)
	// RepeatedIDs counts the ids found again under a type they already had
	// (transform.Index.Repeats): a resource more than once in the sources.
	RepeatedIDs int64
}

// Prepass reads every object of src once, before the run, and records the
// type of every resource id of the run (and of every Bundle entry's
// urn:uuid fullUrl) in idx, then freezes it: the transform then rewrites a
// urn:uuid reference to the actual type of its target whatever the file
// order, also on elements that allow several target types. It only scans
// (resourceType and id, no validation): an object it cannot read is left to
// the run, which dead-letters it. Objects are read source.objects at a time.
func Prepass(ctx context.Context, cfg Config, src Source, idx *transform.Index, log *zap.Logger) (PrepassStats, error) {
	cfg = cfg.withDefaults()
	if log == nil {
		log = zap.NewNop()
	}
	var st PrepassStats
	var objects, resources atomic.Int64
	var wg sync.WaitGroup
	slots := make(chan struct{}, cfg.Source.Objects)
	var mu sync.Mutex
	var firstErr error
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if firstErr == nil {
			firstErr = err
		}
	}
	failed := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return firstErr != nil
	}
	for !failed() {
		obj, err := src.Next(ctx)
		if err == io.EOF {
			break
		}
		if err != nil {
			fail(fmt.Errorf("source: %w", err))
			break
		}
		slots <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			n, err := scanObject(ctx, cfg, obj, idx)
			objects.Add(1)
			resources.Add(n)
			var full errIndexFull
			if errors.As(err, &full) {
				fail(full)
				return
			}
			if err != nil {
				// The run reads it again and says what is wrong with it.
				log.Debug("pre-pass: object not scanned to its end", zap.String("source", obj.URI), zap.Error(err))
			}
		}()
	}
	wg.Wait()
	_ = src.Close()
	if firstErr != nil {
		return st, firstErr
	}
	if err := idx.Freeze(); err != nil {
		return st, fmt.Errorf("reference index: %w", err)
	}
	st.Objects, st.Resources, st.Spilled, st.RepeatedIDs = objects.Load(), resources.Load(), idx.Spilled(), idx.Repeats()
	return st, nil
}

// errIndexFull stops a scan whose index cannot take more (its disk failed).
type errIndexFull struct{ err error }

func (e errIndexFull) Error() string { return "reference index: " + e.err.Error() }

// scanObject adds the ids of one object to idx.
func scanObject(ctx context.Context, cfg Config, obj Object, idx *transform.Index) (int64, error) {
	if obj.Replay != nil || cfg.Source.Format == transform.FormatCSV || cfg.Source.Format == transform.FormatFlat {
		return 0, nil // flat records get their ids from the mapping; replayed lines are not a run's population
	}
	rc, err := obj.Open(ctx)
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	st, err := ingest.OpenStream(rc, ingest.LineOptions{MaxLineBytes: cfg.Source.MaxLineBytes, MaxDecompressedBytes: cfg.Source.MaxDecompressedBytes})
	if err != nil {
		return 0, err
	}
	sniffed, err := transform.Sniff(st.Head(), obj.URI)
	if err != nil {
		return 0, err
	}
	var n int64
	add := func(typ, id []byte) error {
		if _, err := idx.Add(typ, id); err != nil {
			return errIndexFull{err}
		}
		n++
		return nil
	}
	if cfg.Source.Format == transform.FormatBundle || sniffed.Format == transform.FormatBundle {
		dec := transform.NewBundleDecoder(st.Reader(), transform.BundleOptions{MaxEntryBytes: cfg.Source.MaxLineBytes})
		for {
			e, err := dec.Next()
			if err == io.EOF {
				return n, nil
			}
			if err != nil {
				return n, err
			}
			if e.Err != nil {
				continue
			}
			typ, id, ok := transform.ScanID(e.Resource)
			if !ok {
				continue
			}
			if u, isUUID := strings.CutPrefix(e.FullURL, "urn:uuid:"); isUUID && u != string(id) {
				if err := add(typ, []byte(u)); err != nil {
					return n, err
				}
			}
			if len(id) > 0 {
				if err := add(typ, id); err != nil {
					return n, err
				}
			}
		}
	}
	lr := st.Lines(sniffed.CROnly)
	for {
		line, err := lr.Next()
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		if line.TooLong {
			continue
		}
		typ, id, ok := transform.ScanID(line.Bytes)
		if !ok || len(id) == 0 {
			continue
		}
		if err := add(typ, id); err != nil {
			return n, err
		}
	}
}
