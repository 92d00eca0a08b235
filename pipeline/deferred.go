package pipeline

import (
	"context"
	"fmt"
	"slices"

	"github.com/fhirload/fhirload/deadletter"
)

// Deferred outcomes: a DeferredSink (an import job) answers Deferred to
// Write and settles the items when the job ends. The runner keeps, per
// object, only a count and the failures; the verbatim line of a failure is
// read again from the object (the dead-letter entry must carry it), so
// memory does not grow with the size of the input.

// settleDeferred is the settle callback of DeferredSink.Flush for one item
// of o.
func (o *objectRun) settleDeferred(ctx context.Context, ord uint32, out Outcome) {
	switch out.Status {
	case Loaded:
		var st settlement
		var prev *deadletter.Entry
		if o.obj.Replay != nil && int(ord) < len(o.obj.Replay) {
			prev = &o.obj.Replay[ord]
		}
		st.load(out.Created, prev)
		o.r.settle(ctx, o, &st)
	case Failed:
		o.dmu.Lock()
		if o.dfailed == nil {
			o.dfailed = map[uint32]Outcome{}
		}
		o.dfailed[ord] = out
		o.dmu.Unlock()
	default:
		return // not final: stays deferred
	}
	o.deferred.Add(-1)
}

// finishDeferred dead-letters the items of o the sink settled as failed,
// counts the ones it never settled, and finishes o.
func (o *objectRun) finishDeferred(ctx context.Context) {
	if n := o.deferred.Load(); n > 0 {
		o.r.c.unsettled.Add(n)
		o.fail(fmt.Errorf("%d items were never settled by the sink", n))
	}
	o.dmu.Lock()
	failed := o.dfailed
	o.dfailed = nil
	o.dmu.Unlock()
	if len(failed) > 0 {
		o.settleFailures(ctx, failed)
	}
	o.finish(ctx)
}

// abandonDeferred finishes o when no sink will settle its deferred items.
func (o *objectRun) abandonDeferred() {
	o.r.c.unsettled.Add(o.deferred.Load())
	o.fail(errUnsettled)
	o.finish(context.Background())
}

// settleFailures reads the failed lines again and dead-letters them with the
// sink's outcome.
func (o *objectRun) settleFailures(ctx context.Context, failed map[uint32]Outcome) {
	var st settlement
	have := map[uint32]bool{}
	err := o.each(ctx, func(rec record, line []byte) bool {
		out, ok := failed[rec.ord]
		if !ok || rec.blank || rec.fail != nil || have[rec.ord] {
			return true
		}
		rec.b = line
		st.failed = append(st.failed, o.failedLine(&rec, failure{reason: out.Reason, stage: deadletter.StageImport, msg: out.Message}, &out))
		named(&st.failed[len(st.failed)-1].e, &out)
		have[rec.ord] = true
		return len(have) < len(failed)
	})
	if err == nil && len(have) < len(failed) {
		err = fmt.Errorf("%d lines are no longer in the object", len(failed)-len(have))
	}
	if err != nil {
		// The lines cannot be kept verbatim: keep what is known of them.
		ords := make([]uint32, 0, len(failed))
		for ord := range failed {
			ords = append(ords, ord)
		}
		slices.Sort(ords)
		for _, ord := range ords {
			if have[ord] {
				continue
			}
			out := failed[ord]
			rec := record{no: int64(ord), offset: -1, ord: ord}
			msg := fmt.Sprintf("%s (the line could not be read again: %v)", out.Message, err)
			st.failed = append(st.failed, o.failedLine(&rec, failure{reason: out.Reason, stage: deadletter.StageImport, msg: msg}, &out))
			named(&st.failed[len(st.failed)-1].e, &out)
		}
	}
	o.r.settle(ctx, o, &st)
}

// named gives a deferred failure's entry the resource the sink named.
func named(e *deadletter.Entry, out *Outcome) {
	if out.ResourceType != "" {
		e.ResourceType, e.ResourceID = out.ResourceType, out.ResourceID
	}
}
