package loader

import (
	"context"
	"math"
	"sync"
	"time"
)

// Pacing: how the Writer finds the server's pace without collapsing under random failures.
//
// A 429 has two possible meanings. Against a quota (HealthLake's write units per second, shared by
// every client of the data store) it is congestion: the whole client must slow down. From a flaky
// or chaotic server, 429s (and 500s) arrive at a rate-independent fraction of requests: slowing
// down does not make them rarer, and treating each as congestion ratchets the rate down to
// nothing. The pacer tells them apart with three rules:
//
//   - Evidence is weighed, not counted. Every answered request sent since the last cut enters an
//     exponentially decaying window (time constant detectWindow): n answers, k throttle evidence.
//     A whole-request 429 adds 1 to k; a 200 batch-response with throttled entries adds
//     entryWeight times the throttled share of its entries (weaker evidence: the server took the
//     request). Responses to requests sent before the last cut are old news and ignored.
//   - Congestion is a 429 share above the background. The background b is the 429 share that
//     persists right after a cut, when the client has just slowed down (sampled once per cut,
//     averaged), and it decays toward lower shares seen later. A cut happens when
//     k > b·n + z·sqrt(n·b·(1-b)) + 0.5: with b = 0 (a quota) a single whole-request 429 cuts,
//     as plain AIMD would; with b = 0.25 (chaos) it takes a share clearly above 25%, so scattered
//     429s do not cut. At most one cut per congestion epoch (one round trip: responses to requests
//     sent before the cut do not count). Until an epoch's background is sampled (sampleMinN
//     answers to requests sent since the cut), no further cut happens. Before the
//     first full rateWindow nothing is measured, so a cut touches only the concurrency limit.
//   - A cut is bounded. The rate drops to rateBeta times the accepted rate, never below
//     floorFraction of the peak accepted rate (the highest of the last peakWindows seconds, or
//     the highest since the first cut decayed with half-life peakHalfLife), and grows back
//     additively in absolute units: growSlow·peak per second near the peak (probing the quota
//     gently), growFast·peak per second when well below it. The concurrency limit halves with
//     the cut but not below max(2, Concurrency/4).
//
// Retry-After is honoured per retried item (the item waits at least that long, plus jitter). The
// central gate, which holds every new request for the Retry-After (capped at RetryOptions.Max), is
// set only when a whole-request 429 causes a cut while the 429s look like a quota (background
// below gateBackground) or most answers are 429s (gateShare), and at most once per gateWindow.
//
// Tuning (BENCHMARKS.md, "Pacing against a quota"): the background is sampled after 10 answers,
// not 20. Two Writers sharing a quota both cut within about a second; a Writer that waited
// longer to sample spent that time under a stricter rule (a cut needed 35% 429s), let the other
// Writer's overshoot stand, and then sampled it as background: 9–16% of requests were 429s in
// 20-second runs. Gentler probing (growSlow 0.03, was 0.05) and a deeper cut (rateBeta 0.85, was
// 0.9) oscillate less around the quota, which raised the fraction of N reached as well.
//
// Measured (BENCHMARKS.md): quota N, 1 Writer: 0.97 N with 0.9% 429s; 2 Writers, batch 100:
// 0.97–0.98 N with 3.0% 429s; 20% chaos 429s + 5% 500s: no collapse.
const (
	rateBeta       = 0.85 // a cut sets the rate to this fraction of what the server accepted
	floorFraction  = 0.5  // a cut never goes below this fraction of the recent peak accepted rate
	allTimeFloor   = 0.25 // ...nor below this fraction of the highest accepted rate since the first cut
	growSlow       = 0.03 // growth per second, as a fraction of the peak, near the peak
	growFast       = 0.25 // growth per second, as a fraction of the peak, below nearPeak·peak
	nearPeak       = 0.8
	peakWindows    = 30          // seconds of accepted-rate history for the peak
	peakHalfLife   = time.Minute // decay of the peak since the first cut
	minRate        = 1.0
	burstSeconds   = 0.1 // idle credit of the token bucket
	entryWeight    = 0.5 // weight of a throttled batch entry relative to a throttled request
	detectWindow   = time.Second
	significance   = 2.0  // z of the congestion test
	sampleMinN     = 10.0 // answers in a new epoch before its share is sampled as background (see Tuning above)
	gateShare      = 0.5  // the central gate needs a background below gateBackground (429s look
	gateBackground = 0.15 // like a quota) or this share of 429s (the server refuses most requests)
	bgDecay        = 0.25 // per second, toward a lower observed share
	gateWindow     = time.Second
	rateWindow     = time.Second // accepted-rate estimate window
)

