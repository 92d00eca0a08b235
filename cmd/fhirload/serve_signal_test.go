package main

import (
	"bufio"
	"errors"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestServeStopsOnFirstSignal: `fhirload serve` shuts down cleanly (exit 0)
// on the first SIGTERM or SIGINT, like any server under a process manager;
// it must not need a second signal (which exits without closing the store).
func TestServeStopsOnFirstSignal(t *testing.T) {
	bin := fhirloadBinary(t)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			cmd := exec.Command(bin, "serve", "--addr", "127.0.0.1:0", "--data", t.TempDir(), "--auth", "none")
			stderr, err := cmd.StderrPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			ready := make(chan bool, 1)
			go func() {
				s := bufio.NewScanner(stderr)
				sent := false
				for s.Scan() {
					if !sent && strings.Contains(s.Text(), "listening on") {
						ready <- true
						sent = true
					}
				}
				if !sent {
					ready <- false
				}
			}()
			select {
			case ok := <-ready:
				if !ok {
					t.Fatal("serve exited before listening")
				}
			case <-time.After(30 * time.Second):
				_ = cmd.Process.Kill()
				t.Fatal("serve did not start listening")
			}
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err := <-done:
				var ee *exec.ExitError
				if errors.As(err, &ee) {
					t.Fatalf("serve exited %d after one %v, want 0", ee.ExitCode(), sig)
				} else if err != nil {
					t.Fatal(err)
				}
			case <-time.After(20 * time.Second):
				_ = cmd.Process.Kill()
				<-done
				t.Fatalf("serve still running 20s after one %v", sig)
			}
		})
	}
}
