package pipeline

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/fhirload/fhirload/deadletter"
	"github.com/fhirload/fhirload/loader"
	"github.com/fhirload/fhirload/transform"
)

// ReplayStore is what replay needs of the dead-letter store.
type ReplayStore interface {
	Retire(ctx context.Context, ids ...string) error
	Replace(ctx context.Context, entries ...deadletter.Entry) error
}

// Replay re-runs dead-lettered entries through the current transform and
// loader. An entry is retired only after its resource is loaded; one that
// fails again is replaced by a version with the new reason and one more
// attempt. With dryRun nothing is written: the report says what would load
// (validated) and what would still fail transform.
func (r *Runner) Replay(ctx context.Context, store ReplayStore, entries []deadletter.Entry, dryRun bool) *Report {
	size := r.d.Config.Target.BatchSize
	for start := 0; start < len(entries) && ctx.Err() == nil && !r.stopped.Load(); start += size {
		end := min(start+size, len(entries))
		if err := r.replayBatch(ctx, store, entries[start:end], dryRun); err != nil {
			var fe *loader.FatalError
			if errors.As(err, &fe) {
				r.setFatal(err)
			} else if ctx.Err() == nil {
				r.setFatal(err)
			}
			break
		}
	}
	return r.Report(ctx.Err() != nil)
}

func (r *Runner) replayBatch(ctx context.Context, store ReplayStore, batch []deadletter.Entry, dryRun bool) error {
	var items []loader.Item
	var pending []deadletter.Entry
	var again []deadletter.Entry
	now := time.Now().UTC()
	failed := func(e deadletter.Entry, reason, stage, msg, location string) {
		e.Reason, e.Stage, e.Message = deadletter.Reason(reason), deadletter.Stage(stage), msg
		e.Attempts++
		e.LastFailed = now
		e.Transform = r.info
		again = append(again, e)
		r.c.deadLettered(reason, location)
		r.d.Metrics.deadLettered(reason)
		r.log.Info("replay failed again", zap.String("id", e.ID), zap.String("source", e.Source.URI),
			zap.Int64("line", e.Source.Line), zap.String("reason", reason), zap.String("detail", msg))
	}
	for _, e := range batch {
		r.c.lines.Add(1)
		b := e.Bytes()
		if len(b) == 0 || e.LineTruncated {
			// Nothing to replay (a missing object, an unreadable tail, a line
			// too long to keep): it stays for an operator to purge.
			failed(e, string(e.Reason), string(e.Stage), e.Message, "")
			continue
		}
		res, err := r.d.Transformer.Replay(e.Source.URI, []byte(e.Source.Header), b)
		if err != nil {
			reason, location := transform.ReasonParse, ""
			var te *transform.Error
			if errors.As(err, &te) {
				reason, location = te.Reason, te.Location
			}
			failed(e, reason, "transform", err.Error(), location)
			continue
		}
		e.ResourceType, e.ResourceID = res.Type, res.ID
		items = append(items, loader.Item{Type: res.Type, ID: res.ID, Body: res.Body})
		pending = append(pending, e)
	}
	var done []string
	if dryRun || r.d.Writer == nil {
		r.c.loaded.Add(int64(len(items)))
	} else if len(items) > 0 {
		outs, err := r.d.Writer.Write(ctx, items)
		if err != nil {
			// Loaded outcomes are final (retire them); the rest stay as they were.
			for i := range pending {
				if i < len(outs) && outs[i].Loaded {
					r.loadedOne(outs[i])
					done = append(done, pending[i].ID)
				} else {
					r.c.lines.Add(-1)
				}
			}
			if len(done) > 0 {
				if rerr := store.Retire(context.WithoutCancel(ctx), done...); rerr != nil {
					return errors.Join(err, rerr)
				}
			}
			return err
		}
		for i, out := range outs {
			e := pending[i]
			if out.Loaded {
				r.loadedOne(out)
				done = append(done, e.ID)
				continue
			}
			e.HTTPStatus, e.OperationOutcome = out.HTTPStatus, out.OperationOutcome
			failed(e, out.Reason, "load", out.Message, "")
		}
	}
	if dryRun {
		return nil
	}
	if len(done) > 0 {
		if err := store.Retire(ctx, done...); err != nil {
			return err
		}
	}
	if len(again) > 0 {
		if err := store.Replace(ctx, again...); err != nil {
			return err
		}
	}
	return nil
}