// limit is the adaptive concurrency limit (AIMD): it halves on a congestion cut (not below lo)
// and grows by one per limit's worth of clean responses (about +1 per round trip), within
// [lo, max]. Waiters are served first come, first served, one wake-up per freed slot.
type limit struct {
	mu       sync.Mutex
	max, lo  float64
	cur      float64
	inflight int
	waiters  []chan struct{} // closed when granted a slot
}

func newLimit(max int) *limit {
	lo := math.Min(float64(max), math.Max(2, float64(max/4)))
	return &limit{max: float64(max), lo: lo, cur: float64(max)}
}

// acquire takes a slot, waiting while the in-flight count is at the limit.
func (l *limit) acquire(ctx context.Context) error {
	l.mu.Lock()
	if l.inflight < int(l.cur) && len(l.waiters) == 0 {
		l.inflight++
		l.mu.Unlock()
		return nil
	}
	ch := make(chan struct{})
	l.waiters = append(l.waiters, ch)
	l.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		l.mu.Lock()
		defer l.mu.Unlock()
		for i, w := range l.waiters {
			if w == ch {
				l.waiters = append(l.waiters[:i], l.waiters[i+1:]...)
				return ctx.Err()
			}
		}
		// Granted meanwhile: hand the slot on.
		l.inflight--
		l.grantLocked()
		return ctx.Err()
	}
}

// release frees a slot; clean responses grow the limit additively.
func (l *limit) release(clean bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.inflight--
	if clean && l.cur < l.max {
		l.cur = math.Min(l.max, l.cur+1/l.cur)
	}
	l.grantLocked()
}

func (l *limit) grantLocked() {
	for len(l.waiters) > 0 && l.inflight < int(l.cur) {
		l.inflight++
		close(l.waiters[0])
		l.waiters[0] = nil
		l.waiters = l.waiters[1:]
	}
}

// cut halves the limit, not below its floor; the pacer decides when (once per congestion epoch).
func (l *limit) cut() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cur = math.Max(l.lo, math.Floor(l.cur/2))
}

func (l *limit) state() (inflight, cur int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.inflight, int(l.cur)
}

// pacer is the shared send-rate limiter: a write-unit token bucket whose rate adapts to the
// server as described at the top of this file (never above the configured ceiling), the
// congestion detector, and a gate that holds every new request until a Retry-After has passed.
type pacer struct {
	mu      sync.Mutex
	ceiling float64   // configured units/s, 0 = none
	rate    float64   // current units/s, 0 = unlimited
	tokens  float64   // may go negative: a debt that later reservations wait out
	last    time.Time // time tokens are accounted at; may lie in the future during a gate
	gate    time.Time // no request starts before this
	gateSet time.Time // when the gate was last set
	grown   time.Time // time the rate's growth is accounted to

	// congestion detection (decaying window of answers since the last cut)
	n, k       float64
	seen       time.Time // time n and k are decayed to
	lastCut    time.Time
	cuts       int
	sampled    bool // the background has been sampled in this epoch
	samples    int
	background float64
	bgAt       time.Time // last decay of the background

	// accepted units: the current and previous estimate windows, and per-window rates for the peak
	winStart           time.Time
	winUnits           float64
	prevUnits, prevDur float64
	rates              [peakWindows]float64
	ri                 int
	longPeak           float64
	longAt             time.Time
	allPeak            float64 // highest accepted rate since the first cut, never decayed
}

func newPacer(ceiling float64) *pacer {
	return &pacer{ceiling: ceiling, rate: ceiling}
}

// reserve books units and returns how long the caller must wait before sending.
func (p *pacer) reserve(now time.Time, units float64) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.grow(now)
	var wait time.Duration
	if p.rate > 0 {
		if now.After(p.last) {
			p.tokens = math.Min(math.Max(p.rate*burstSeconds, 1), p.tokens+p.rate*now.Sub(p.last).Seconds())
			p.last = now
		}
		p.tokens -= units
		wait = p.last.Sub(now)
		if p.tokens < 0 {
			wait += time.Duration(-p.tokens / p.rate * float64(time.Second))
		}
	}
	if g := p.gate.Sub(now); g > wait {
		wait = g
	}
	return wait
}

