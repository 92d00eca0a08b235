package loader

import (
	"context"
	"math"
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
	sent := t0
	if !l.throttled(t0.Add(time.Second), sent) {
		t.Fatal("first 429 did not cut")
	}
	if _, cur := l.state(); cur != 8 {
		t.Fatalf("limit %d after a 429, want 8", cur)
	}
	// Other 429s to requests sent before the cut belong to the same congestion epoch.
	if l.throttled(t0.Add(2*time.Second), sent) {
		t.Fatal("second 429 of the same epoch cut again")
	}
	if !l.throttled(t0.Add(3*time.Second), t0.Add(2*time.Second)) {
		t.Fatal("429 of a new epoch did not cut")
	}
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
	for range 10 {
		l.throttled(time.Now(), time.Now())
	}
	if _, cur := l.state(); cur != 1 {
		t.Fatalf("limit %d, floor is 1", cur)
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
	}
	now = t0.Add(2 * time.Second)
	if !p.throttled(now, now.Add(-time.Millisecond), time.Second) {
		t.Fatal("no cut")
	}
	r := p.currentRate()
	if math.Abs(r-rateBeta*1000) > 60 {
		t.Fatalf("rate %.0f after a 429 at ~1000 units/s accepted, want about %.0f", r, rateBeta*1000)
	}
	// The gate holds everyone for the Retry-After, then requests leave at the new rate.
	if d := p.reserve(now, 90); d < time.Second || d > 1100*time.Millisecond {
		t.Fatalf("reserve during the gate waits %v, want ~1s", d)
	}
	if d := p.gateWait(now.Add(500 * time.Millisecond)); d != 500*time.Millisecond {
		t.Fatalf("gate %v", d)
	}
	// A 429 to a request sent before the cut does not cut again.
	if p.throttled(now.Add(10*time.Millisecond), now.Add(-time.Millisecond), time.Second) || p.currentRate() != r {
		t.Fatal("cut twice in one epoch")
	}
	// Linear growth after the gate: rateGrowth of the cut rate per second.
	p.reserve(now.Add(11*time.Second), 1)
	if got, want := p.currentRate(), r*(1+rateGrowth*10); math.Abs(got-want) > 1 {
		t.Fatalf("rate %.1f after 10 clean seconds, want %.1f", got, want)
	}
	capped := newPacer(500)
	capped.accepted(t0, 100)
	capped.accepted(t0.Add(time.Second), 100)
	capped.throttled(t0.Add(2*time.Second), t0.Add(2*time.Second), 0)
	capped.reserve(t0.Add(time.Hour), 1)
	if capped.currentRate() != 500 {
		t.Fatalf("rate %.1f grew past the configured ceiling", capped.currentRate())
	}
}
