package loader

import (
	"context"
	"math"
	"sync"
	"time"
)

// Pacing constants. A 429 is congestion for everyone sharing the data store's quota, so the
// reaction is central: one cut of the shared rate and concurrency limit per congestion epoch
// (responses to requests sent before the last cut are old news), and one shared pause for the
// server's Retry-After, rather than every worker sleeping on its own.
const (
	rateBeta       = 0.9  // on a 429 the rate drops to this fraction of what the server accepted
	rateGrowth     = 0.05 // afterwards it grows by this fraction of the cut rate per second
	minRate        = 1.0  // units/s floor
	burstSeconds   = 0.1  // idle credit of the token bucket
	estimateWindow = time.Second
)

// limit is the adaptive concurrency limit (AIMD): it halves on a 429 and grows by one per
// limit's worth of clean responses (about +1 per round trip), within [1, max]. Waiters are served
// first come, first served, one wake-up per freed slot.
type limit struct {
	mu       sync.Mutex
	max      float64
	cur      float64
	inflight int
	lastCut  time.Time
	waiters  []chan struct{} // closed when granted a slot
}

func newLimit(max int) *limit {
	return &limit{max: float64(max), cur: float64(max)}
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

// throttled halves the limit once per congestion epoch: a 429 to a request sent before the last
// cut reports congestion that cut already answered.
func (l *limit) throttled(now, sentAt time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if sentAt.Before(l.lastCut) {
		return false
	}
	l.cur = math.Max(1, math.Floor(l.cur/2))
	l.lastCut = now
	return true
}

func (l *limit) state() (inflight, cur int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.inflight, int(l.cur)
}

// pacer is the shared send-rate limiter: a write-unit token bucket whose rate adapts to the
// server (multiplicative decrease on 429, linear growth while clean, never above the configured
// ceiling) and a gate that holds every new request until the server's Retry-After has passed.
type pacer struct {
	mu      sync.Mutex
	ceiling float64   // configured units/s, 0 = none
	rate    float64   // current units/s, 0 = unlimited
	tokens  float64   // may go negative: a debt that later reservations wait out
	last    time.Time // time tokens are accounted at; may lie in the future during a gate
	gate    time.Time // no request starts before this
	lastCut time.Time
	cutRate float64 // rate set by the last cut, base of the linear growth
	// accepted units, for estimating what the server takes: two rolling windows
	winStart           time.Time
	winUnits           float64
	prevUnits, prevDur float64
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

// gateWait is how long the gate still holds requests at now.
func (p *pacer) gateWait(now time.Time) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.gate.Sub(now)
}

func (p *pacer) grow(now time.Time) {
	if p.cutRate == 0 {
		return
	}
	from := p.lastCut
	if p.gate.After(from) {
		from = p.gate
	}
	if !now.After(from) {
		return
	}
	r := p.cutRate * (1 + rateGrowth*now.Sub(from).Seconds())
	if p.ceiling > 0 && r > p.ceiling {
		r = p.ceiling
	}
	if r > p.rate {
		p.rate = r
	}
}

// accepted records units the server took.
func (p *pacer) accepted(now time.Time, units float64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.winStart.IsZero() {
		p.winStart = now
	}
	if d := now.Sub(p.winStart); d >= estimateWindow {
		p.prevUnits, p.prevDur = p.winUnits, d.Seconds()
		p.winStart, p.winUnits = now, 0
	}
	p.winUnits += units
}

// estimate is the accepted rate over the last one to two windows; 0 when unknown.
func (p *pacer) estimate(now time.Time) float64 {
	if p.winStart.IsZero() {
		return 0
	}
	d := p.prevDur + now.Sub(p.winStart).Seconds()
	if d < 0.1 {
		return 0
	}
	return (p.prevUnits + p.winUnits) / d
}

// throttled answers a 429: extend the gate to now+retryAfter and, once per congestion epoch, cut
// the rate to rateBeta times what the server was accepting. It reports whether it cut.
func (p *pacer) throttled(now, sentAt time.Time, retryAfter time.Duration) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pause(now, retryAfter)
	if sentAt.Before(p.lastCut) {
		return false
	}
	base := p.rate
	if est := p.estimate(now); est > 0 && (base == 0 || est < base) {
		base = est
	}
	if base == 0 {
		return false // nothing measured yet: the gate alone has to do
	}
	p.rate = math.Max(minRate, rateBeta*base)
	if p.ceiling > 0 && p.rate > p.ceiling {
		p.rate = p.ceiling
	}
	p.cutRate, p.lastCut = p.rate, now
	p.tokens = math.Min(p.tokens, 0)
	p.prevUnits, p.prevDur, p.winUnits = 0, 0, 0
	p.winStart = now
	if p.gate.After(now) {
		p.winStart = p.gate
	}
	return true
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
	p.gate = g
	if p.rate > 0 {
		p.tokens = math.Min(p.tokens, 0)
		if p.last.Before(g) {
			p.last = g
		}
	}
}

// pauseFor is pause with locking, for Retry-After on retryable statuses other than 429.
func (p *pacer) pauseFor(now time.Time, d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pause(now, d)
}

func (p *pacer) currentRate() float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.rate
}
