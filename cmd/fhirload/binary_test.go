package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// TestMain removes the built binary after the tests.
func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" && binErr == nil {
		_ = os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// fhirloadBinary builds the fhirload command once per test binary, for tests
// that need a real process (signals, SIGKILL).
func fhirloadBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		// Process-level tests (signals, crashes, full-data runs, real S3/SQS)
		// are the pyramid's top: they run in the full suite.
		t.Skip("end to end through the built binary: runs without -short")
	}
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "fhirload-bin-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "fhirload")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			binErr = err
			binPath = strings.TrimSpace(string(out))
		}
	})
	if binErr != nil {
		t.Fatalf("build fhirload: %v: %s", binErr, binPath)
	}
	return binPath
}
