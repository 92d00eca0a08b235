package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"go.uber.org/zap"

	"github.com/fhirload/fhirload/pipeline"
)

// progressLine renders the numbers of a progress line: the text of the
// terminal line and the fields of the log line.
type progressLine func(rep *pipeline.Report) (string, []zap.Field)

// loadProgress is the progress line of run, validate and replay.
func loadProgress(rep *pipeline.Report) (string, []zap.Field) {
	return fmt.Sprintf("%d objects  %d lines  %d loaded  %d dead-lettered  %.0f resources/s",
			rep.Objects, rep.Lines, rep.Loaded, rep.DeadLettered, rep.ResourcesPerSecond),
		[]zap.Field{zap.Int64("objects", rep.Objects), zap.Int64("lines", rep.Lines),
			zap.Int64("loaded", rep.Loaded), zap.Int64("dead_lettered", rep.DeadLettered),
			zap.Float64("resources_per_second", rep.ResourcesPerSecond)}
}

// startProgress shows a live line on a terminal, or logs progress every 30 s
// otherwise, with an ETA when the total size of the input is known
// (totalBytes > 0: local files). The returned function stops it.
func startProgress(r *pipeline.Runner, totalBytes int64, stderr io.Writer, log *zap.Logger) func() {
	return startProgressWith(r, totalBytes, stderr, log, loadProgress)
}

// startProgressWith is startProgress with the numbers line renders.
func startProgressWith(r *pipeline.Runner, totalBytes int64, stderr io.Writer, log *zap.Logger, line progressLine) func() {
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
				eta := estimate(r.BytesRead(), totalBytes, rep.Seconds)
				text, fields := line(rep)
				if tty {
					fmt.Fprintf(stderr, "\r\033[K%s%s", text, etaText(eta))
				} else {
					if eta > 0 {
						fields = append(fields, zap.Duration("eta", eta))
					}
					log.Info("progress", fields...)
				}
			}
		}
	}()
	return func() { close(stop); <-done }
}

// estimate is the time left at the average rate so far; 0 when unknown.
func estimate(read, total int64, seconds float64) time.Duration {
	if total <= 0 || read <= 0 || read >= total || seconds <= 0 {
		return 0
	}
	left := float64(total-read) / (float64(read) / seconds)
	return time.Duration(left * float64(time.Second)).Round(time.Second)
}

func etaText(eta time.Duration) string {
	if eta <= 0 {
		return ""
	}
	return "  ETA " + eta.String()
}
