package ingest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/fhirload/fhirload/internal/durable"
)

// Checkpoint is what is known to be finished of one object version.
type Checkpoint struct {
	Done bool  // every line has a final outcome
	Line int64 // for an object not done: lines 1..Line all have a final outcome
}

// Checkpoints store a Checkpoint per Object.Key() (uri@etag). A key never
// written reads as the zero Checkpoint. Implementations are safe for
// concurrent use.
type Checkpoints interface {
	Get(ctx context.Context, key string) (Checkpoint, error)
	Put(ctx context.Context, key string, cp Checkpoint) error
	Close() error
}

// OpenCheckpoints opens the checkpoint store at url: "file://DIR" or a plain
// folder path (one 0600 file per key), or "s3://bucket/prefix" (one small
// object per key, SSE-S3 encrypted; needs s3client). File and object names
// are a hash of the key: object names may be sensitive and keys may be long.
//
// Writes are atomic: locally a temporary file is written, fsynced and renamed
// over the checkpoint, and the folder is fsynced; on S3 one PutObject. So a
// checkpoint is never torn or empty: a failed Put (a full disk, a refused
// PutObject) returns its error and leaves the previous checkpoint as it was.
// A checkpoint that cannot be read or decoded is an error naming it, never
// "not done" (which would redo a finished object) nor "done".
func OpenCheckpoints(ctx context.Context, url string, s3client *s3.Client) (Checkpoints, error) {
	if strings.HasPrefix(url, "s3://") {
		if s3client == nil {
			return nil, fmt.Errorf("checkpoints %s: no S3 client", url)
		}
		bucket, prefix, err := ParseS3URI(url)
		if err != nil {
			return nil, fmt.Errorf("checkpoints: %w", err)
		}
		if prefix != "" && !strings.HasSuffix(prefix, "/") {
			prefix += "/"
		}
		return &s3Checkpoints{client: s3client, bucket: bucket, prefix: prefix}, nil
	}
	dir, _ := strings.CutPrefix(url, "file://")
	if dir == "" {
		return nil, errors.New("checkpoints: empty folder")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("checkpoints: %w", err)
	}
	return &fileCheckpoints{dir: dir}, nil
}

// checkpointRecord is the stored form; the key is kept for inspection.
type checkpointRecord struct {
	Key  string `json:"key"`
	Done bool   `json:"done"`
	Line int64  `json:"line"`
}

func checkpointName(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:]) + ".json"
}

// decodeCheckpoint decodes the checkpoint stored for key at where (a file
// path or an s3:// URI, for the error).
func decodeCheckpoint(b []byte, key, where string) (Checkpoint, error) {
	if len(b) == 0 {
		return Checkpoint{}, fmt.Errorf("checkpoint %s: empty file (corrupt)", where)
	}
	var rec checkpointRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return Checkpoint{}, fmt.Errorf("checkpoint %s: corrupt: %w", where, err)
	}
	if rec.Key != key {
		return Checkpoint{}, fmt.Errorf("checkpoint %s: holds another key (corrupt)", where)
	}
	if rec.Line < 0 {
		return Checkpoint{}, fmt.Errorf("checkpoint %s: negative line %d (corrupt)", where, rec.Line)
	}
	return Checkpoint{Done: rec.Done, Line: rec.Line}, nil
}

func encodeCheckpoint(key string, cp Checkpoint) ([]byte, error) {
	b, err := json.Marshal(checkpointRecord{Key: key, Done: cp.Done, Line: cp.Line})
	if err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	return b, nil
}

type fileCheckpoints struct{ dir string }

func (f *fileCheckpoints) Get(_ context.Context, key string) (Checkpoint, error) {
	p := filepath.Join(f.dir, checkpointName(key))
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return Checkpoint{}, nil
	}
	if err != nil {
		return Checkpoint{}, fmt.Errorf("checkpoint: %w", err)
	}
	return decodeCheckpoint(b, key, p)
}

func (f *fileCheckpoints) Put(_ context.Context, key string, cp Checkpoint) error {
	b, err := encodeCheckpoint(key, cp)
	if err != nil {
		return err
	}
	p := filepath.Join(f.dir, checkpointName(key))
	if err := durable.WriteFile(p, b); err != nil {
		return fmt.Errorf("checkpoint %s: %w", p, err)
	}
	return nil
}

func (f *fileCheckpoints) Close() error { return nil }

type s3Checkpoints struct {
	client         *s3.Client
	bucket, prefix string
}

func (c *s3Checkpoints) uri(key string) string {
	return "s3://" + c.bucket + "/" + c.prefix + checkpointName(key)
}

func (c *s3Checkpoints) Get(ctx context.Context, key string) (Checkpoint, error) {
	out, err := c.client.GetObject(ctx, &s3.GetObjectInput{
		Bucket: aws.String(c.bucket), Key: aws.String(c.prefix + checkpointName(key)),
	})
	if err != nil {
		var nsk *types.NoSuchKey
		if errors.As(err, &nsk) {
			return Checkpoint{}, nil
		}
		return Checkpoint{}, fmt.Errorf("checkpoint %s: %w", c.uri(key), err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(io.LimitReader(out.Body, 64<<10))
	if err != nil {
		return Checkpoint{}, fmt.Errorf("checkpoint %s: %w", c.uri(key), err)
	}
	return decodeCheckpoint(b, key, c.uri(key))
}

func (c *s3Checkpoints) Put(ctx context.Context, key string, cp Checkpoint) error {
	b, err := encodeCheckpoint(key, cp)
	if err != nil {
		return err
	}
	_, err = c.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket:               aws.String(c.bucket),
		Key:                  aws.String(c.prefix + checkpointName(key)),
		Body:                 bytes.NewReader(b),
		ContentLength:        aws.Int64(int64(len(b))),
		ContentType:          aws.String("application/json"),
		ServerSideEncryption: types.ServerSideEncryptionAes256,
	})
	if err != nil {
		return fmt.Errorf("checkpoint %s: %w", c.uri(key), err)
	}
	return nil
}

func (c *s3Checkpoints) Close() error { return nil }
