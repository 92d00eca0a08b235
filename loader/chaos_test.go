package loader

import (
	"context"
	"errors"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// chaosServer answers like `fhirload serve --chaos-429 0.2 --chaos-500 0.05`: each request, and
// each entry of a batch that got through, is refused with 429 (Retry-After: 1) with probability
// p429 or 500 with p500, from a seeded source, before anything is written. It counts requests,
// entries sent and successful writes per resource.
type chaosServer struct {
	*httptest.Server
	mu             sync.Mutex
	rng            *rand.Rand
	p429, p500     float64
	requests, sent int
	writes         map[string]int
}

func newChaosServer(t *testing.T, p429, p500 float64, seed uint64) *chaosServer {
	c := &chaosServer{rng: rand.New(rand.NewPCG(seed, seed)), p429: p429, p500: p500, writes: map[string]int{}}
	c.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var urls []string
		if r.Method == http.MethodPost {
			for _, e := range readBundle(t, r) {
				urls = append(urls, e.Request.URL)
			}
		} else {
			io.Copy(io.Discard, r.Body)
			urls = []string{strings.TrimPrefix(r.URL.Path, "/r4/")}
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		c.requests++
		c.sent += len(urls)
		switch c.draw() {
		case 429:
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		case 500:
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		if r.Method != http.MethodPost {
			c.writes[urls[0]]++
			w.WriteHeader(http.StatusCreated)
			return
		}
		st := make([]string, len(urls))
		for i, u := range urls {
			switch c.draw() {
			case 429:
				st[i] = "429 Too Many Requests"
			case 500:
				st[i] = "500 Internal Server Error"
			default:
				st[i] = "201 Created"
				c.writes[u]++
			}
		}
		batchReply(w, st, nil)
	}))
	t.Cleanup(c.Close)
	return c
}

func (c *chaosServer) draw() int {
	switch x := c.rng.Float64(); {
	case x < c.p429:
		return 429
	case x < c.p429+c.p500:
		return 500
	}
	return 0
}

// TestChaosLoadsEverythingOnce: scattered, rate-independent 429s and 500s (20% and 5% of requests
// and of batch entries) must not collapse the pacing: 5,000 resources load, each written exactly
// once, with a number of requests close to what retrying only the failed entries needs. A
// collapsed pacer (down to ~1 unit/s: over an hour for these 5,000 KB) runs into the timeout and
// fails; the timeout is generous because a run under -race on a busy machine took up to 77 s.
func TestChaosLoadsEverythingOnce(t *testing.T) {
	const n, batch, p429, p500 = 5000, 100, 0.2, 0.05
	c := newChaosServer(t, p429, p500, 42)
	w, err := New(Options{BaseURL: c.URL + "/r4/", Auth: AuthNone, BatchSize: batch, Concurrency: 16,
		Retry: RetryOptions{Initial: 10 * time.Millisecond, Max: 200 * time.Millisecond, MaxElapsed: 5 * time.Minute}})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	all := items(n)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	batches := make(chan []Item)
	var wg sync.WaitGroup
	var mu sync.Mutex
	loaded := 0
	for range 16 { // like the pipeline: Concurrency batches in flight
		wg.Go(func() {
			for b := range batches {
				out, err := w.Write(ctx, b)
				if err != nil {
					t.Errorf("write: %v", err)
					return
				}
				mu.Lock()
				for _, o := range out {
					if o.Loaded {
						loaded++
					}
				}
				mu.Unlock()
			}
		})
	}
	for i := 0; i < n; i += batch {
		batches <- all[i:min(i+batch, n)]
	}
	close(batches)
	wg.Wait()
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatal("timed out: the pacing collapsed")
	}
	s := w.Stats()
	if loaded != n || s.Created != n || s.Failed != 0 || s.Retries == 0 || s.Throttled == 0 {
		t.Fatalf("%d of %d loaded, stats %+v", loaded, n, s)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.writes) != n {
		t.Fatalf("%d resources written, want %d", len(c.writes), n)
	}
	for id, k := range c.writes {
		if k != 1 {
			t.Fatalf("%s written %d times", id, k)
		}
	}
	// A loader that re-sends exactly the failed entries needs, per Bundle of 100, on average
	// sum_r (1-(1-q^r)^100) successful rounds (q: an entry's failure share in a round that got
	// through), each taking 1/(1-f) requests (f: whole-request failure share). Retrying more
	// (whole Bundles, or entries already loaded) or thrashing would exceed twice that.
	f := p429 + p500
	rounds := 0.0
	for r := range 20 {
		rounds += 1 - math.Pow(1-math.Pow(f, float64(r)), batch)
	}
	ideal := float64(n/batch) * rounds / (1 - f)
	idealSent := n / ((1 - f) * (1 - f))
	t.Logf("%d requests (ideal %.0f), %d entries sent (ideal %.0f), %d retries, %d throttled, limit %d, rate %.0f",
		c.requests, ideal, c.sent, idealSent, s.Retries, s.Throttled, s.Limit, s.Rate)
	if float64(c.requests) > 2*ideal || float64(c.sent) > 2*idealSent || s.Requests != int64(c.requests) {
		t.Fatalf("%d requests (ideal %.0f), %d entries sent (ideal %.0f)", c.requests, ideal, c.sent, idealSent)
	}
}
