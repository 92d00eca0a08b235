package ingest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/fhirload/fhirload/internal/testutil"
)

func TestCheckpoints(t *testing.T) {
	ctx := context.Background()
	ep := testutil.Moto(t)
	c := testutil.S3(ep)
	bucket := testutil.Bucket(t, c)
	dir := t.TempDir()
	backends := []struct {
		name string
		url  string
		// check inspects what the backend stored for one key.
		check func(t *testing.T, key string)
	}{
		{"file url", "file://" + filepath.Join(dir, "a"), func(t *testing.T, key string) {
			info, err := os.Stat(filepath.Join(dir, "a", checkpointName(key)))
			if err != nil {
				t.Fatal(err)
			}
			if info.Mode().Perm() != 0o600 {
				t.Errorf("mode %v, want 0600", info.Mode().Perm())
			}
		}},
		{"plain dir", filepath.Join(dir, "b", "nested"), nil},
		{"s3", "s3://" + bucket + "/cp", func(t *testing.T, key string) {
			h, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String("cp/" + checkpointName(key))})
			if err != nil {
				t.Fatal(err)
			}
			if h.ServerSideEncryption != "AES256" {
				t.Errorf("SSE %q, want AES256", h.ServerSideEncryption)
			}
		}},
	}
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			cps, err := OpenCheckpoints(ctx, b.url, c)
			if err != nil {
				t.Fatal(err)
			}
			defer cps.Close()
			k1 := "s3://b/in/a b+c.ndjson@etag-1"
			k2 := "s3://b/in/a b+c.ndjson@etag-2" // another version of the same object
			if cp, err := cps.Get(ctx, k1); err != nil || cp != (Checkpoint{}) {
				t.Fatalf("unknown key: %+v, %v", cp, err)
			}
			steps := []Checkpoint{{Line: 500}, {Line: 1000}, {Done: true, Line: 1234}}
			for _, want := range steps {
				if err := cps.Put(ctx, k1, want); err != nil {
					t.Fatal(err)
				}
				if got, err := cps.Get(ctx, k1); err != nil || got != want {
					t.Fatalf("Get = %+v, %v; want %+v", got, err, want)
				}
			}
			if cp, err := cps.Get(ctx, k2); err != nil || cp != (Checkpoint{}) {
				t.Fatalf("other version: %+v, %v", cp, err)
			}
			if b.check != nil {
				b.check(t, k1)
			}
			// Concurrent writers of different keys.
			var wg sync.WaitGroup
			for i := range 8 {
				wg.Go(func() {
					if err := cps.Put(ctx, fmt.Sprintf("k%d", i), Checkpoint{Line: int64(i)}); err != nil {
						t.Error(err)
					}
				})
			}
			wg.Wait()
			for i := range 8 {
				if cp, err := cps.Get(ctx, fmt.Sprintf("k%d", i)); err != nil || cp.Line != int64(i) {
					t.Errorf("k%d: %+v, %v", i, cp, err)
				}
			}
			// A reopened store sees what was written.
			again, err := OpenCheckpoints(ctx, b.url, c)
			if err != nil {
				t.Fatal(err)
			}
			if cp, err := again.Get(ctx, k1); err != nil || !cp.Done {
				t.Fatalf("after reopen: %+v, %v", cp, err)
			}
		})
	}
	t.Run("s3 without client", func(t *testing.T) {
		if _, err := OpenCheckpoints(ctx, "s3://b/p", nil); err == nil {
			t.Fatal("no error")
		}
	})
	t.Run("no temp files left", func(t *testing.T) {
		m, _ := filepath.Glob(filepath.Join(dir, "a", ".tmp-*"))
		if len(m) != 0 {
			t.Fatalf("temp files left: %q", m)
		}
	})
}
