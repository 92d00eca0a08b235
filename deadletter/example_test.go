package deadletter_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/fhirload/fhirload/deadletter"
)

// Example shows the pipeline's side (Put: durable on return, so the line
// counts as dead-lettered and the source object may be acknowledged) and the
// replay's side (List, Retire, Replace) under the "replay" lease.
func Example() {
	ctx := context.Background()
	tmp, _ := os.MkdirTemp("", "dl")
	defer os.RemoveAll(tmp)
	url := "file://" + filepath.Join(tmp, "deadletter")

	pipe, err := deadletter.Open(ctx, url, deadletter.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	for i, reason := range []deadletter.Reason{deadletter.ReasonRetriesExhausted, deadletter.ReasonInvalid} {
		line, b64 := deadletter.MakeLine([]byte(`{"resourceType":"Patient","id":"p1"}`))
		e := deadletter.Entry{RunID: "night-1", Reason: reason, Stage: "load", Line: line, LineBase64: b64,
			Source: deadletter.Source{URI: "file:///in/Patient.ndjson", Line: int64(i + 1)}, Attempts: 1}
		if err := pipe.Put(ctx, e); err != nil {
			fmt.Println(err)
		}
	}
	pipe.Close()

	replay, _ := deadletter.Open(ctx, url, deadletter.Options{})
	defer replay.Close()
	unlock, err := replay.Lock(ctx, "replay", 0)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer unlock()
	todo, _ := replay.List(ctx, deadletter.Filter{RunID: "night-1"})
	for _, e := range todo {
		if e.Reason == "retries-exhausted" { // loads now
			replay.Retire(ctx, e.ID)
			continue
		}
		e.Attempts++ // still invalid
		e.LastFailed = e.LastFailed.Add(1)
		replay.Replace(ctx, e)
	}
	left, _ := replay.List(ctx, deadletter.Filter{})
	for _, e := range left {
		fmt.Println(e.Reason, e.Source.Line, e.Attempts, string(e.Bytes()))
	}
	// Output:
	// invalid 2 2 {"resourceType":"Patient","id":"p1"}
}
