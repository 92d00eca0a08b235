package loader

import (
	"context"
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

func TestLimitAIMD(t *testing.T) {
	l := newLimit(16)
	ctx := context.Background()
	for range 16 {
		if err := l.acquire(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// At the limit a 17th acquire waits.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := l.acquire(cctx); err == nil {
		t.Fatal("acquire beyond the limit did not wait")
	}
	l.cut()
	if _, cur := l.state(); cur != 8 {
		t.Fatalf("limit %d after a cut, want 8", cur)
	}
	l.cut()
	if _, cur := l.state(); cur != 4 {
		t.Fatalf("limit %d, want 4", cur)
	}
	for range 16 {
		l.release(false)
	}
	// Additive increase: +1 per limit's worth of clean responses.
	for range 4 {
		l.acquire(ctx)
		l.release(true)
	}
	// 4 → 4.25 → 4.49 → 4.71 → 4.92: one more round trip's worth reaches 5.
	if _, cur := l.state(); cur != 4 {
		t.Fatalf("limit %d after 4 clean responses, want 4", cur)
	}
	l.acquire(ctx)
	l.release(true)
	if _, cur := l.state(); cur != 5 {
		t.Fatalf("limit %d after 5 clean responses, want 5", cur)
	}
	for range 200 {
		l.acquire(ctx)
		l.release(true)
	}
	if _, cur := l.state(); cur != 16 {
		t.Fatalf("limit %d, want back at the max 16", cur)
	}
}

// TestLimitFloor: cuts never take the limit below max(2, max/4) (or max itself when smaller).
func TestLimitFloor(t *testing.T) {
	for _, tt := range []struct{ max, floor int }{{16, 4}, {64, 16}, {6, 2}, {2, 2}, {1, 1}} {
		l := newLimit(tt.max)
		for range 10 {
			l.cut()
		}
		if _, cur := l.state(); cur != tt.floor {
			t.Errorf("max %d: limit %d after 10 cuts, want floor %d", tt.max, cur, tt.floor)
		}
	}
}

func TestTokenBucket(t *testing.T) {
	p := newPacer(100) // 100 units/s, idle credit 10 units
	now := t0
	if d := p.reserve(now, 10); d != 0 {
		t.Fatalf("first reserve waits %v", d)
	}
	if d := p.reserve(now, 50); d != 500*time.Millisecond {
		t.Fatalf("50 units at 100/s wait %v, want 500ms", d)
	}
	if d := p.reserve(now, 100); d != 1500*time.Millisecond {
		t.Fatalf("queued reservation waits %v, want 1.5s", d)
	}
	// After 1.5s the debt is paid; credit never exceeds the idle burst.
	now = now.Add(time.Hour)
	if d := p.reserve(now, 10); d != 0 {
		t.Fatalf("after idle: %v", d)
	}
	if d := p.reserve(now, 1); d != 10*time.Millisecond {
		t.Fatalf("burst capped: %v", d)
	}
	unlimited := newPacer(0)
	if d := unlimited.reserve(now, 1e9); d != 0 {
		t.Fatalf("unlimited waits %v", d)
	}
}

func TestPacerThrottle(t *testing.T) {
	p := newPacer(0) // no configured cap: the server's pace is learned
	now := t0
	for i := range 20 { // the server accepts 1000 units/s for 2s
		now = t0.Add(time.Duration(i) * 100 * time.Millisecond)
		p.reserve(now, 100)
		p.accepted(now, 100)
		p.observe(now, now, 0, 0)
	}
	now = t0.Add(2 * time.Second)
	// No background yet: one whole-request 429 is congestion.
	if !p.observe(now, now.Add(-time.Millisecond), 1, time.Second) {
		t.Fatal("no cut")
	}
	r := p.currentRate()
	if math.Abs(r-rateBeta*1000) > 60 {
		t.Fatalf("rate %.0f after a 429 at ~1000 units/s accepted, want about %.0f", r, rateBeta*1000)
	}
	// The gate holds everyone for the Retry-After, then requests leave at the new rate.
	if d := p.reserve(now, 100*rateBeta); d < time.Second || d > 1100*time.Millisecond {
		t.Fatalf("reserve during the gate waits %v, want ~1s", d)
	}
	if d := p.gateWait(now.Add(500 * time.Millisecond)); d != 500*time.Millisecond {
		t.Fatalf("gate %v", d)
	}
	// A 429 to a request sent before the cut does not cut again.
	if p.observe(now.Add(10*time.Millisecond), now.Add(-time.Millisecond), 1, time.Second) || p.currentRate() != r {
		t.Fatal("cut twice in one epoch")
	}
	// Additive growth after the gate, in absolute units: growSlow of the peak per second near it.
	for i := range 10 {
		at := now.Add(time.Second + time.Duration(i)*time.Second)
		p.accepted(at, r)
	}
	p.reserve(now.Add(11*time.Second), 1)
	if got, want := p.currentRate(), r+growSlow*r*10; math.Abs(got-want) > 0.05*want {
		t.Fatalf("rate %.1f after 10 clean seconds, want about %.1f", got, want)
	}
	capped := newPacer(500)
	capped.accepted(t0, 100)
	capped.accepted(t0.Add(time.Second), 100)
	capped.observe(t0.Add(2*time.Second), t0.Add(2*time.Second), 1, 0)
	capped.reserve(t0.Add(time.Hour), 1)
	if capped.currentRate() != 500 {
		t.Fatalf("rate %.1f grew past the configured ceiling", capped.currentRate())
	}
}

// simServer is a deterministic model server for the pacer alone: requests of cost units,
// answered after rtt; a quota of units/s with a one-second bucket, and/or a rate-independent
// share of 429s.
type simServer struct {
	quota, tokens float64
	last          time.Time
	chaos         float64
	rng           *rand.Rand
	next          []time.Time
}

func (s *simServer) answer(at time.Time, cost float64) (ok bool) {
	if s.quota > 0 {
		s.tokens = math.Min(s.quota, s.tokens+s.quota*at.Sub(s.last).Seconds())
		s.last = at
		if s.tokens < cost {
			return false
		}
		s.tokens -= cost
	}
	return s.rng.Float64() >= s.chaos
}

// simulate runs streams sequential senders against s for d of simulated time and returns the
// accepted units/s, the 429 share, the number of cuts and the lowest rate after the first cut.
func simulate(p *pacer, s *simServer, streams int, d time.Duration) (rate, share float64, cuts int, low float64) {
	s.last = t0
	return simulateFrom(p, s, streams, d)
}

func simulateFrom(p *pacer, s *simServer, streams int, d time.Duration) (rate, share float64, cuts int, low float64) {
	const cost, rtt = 70.0, 20 * time.Millisecond
	if s.next == nil {
		s.next = make([]time.Time, streams)
		for i := range s.next {
			s.next[i] = t0
		}
	}
	next := s.next
	var acc, sent, rej float64
	low = math.Inf(1)
	for {
		i := 0 // the stream due first
		for j := range next {
			if next[j].Before(next[i]) {
				i = j
			}
		}
		now := next[i]
		if now.Sub(t0) >= d {
			break
		}
		start := now.Add(p.reserve(now, cost))
		ok := s.answer(start, cost)
		done := start.Add(rtt)
		sent++
		if ok {
			acc += cost
			p.accepted(done, cost)
			p.observe(done, start, 0, 0)
		} else {
			rej++
			p.observe(done, start, 1, time.Second)
			// The item itself waits out its Retry-After; the stream goes on with other work.
		}
		if p.cuts > 0 && p.currentRate() > 0 {
			low = math.Min(low, p.currentRate())
		}
		next[i] = done
	}
	return acc / d.Seconds(), rej / sent, p.cuts, low
}

// TestPacerDistinguishesQuotaFromChaos: against a quota the pacer converges under it with few
// 429s; against 20% rate-independent 429s it does not ratchet down.
func TestPacerDistinguishesQuotaFromChaos(t *testing.T) {
	const d = 60 * time.Second
	t.Run("quota", func(t *testing.T) {
		p := newPacer(0)
		s := &simServer{quota: 2000, tokens: 2000, rng: rand.New(rand.NewPCG(1, 2))}
		rate, share, cuts, _ := simulate(p, s, 8, d)
		if rate < 0.9*2000 || share > 0.05 || cuts == 0 {
			t.Fatalf("accepted %.0f units/s of 2000, 429 share %.3f, %d cuts", rate, share, cuts)
		}
	})
	t.Run("chaos", func(t *testing.T) {
		free := &simServer{rng: rand.New(rand.NewPCG(1, 2))}
		clean, _, _, _ := simulate(newPacer(0), free, 8, d)
		p := newPacer(0)
		s := &simServer{chaos: 0.2, rng: rand.New(rand.NewPCG(1, 2))}
		rate, share, cuts, low := simulate(p, s, 8, d)
		// The chaos server lets at most 80% through: the pacer must keep most of that, and even
		// its lowest rate must stay far from the collapse (the old pacer went down to ~1 unit/s).
		through := 0.8 * clean
		if rate < 0.7*through || share < 0.15 || low < 0.4*through || cuts > 30 {
			t.Fatalf("accepted %.0f units/s (%.0f without chaos), 429 share %.3f, %d cuts, lowest rate %.0f, background %.2f",
				rate, clean, share, cuts, low, p.backgroundShare())
		}
		t.Logf("accepted %.0f units/s (%.0f without chaos), %d cuts, lowest rate %.0f, background %.2f", rate, clean, cuts, low, p.backgroundShare())
	})
}

// A long run of cuts while little is accepted (a starved machine under
// scattered 429s) must not decay the rate towards nothing: it stays at or
// above allTimeFloor of the best rate accepted since the first cut.
func TestPacerAllTimeFloor(t *testing.T) {
	p := newPacer(0)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	step := func(units float64, d time.Duration) {
		for end := now.Add(d); now.Before(end); now = now.Add(100 * time.Millisecond) {
			p.accepted(now, units/10)
		}
	}
	step(1000, 3*time.Second)
	p.cut(now) // the first cut forgets the initial burst
	step(1000, 5*time.Second)
	for range 600 { // ten minutes of cuts at a trickle
		step(10, time.Second)
		p.cut(now)
	}
	if p.rate < 200 {
		t.Fatalf("rate decayed to %.1f units/s; want at least 200 (a quarter of 1000, less slack)", p.rate)
	}
}

// TestPacerGateBeforeFirstWindow is the stall of the chaos end-to-end test:
// a gate set before anything was accepted moved the unstarted estimate
// window off the zero time, the next estimate spanned the centuries since
// year 1 (~1e-7 units/s), and a second cut set the rate to minRate: every
// batch then booked a wait of minutes.
func TestPacerGateBeforeFirstWindow(t *testing.T) {
	p := newPacer(0)
	now := t0
	if !p.observe(now, now, 1, 200*time.Millisecond) { // first answer: a 429 (cut 1, gate)
		t.Fatal("no first cut")
	}
	now = now.Add(300 * time.Millisecond)
	p.accepted(now, 0) // the retried probe or a first small request succeeds
	if e := p.estimate(now.Add(100 * time.Millisecond)); e != 0 {
		t.Fatalf("estimate %g after a gate before the first window, want 0 (unknown)", e)
	}
	// Answers with a low 429 share sample a low background; then a burst of 429s cuts again.
	for i := range 12 {
		now = now.Add(10 * time.Millisecond)
		p.observe(now, now, 0, 0)
		p.accepted(now, 90)
		_ = i
	}
	for range 5 {
		now = now.Add(10 * time.Millisecond)
		p.observe(now, now, 1, 200*time.Millisecond)
	}
	if r := p.currentRate(); r != 0 && r < 100 {
		t.Fatalf("rate %g units/s after a cut on a barely measured window: the loader would stall", r)
	}
	if d := p.reserve(now, 90); d > 2*time.Second {
		t.Fatalf("a 90-unit request books a wait of %v", d)
	}
}

// TestUnreserve: units given back are available to the next reservation.
func TestUnreserve(t *testing.T) {
	p := newPacer(100)
	p.reserve(t0, 10) // the bucket starts empty: 10 units of debt
	long := p.reserve(t0, 500)
	p.unreserve(500)
	if d := p.reserve(t0, 10); d >= long || d > 250*time.Millisecond {
		t.Fatalf("after unreserve a 10-unit reservation waits %v (the 500-unit one %v)", d, long)
	}
}