// unreserve gives back units a reserve booked but the caller did not use.
func (p *pacer) unreserve(units float64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.rate > 0 {
		p.tokens += units
	}
}

// gateWait is how long the gate still holds requests at now.
func (p *pacer) gateWait(now time.Time) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.gate.Sub(now)
}

// grow raises the rate additively since the last accounting (not while the gate holds).
func (p *pacer) grow(now time.Time) {
	if p.cuts == 0 || p.rate == 0 {
		return
	}
	from := p.grown
	if p.gate.After(from) {
		from = p.gate
	}
	if !now.After(from) {
		return
	}
	dt := now.Sub(from).Seconds()
	p.grown = now
	if p.ceiling > 0 && p.rate >= p.ceiling {
		return
	}
	peak := p.peak(now)
	scale := math.Max(peak, p.rate) // idle (nothing accepted lately) the rate still recovers
	g := growSlow
	if p.rate < nearPeak*peak {
		g = growFast
	}
	p.rate += g * scale * dt
	if p.ceiling > 0 && p.rate > p.ceiling {
		p.rate = p.ceiling
	}
}

// accepted records units the server took.
func (p *pacer) accepted(now time.Time, units float64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.winStart.IsZero() {
		p.winStart = now
	}
	if d := now.Sub(p.winStart); d >= rateWindow {
		p.prevUnits, p.prevDur = p.winUnits, d.Seconds()
		p.rates[p.ri%peakWindows] = p.winUnits / d.Seconds()
		p.ri++
		// Skip windows nothing was accepted in, so the history spans about peakWindows seconds.
		for skip := int(d/rateWindow) - 1; skip > 0 && skip < peakWindows; skip-- {
			p.rates[p.ri%peakWindows] = 0
			p.ri++
		}
		p.winStart, p.winUnits = now, 0
	}
	p.winUnits += units
}

// estimate is the accepted rate over the last one to two windows; 0 when unknown (before the
// first full window: a rate cut on less would be guesswork).
func (p *pacer) estimate(now time.Time) float64 {
	if p.winStart.IsZero() || p.prevDur == 0 {
		return 0
	}
	d := p.prevDur + now.Sub(p.winStart).Seconds()
	if d < 0.1 || d > peakWindows*rateWindow.Seconds() {
		return 0 // too short to tell, or spanning a long idle gap: unknown
	}
	return (p.prevUnits + p.winUnits) / d
}

// peak is the highest accepted rate of the recent windows (and the current estimate), or the
// highest since the first cut decayed with a half-life of peakHalfLife, whichever is more: a lull
// in demand (the tail of a run, a slow source) must not lower the floor of the next cut.
func (p *pacer) peak(now time.Time) float64 {
	m := p.estimate(now)
	for _, r := range p.rates {
		m = math.Max(m, r)
	}
	if now.After(p.longAt) {
		if !p.longAt.IsZero() {
			p.longPeak *= math.Exp2(-now.Sub(p.longAt).Seconds() / peakHalfLife.Seconds())
		}
		p.longAt = now
	}
	p.longPeak = math.Max(p.longPeak, m)
	p.allPeak = math.Max(p.allPeak, m)
	return p.longPeak
}

// observe records one answered request sent at sentAt carrying throttle evidence (0 for none,
// 1 for a whole-request 429, less for throttled batch entries). retryAfter > 0 asks for the
// central gate should this evidence cut. It reports whether it cut the rate (the caller then cuts
// the concurrency limit).
func (p *pacer) observe(now, sentAt time.Time, evidence float64, retryAfter time.Duration) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if sentAt.Before(p.lastCut) {
		return false // answers congestion the last cut already answered
	}
	p.decay(now)
	p.n++
	p.k += evidence
	p.updateBackground(now)
	if evidence == 0 || !p.congested() {
		return false
	}
	gate := retryAfter > 0 && (p.background < gateBackground || p.n >= 4 && p.k >= gateShare*p.n)
	p.cut(now)
	if gate && (p.gateSet.IsZero() || now.Sub(p.gateSet) >= gateWindow) {
		p.pause(now, retryAfter)
		p.gateSet = now
	}
	return true
}

