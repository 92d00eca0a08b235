package registry

import (
	"sync"
	"testing"
)

// TestLazySectionsConcurrent: the sections decoded on first use are decoded once, also
// when many goroutines ask at the same time (run with -race).
func TestLazySectionsConcurrent(t *testing.T) {
	r, err := decode(r4Binary)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	results := make([][3]int, 8)
	for g := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[g] = [3]int{len(r.SearchParams("Patient")), len(r.Extensions()), len(r.Profiles())}
		}()
	}
	wg.Wait()
	for _, got := range results {
		if got != results[0] || got[0] == 0 || got[1] != 396 || got[2] != 48 {
			t.Fatalf("results %v", results)
		}
	}
}
