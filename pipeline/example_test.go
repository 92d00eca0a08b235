package pipeline_test

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/fhirload/fhirload/deadletter"
	"github.com/fhirload/fhirload/ingest"
	"github.com/fhirload/fhirload/pipeline"
)

// printSink loads every item and says so.
type printSink struct{}

func (printSink) Write(_ context.Context, items []pipeline.Item) ([]pipeline.Outcome, error) {
	out := make([]pipeline.Outcome, len(items))
	for i, it := range items {
		fmt.Printf("PUT %s/%s\n", it.Type, it.ID)
		out[i] = pipeline.Outcome{Status: pipeline.Loaded, Created: true}
	}
	return out, nil
}

// listDeadLetters stores entries in memory.
type listDeadLetters struct{ entries []deadletter.Entry }

func (l *listDeadLetters) Put(_ context.Context, entries ...deadletter.Entry) error {
	l.entries = append(l.entries, entries...)
	return nil
}

// oneObject is a Source of one in-memory object.
type oneObject struct {
	data string
	done bool
}

func (s *oneObject) Next(context.Context) (pipeline.Object, error) {
	if s.done {
		return pipeline.Object{}, io.EOF
	}
	s.done = true
	return pipeline.Object{Object: ingest.Object{URI: "memory://example.ndjson", Size: -1,
		Open: func(context.Context) (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(s.data)), nil },
		Ack: func(_ context.Context, err error) error {
			fmt.Println("acknowledged, error:", err)
			return nil
		}}}, nil
}

func (s *oneObject) Close() error { return nil }

// A Runner moves the lines of a Source's objects through the transform and a
// Sink; lines that fail are stored as dead letters before they count, and
// the object is acknowledged once, after every line has its outcome.
func ExampleRunner() {
	data := `{"resourceType":"Patient","id":"p1","name":[{"family":"Doe","given":["Jo"]}]}
{"resourceType":"Patient","id":"p2"}
`
	dl := &listDeadLetters{}
	r := pipeline.NewRunner(pipeline.Deps{Command: "run", RunID: "example", Sink: printSink{}, DeadLetters: dl})
	rep := r.Run(context.Background(), &oneObject{data: data})
	fmt.Printf("lines %d, loaded %d, dead-lettered %d, exit %d\n", rep.Lines, rep.Loaded, rep.DeadLettered, rep.ExitCode())
	fmt.Printf("line %d: %s\n", dl.entries[0].Source.Line, dl.entries[0].Message)
	// Output:
	// PUT Patient/p1
	// acknowledged, error: <nil>
	// lines 2, loaded 1, dead-lettered 1, exit 2
	// line 2: invalid: Patient.name: required element missing
}