// addEvidence adds throttle evidence to an answer already observed (the throttled entries of a
// batch-response, known once it is parsed).
func (p *pacer) addEvidence(now, sentAt time.Time, evidence float64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if sentAt.Before(p.lastCut) || evidence <= 0 {
		return false
	}
	p.decay(now)
	p.k += evidence
	if !p.congested() {
		return false
	}
	p.cut(now)
	return true
}

func (p *pacer) decay(now time.Time) {
	if now.After(p.seen) && !p.seen.IsZero() {
		f := math.Exp(-now.Sub(p.seen).Seconds() / detectWindow.Seconds())
		p.n *= f
		p.k *= f
	}
	if now.After(p.seen) {
		p.seen = now
	}
}

// congested is the test: throttle evidence significantly above the background share.
func (p *pacer) congested() bool {
	if p.cuts > 0 && !p.sampled {
		return false // this epoch's background is not known yet (a few answers away)
	}
	b := p.background
	return p.k > b*p.n+significance*math.Sqrt(p.n*b*(1-b))+0.5
}

// updateBackground samples the share of 429s once per epoch, after sampleMinN answers to
// requests sent since the cut (the client has slowed down: what persists is not its doing), and lets the background decay toward lower
// shares seen later.
func (p *pacer) updateBackground(now time.Time) {
	if p.cuts == 0 || p.n < sampleMinN {
		return
	}
	share := math.Min(1, p.k/p.n)
	if !p.sampled {
		p.sampled = true
		if p.samples++; p.samples == 1 {
			p.background = share
		} else {
			p.background = (p.background + share) / 2
		}
		p.bgAt = now
		return
	}
	if d := now.Sub(p.bgAt); d >= time.Second && share < p.background {
		p.background += math.Min(1, bgDecay*d.Seconds()) * (share - p.background)
		p.bgAt = now
	}
}

// cut lowers the rate to rateBeta times the accepted rate, bounded below by floorFraction of the
// recent peak, and starts a new congestion epoch.
func (p *pacer) cut(now time.Time) {
	if p.cuts == 0 {
		// What was accepted before the first cut includes the server's initial burst.
		p.rates = [peakWindows]float64{}
		p.longPeak, p.allPeak = 0, 0
	}
	p.grow(now)
	peak := p.peak(now)
	base := p.rate
	if est := p.estimate(now); est >= minRate && (base == 0 || est < base) {
		base = est
	}
	if base > 0 {
		// allTimeFloor keeps a long run of cuts (scattered 429s on a slow,
		// starved machine) from decaying the rate towards nothing.
		r := math.Max(minRate, math.Max(rateBeta*base, math.Max(floorFraction*peak, allTimeFloor*p.allPeak)))
		if p.rate > 0 && r > p.rate {
			r = p.rate
		}
		if p.ceiling > 0 && r > p.ceiling {
			r = p.ceiling
		}
		p.rate = r
		p.tokens = math.Min(p.tokens, 0)
	} // else nothing measured yet: the limit and the gate have to do
	p.cuts++
	p.lastCut, p.grown = now, now
	p.n, p.k, p.sampled = 0, 0, false
}

// pause holds every new request until now+d (a Retry-After), without letting tokens accrue
// meanwhile, so the requests queued behind the gate leave spread out at the rate, not in a burst.
func (p *pacer) pause(now time.Time, d time.Duration) {
	if d <= 0 {
		return
	}
	g := now.Add(d)
	if !g.After(p.gate) {
		return
	}
	// The gate's time is no measure of what the server accepts. (A window
	// not started yet stays unstarted: moved off the zero time, it would
	// make the first estimate span the centuries since year 1.)
	if !p.winStart.IsZero() {
		p.winStart = p.winStart.Add(g.Sub(maxTime(now, p.gate)))
	}
	p.gate = g
	if p.rate > 0 {
		p.tokens = math.Min(p.tokens, 0)
		if p.last.Before(g) {
			p.last = g
		}
	}
}

func (p *pacer) currentRate() float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.rate
}

// backgroundShare is the current background share of 429s.
func (p *pacer) backgroundShare() float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.background
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
