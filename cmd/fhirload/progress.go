package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"go.uber.org/zap"

	"github.com/fhirload/fhirload/pipeline"
)

// startProgress shows a live line on a terminal, or logs progress every 30 s
// otherwise. The returned function stops it.
func startProgress(r *pipeline.Runner, stderr io.Writer, log *zap.Logger) func() {
	tty := false
	if f, ok := stderr.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			tty = true
		}
	}
	every := 30 * time.Second
	if tty {
		every = 500 * time.Millisecond
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-stop:
				if tty {
					fmt.Fprint(stderr, "\r\033[K")
				}
				return
			case <-t.C:
				rep := r.Report(false)
				if tty {
					fmt.Fprintf(stderr, "\r\033[K%d objects  %d lines  %d loaded  %d dead-lettered  %.0f resources/s",
						rep.Objects, rep.Lines, rep.Loaded, rep.DeadLettered, rep.ResourcesPerSecond)
				} else {
					log.Info("progress", zap.Int64("objects", rep.Objects), zap.Int64("lines", rep.Lines),
						zap.Int64("loaded", rep.Loaded), zap.Int64("dead_lettered", rep.DeadLettered),
						zap.Float64("resources_per_second", rep.ResourcesPerSecond))
				}
			}
		}
	}()
	return func() { close(stop); <-done }
}
