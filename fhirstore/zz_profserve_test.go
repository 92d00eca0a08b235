package fhirstore

import (
	"context"
	"net"
	"os"
	"testing"
	"time"
)

// TEMPORARY profiling harness (to be deleted).
func TestZZProfServe(t *testing.T) {
	dir := os.Getenv("FS_PROF_DIR")
	if dir == "" {
		t.Skip()
	}
	s, err := Open(context.Background(), Options{Dir: dir, Keys: []Key{{AccessKeyID: "AKIDFHIRLOADBENCH", SecretAccessKey: "fhirload-bench-secret", Scopes: []string{"system/*.*"}}}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	l, err := net.Listen("tcp", "127.0.0.1:18099")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for {
			if _, err := os.Stat(dir + ".stop"); err == nil {
				cancel()
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	_ = s.Serve(ctx, l)
}
