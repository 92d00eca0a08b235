//go:build race

package transform

// raceEnabled: the race detector slows the single-goroutine walker about tenfold, so the
// whole-population tests sample their lines under -race (every line without it).
const raceEnabled = true
