package fhirstore

import (
	"math"
	"sync"
	"time"
)

// writeUnits is the HealthLake cost of a write request: one unit per started
// kilobyte of body, at least one.
func writeUnits(bodyLen int) float64 {
	if bodyLen <= 0 {
		return 1
	}
	return float64((bodyLen + 1023) / 1024)
}

// bucket is a token bucket of write units refilled at rate per second, with a
// burst of one second's worth. A request costing more than the burst is let
// through when the bucket is full and leaves it in debt, so no request size is
// refused forever.
type bucket struct {
	mu     sync.Mutex
	rate   float64
	burst  float64
	tokens float64
	last   time.Time
	now    func() time.Time
}

func newBucket(rate float64, now func() time.Time) *bucket {
	burst := math.Max(rate, 1)
	return &bucket{rate: rate, burst: burst, tokens: burst, last: now(), now: now}
}

// take spends units if available. Otherwise it spends nothing and returns
// how long until they are, rounded up to whole seconds (at least 1).
func (b *bucket) take(units float64) (ok bool, retryAfterSeconds int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	if el := now.Sub(b.last).Seconds(); el > 0 {
		b.tokens = math.Min(b.burst, b.tokens+el*b.rate)
	}
	b.last = now
	need := math.Min(units, b.burst)
	if b.tokens >= need {
		b.tokens -= units
		return true, 0
	}
	wait := math.Ceil((need - b.tokens) / b.rate)
	return false, max(int(wait), 1)
}
