package loader

import (
	"context"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// quotaServer plays a data store limited to rate write units/s (1 unit per started KB of request
// body) with a bucket of one second's worth: past it, requests get 429 with Retry-After.
type quotaServer struct {
	*httptest.Server
	rate               float64
	mu                 sync.Mutex
	tokens             float64
	last               time.Time
	accepted, rejected atomic.Int64 // requests
	units              atomic.Int64 // accepted units
	start              time.Time
	earlyRejected      atomic.Int64 // 429s in the first two seconds
}

func newQuotaServer(rate float64, batch int) *quotaServer {
	q := &quotaServer{rate: rate, tokens: rate, last: time.Now(), start: time.Now()}
	st := make([]string, batch)
	for i := range st {
		st[i] = "201 Created"
	}
	rec := httptest.NewRecorder()
	batchReply(rec, st, nil)
	reply := rec.Body.Bytes()
	q.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		cost := units(int(n))
		q.mu.Lock()
		now := time.Now()
		q.tokens = math.Min(q.rate, q.tokens+q.rate*now.Sub(q.last).Seconds())
		q.last = now
		ok := q.tokens >= cost
		wait := 0.0
		if ok {
			q.tokens -= cost
		} else {
			wait = (cost - q.tokens) / q.rate
		}
		q.mu.Unlock()
		if !ok {
			q.rejected.Add(1)
			if now.Sub(q.start) < 2*time.Second {
				q.earlyRejected.Add(1)
			}
			w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait))))
			w.WriteHeader(http.StatusTooManyRequests)
			io.WriteString(w, `{"message":"Rate exceeded"}`)
			return
		}
		q.accepted.Add(1)
		q.units.Add(int64(cost))
		w.Write(reply)
	}))
	return q
}

// runPacing loads for d with the given number of Writers (each like a separate loader process,
// with its own pacing state) configured at twice the server's rate, 16 goroutines each.
func runPacing(tb testing.TB, rate float64, batch, writers int, d time.Duration) (fraction, rate429 float64, lost int64) {
	q := newQuotaServer(rate, batch)
	defer q.Close()
	sample := sampleItems(tb, batch)
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var wg sync.WaitGroup
	var notLoaded atomic.Int64
	start := time.Now()
	for range writers {
		w, err := New(Options{BaseURL: q.URL + "/r4/", Auth: AuthNone, BatchSize: batch, Concurrency: 16,
			WriteUnitsPerSecond: 2 * rate, Retry: RetryOptions{Initial: 100 * time.Millisecond, Max: 2 * time.Second}})
		if err != nil {
			tb.Fatal(err)
		}
		defer w.Close()
		for range 16 {
			wg.Go(func() {
				for ctx.Err() == nil {
					out, err := w.Write(ctx, sample)
					if err != nil {
						return // canceled at the end of the run
					}
					for _, o := range out {
						if !o.Loaded {
							notLoaded.Add(1)
						}
					}
				}
			})
		}
	}
	wg.Wait()
	el := time.Since(start).Seconds()
	// The server's bucket starts full: that second's worth is not pacing.
	fraction = (float64(q.units.Load()) - rate) / (rate * el)
	total := q.accepted.Load() + q.rejected.Load()
	tb.Logf("requests %d, 429s %d (%d in the first 2 s)", total, q.rejected.Load(), q.earlyRejected.Load())
	return fraction, float64(q.rejected.Load()) / float64(total), notLoaded.Load()
}

// BenchmarkPacing measures the self-pacing against a server limited to N units/s: the achieved
// fraction of N (goal >= 0.90) and the share of requests answered 429 (goal <= 0.05), with one
// Writer and with two Writers sharing the quota. Run with -benchtime=1x; each case takes ~8s.
// pacingRun is the length of each case; PACING_RUN (a Go duration) overrides it.
var pacingRun = func() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("PACING_RUN")); err == nil && d > 0 {
		return d
	}
	return 8 * time.Second
}()

func BenchmarkPacing(b *testing.B) {
	cases := []struct {
		name           string
		rate           float64
		batch, writers int
	}{
		{"N=3000/batch=100/writers=1", 3000, 100, 1},
		{"N=3000/batch=100/writers=2", 3000, 100, 2},
		{"N=2000/batch=10/writers=1", 2000, 10, 1},
		{"N=2000/batch=10/writers=2", 2000, 10, 2},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				f, r, lost := runPacing(b, c.rate, c.batch, c.writers, pacingRun)
				b.ReportMetric(f, "fraction-of-N")
				b.ReportMetric(r, "429-rate")
				if lost > 0 {
					b.Errorf("%d resources not loaded", lost)
				}
			}
		})
	}
}
