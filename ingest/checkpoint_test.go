package ingest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
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

// mountTmpfs mounts a tmpfs of the given size on a fresh folder for the
// test (the tests run as root, here and on CI).
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0700", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount a %s tmpfs (needs root): %v: %s", size, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// TestCheckpointFullDisk: on a full disk a checkpoint Put returns the error
// and leaves the previous checkpoint whole (never torn, never empty), and no
// temporary file; once there is space again, Put works.
func TestCheckpointFullDisk(t *testing.T) {
	ctx := context.Background()
	mnt := mountTmpfs(t, "64k")
	cps, err := OpenCheckpoints(ctx, filepath.Join(mnt, "cp"), nil)
	if err != nil {
		t.Fatal(err)
	}
	const key = "s3://b/in/a.ndjson@etag-1"
	if err := cps.Put(ctx, key, Checkpoint{Line: 500}); err != nil {
		t.Fatal(err)
	}
	filler := filepath.Join(mnt, "filler")
	if err := os.WriteFile(filler, make([]byte, 64<<10), 0o600); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("filling the disk: %v", err)
	}
	for _, cp := range []Checkpoint{{Line: 1000}, {Done: true}} {
		err := cps.Put(ctx, key, cp)
		if !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("Put on a full disk = %v, want ENOSPC", err)
		}
		if !strings.Contains(err.Error(), filepath.Join(mnt, "cp", checkpointName(key))) {
			t.Errorf("error does not name the checkpoint: %v", err)
		}
		if got, err := cps.Get(ctx, key); err != nil || got != (Checkpoint{Line: 500}) {
			t.Fatalf("after a failed Put: %+v, %v; want the previous checkpoint", got, err)
		}
	}
	if tmp, _ := filepath.Glob(filepath.Join(mnt, "cp", ".tmp-*")); len(tmp) != 0 {
		t.Errorf("temporary files left: %v", tmp)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if err := cps.Put(ctx, key, Checkpoint{Done: true}); err != nil {
		t.Fatalf("Put once there is space: %v", err)
	}
	if got, err := cps.Get(ctx, key); err != nil || !got.Done {
		t.Fatalf("Get = %+v, %v", got, err)
	}
}

// TestCheckpointCorruptIsAnError: a checkpoint that is empty, not JSON, of
// another key or out of range reads as an error naming the file or object
// — never as "not done" (the object would be redone) or "done".
func TestCheckpointCorruptIsAnError(t *testing.T) {
	ctx := context.Background()
	c := testutil.S3(testutil.Moto(t))
	bucket := testutil.Bucket(t, c)
	const key = "s3://b/in/a.ndjson@etag-1"
	contents := map[string]string{
		"empty":       "",
		"not JSON":    `{"key":"s3://b/in/a.ndjson@etag-1","done":tr`,
		"another key": `{"key":"s3://b/in/other.ndjson@etag-1","done":true,"line":0}`,
		"negative":    `{"key":"s3://b/in/a.ndjson@etag-1","done":false,"line":-5}`,
	}
	for name, content := range contents {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			where := filepath.Join(dir, checkpointName(key))
			if err := os.WriteFile(where, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			local, err := OpenCheckpoints(ctx, dir, nil)
			if err != nil {
				t.Fatal(err)
			}
			if cp, err := local.Get(ctx, key); err == nil || !strings.Contains(err.Error(), where) {
				t.Errorf("local: Get = %+v, %v; want an error naming %s", cp, err, where)
			}
			prefix := "cp-" + strings.ReplaceAll(name, " ", "-")
			if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket),
				Key: aws.String(prefix + "/" + checkpointName(key)), Body: strings.NewReader(content)}); err != nil {
				t.Fatal(err)
			}
			remote, err := OpenCheckpoints(ctx, "s3://"+bucket+"/"+prefix, c)
			if err != nil {
				t.Fatal(err)
			}
			uri := "s3://" + bucket + "/" + prefix + "/" + checkpointName(key)
			if cp, err := remote.Get(ctx, key); err == nil || !strings.Contains(err.Error(), uri) {
				t.Errorf("s3: Get = %+v, %v; want an error naming %s", cp, err, uri)
			}
		})
	}
}

// TestCheckpointS3Refused: a checkpoint store whose bucket is missing fails
// Put and Get with the reason (the runner then stops without acknowledging),
// rather than reading as "not done".
func TestCheckpointS3Refused(t *testing.T) {
	ctx := context.Background()
	c := testutil.S3(testutil.Moto(t))
	cps, err := OpenCheckpoints(ctx, "s3://no-such-bucket-for-checkpoints/cp", c)
	if err != nil {
		t.Fatal(err)
	}
	const key = "s3://b/in/a.ndjson@etag-1"
	if err := cps.Put(ctx, key, Checkpoint{Done: true}); err == nil || !strings.Contains(err.Error(), "NoSuchBucket") {
		t.Errorf("Put = %v, want NoSuchBucket", err)
	}
	if cp, err := cps.Get(ctx, key); err == nil || !strings.Contains(err.Error(), "NoSuchBucket") {
		t.Errorf("Get = %+v, %v; want NoSuchBucket", cp, err)
	}
}
