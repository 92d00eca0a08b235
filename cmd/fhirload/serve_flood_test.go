package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fhirload/fhirload/internal/testutil"
)

// TestServeBodyFloodPeakRSS is issue 14's attack on the `fhirload serve`
// process: 40 connections announce a 32 MiB body each and send all of it
// but the last byte. Signed mode answers every one 401 from its headers and
// closes it before the client's 2 s timeout; --auth none admits two bodies
// at a time (64 MiB budget) until their deadline (408) and answers the rest
// 429. The server's peak RSS (VmHWM) stays ≤ 256 MiB either way — the build
// before the fix held 1.26 GiB.
func TestServeBodyFloodPeakRSS(t *testing.T) {
	if testing.Short() {
		t.Skip("sends up to 1.3 GB over loopback; run without -short")
	}
	for _, c := range []struct {
		name    string
		flags   []string
		timeout time.Duration
		want    map[int]bool
	}{
		{"sigv4, unsigned", nil, 2 * time.Second, map[int]bool{401: true}},
		{"auth none", []string{"--auth", "none", "--body-timeout", "1s"}, 10 * time.Second, map[int]bool{408: true, 429: true}},
	} {
		t.Run(c.name, func(t *testing.T) {
			port, err := testutil.FreePort()
			if err != nil {
				t.Fatal(err)
			}
			addr := fmt.Sprintf("127.0.0.1:%d", port)
			dir := t.TempDir()
			p := startFhirload(t, dir, append([]string{"serve", "--addr", addr, "--data", filepath.Join(dir, "data")}, c.flags...)...)
			waitListening(t, p, addr)
			const announce = 32 << 20
			head := fmt.Sprintf("PUT /datastore/local/r4/Patient/p1 HTTP/1.1\r\nHost: %s\r\nContent-Type: application/fhir+json\r\nContent-Length: %d\r\n\r\n", addr, announce)
			statuses := floodConns(t, addr, head, announce-1, 40, c.timeout)
			for i, s := range statuses {
				if !c.want[s] {
					t.Errorf("connection %d: %d; want one of %v, answered and closed before the client's %s timeout", i, s, c.want, c.timeout)
				}
			}
			hwm := peakRSS(t, p.cmd.Process.Pid)
			t.Logf("statuses %v; serve peak RSS %d MiB", statuses, hwm>>20)
			if hwm > 256<<20 {
				t.Errorf("serve peak RSS %d MiB under the flood, want ≤ 256 MiB", hwm>>20)
			}
			p.stop(t)
		})
	}
}

func waitListening(t *testing.T, p *flProc, addr string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(p.log(), "listening on") {
		if p.exited() || time.Now().After(deadline) {
			t.Fatalf("fhirload serve did not start on %s\n%s", addr, p.log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// floodConns opens n connections that send head and then send bytes of
// body, and never the rest. It returns the status each was answered with,
// or 0 when the answer, or the server's closing of the connection after
// it, did not come within clientTimeout.
func floodConns(t *testing.T, addr, head string, send, n int, clientTimeout time.Duration) []int {
	t.Helper()
	chunk := []byte(strings.Repeat("a", 64<<10))
	out := make([]int, n)
	conns := make([]net.Conn, n)
	var wg sync.WaitGroup
	for i := range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = c
		wg.Go(func() {
			_ = c.SetDeadline(time.Now().Add(clientTimeout))
			go func() { // stops at the first error: the server may close early
				if _, err := io.WriteString(c, head); err != nil {
					return
				}
				for left := send; left > 0; left -= len(chunk) {
					if _, err := c.Write(chunk[:min(left, len(chunk))]); err != nil {
						return
					}
				}
			}()
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			_, err = br.ReadByte()
			var ne net.Error
			if err != nil && !(errors.As(err, &ne) && ne.Timeout()) {
				out[i] = resp.StatusCode
			}
		})
	}
	wg.Wait()
	for _, c := range conns {
		c.Close()
	}
	return out
}

// peakRSS is the process's peak resident set size (VmHWM), in bytes.
func peakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc status")
	return 0
}
