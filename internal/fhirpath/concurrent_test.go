package fhirpath_test

import (
	"sync"
	"testing"

	"github.com/fhirload/fhirload/internal/fhirpath"
	"github.com/fhirload/fhirload/internal/fhirpath/internal/r4"
)

// TestSetSharedByGoroutines: one Set and its compiled expressions serve several goroutines,
// each with its own Tree and Evaluator (run with -race).
func TestSetSharedByGoroutines(t *testing.T) {
	set := baseInvariants(t)
	lines := syntheaLines(t, "Observation")
	lines = append(lines, syntheaLines(t, "Patient")...)
	var wg sync.WaitGroup
	errs := make(chan string, 4)
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var tr fhirpath.Tree
			ev := fhirpath.Evaluator{Env: fhirpath.Env{HTMLChecks: testHTMLChecks}}
			for round := 0; round < 5; round++ {
				for _, l := range lines {
					if err := tr.Build(l, r4.New()); err != nil {
						errs <- err.Error()
						return
					}
					if v := set.Check(&ev, &tr, nil); len(v) > 0 {
						errs <- v[0].Invariant.Key
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}
