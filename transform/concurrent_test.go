package transform

import (
	"fmt"
	"sync"
	"testing"
)

// TestConcurrentStreams: streams of one Transformer validate on several goroutines at
// once — sharing the schema, the invariant set and its rule cache, the extension and
// profile definitions of a package — with the results of a single goroutine (run it
// with -race).
func TestConcurrentStreams(t *testing.T) {
	tr := mustNew(t, Options{ProfilePackages: []string{examplePackage(t)}})
	var lines [][]byte
	for _, ls := range allLines(t) {
		lines = append(lines, ls[:min(3, len(ls))]...)
	}
	vitals, _ := declaredVitals(t)
	lines = append(lines, vitals[:12]...)
	lines = append(lines,
		[]byte(narrativeLine(xdiv+`<script>x</script></div>`)),
		[]byte(obsHead+`,"valueString":"x","dataAbsentReason":{"text":"y"}}`),
		[]byte(`{"resourceType":"Patient","meta":{"profile":["`+exPatient+`"]},"name":[{"family":"F","given":["G"]}]}`))
	outcome := func(st *Stream, l []byte) string {
		res, _, err := st.Next(l)
		if err != nil {
			return err.Error()
		}
		return fmt.Sprint(res.ID, res.UnknownExtensions, res.UnknownProfiles, len(res.Body))
	}
	want := make([]string, len(lines))
	valid := make([]bool, len(lines))
	st := tr.NewStream("seq")
	for i, l := range lines {
		want[i] = outcome(st, l)
		valid[i] = tr.Validate(l) == nil
	}
	var wg sync.WaitGroup
	errs := make(chan string, 4)
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st := tr.NewStream(fmt.Sprint("g", g))
			for i := range lines {
				k := (i + g*7) % len(lines)
				if got := outcome(st, lines[k]); got != want[k] {
					errs <- fmt.Sprintf("goroutine %d, line %d: %s, want %s", g, k, got, want[k])
					return
				}
				if (tr.Validate(lines[k]) == nil) != valid[k] {
					errs <- fmt.Sprintf("goroutine %d, line %d: Validate disagrees", g, k)
					return
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
