// Package testutil holds helpers shared by the tests of several packages:
// a moto_server (S3 + SQS emulator) on loopback, and AWS clients pointed at it.
package testutil

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
)

var (
	motoOnce sync.Once
	motoURL  string
	motoErr  error
)

// Moto returns the endpoint of a moto_server on loopback. It uses
// $FHIRLOAD_TEST_MOTO_ENDPOINT when set (.ci/run starts one), else starts one
// moto_server for the test binary (it exits with the binary). A missing
// moto_server fails the test: the S3/SQS features are not optional.
func Moto(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		// The test pyramid's top: S3/SQS end to end run in the full suite.
		t.Skip("S3/SQS end to end against moto: runs without -short")
	}
	motoOnce.Do(func() {
		if u := os.Getenv("FHIRLOAD_TEST_MOTO_ENDPOINT"); u != "" {
			motoURL = u
			return
		}
		port, err := FreePort()
		if err != nil {
			motoErr = err
			return
		}
		cmd := exec.Command("moto_server", "-H", "127.0.0.1", "-p", fmt.Sprint(port))
		cmd.Stdout, cmd.Stderr = nil, nil
		cmd.Env = motoEnv(os.Environ())
		// The emulator dies with the test binary.
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			motoErr = fmt.Errorf("start moto_server: %w", err)
			return
		}
		motoURL = fmt.Sprintf("http://127.0.0.1:%d", port)
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			resp, err := http.Get(motoURL + "/moto-api/")
			if err == nil {
				resp.Body.Close()
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		motoErr = fmt.Errorf("moto_server did not start on %s", motoURL)
	})
	if motoErr != nil {
		t.Fatalf("moto: %v", motoErr)
	}
	return motoURL
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// AWSConfig returns an aws.Config for the emulator with static test
// credentials. Each client gets its own plain HTTP client (AWS_CA_BUNDLE is
// set on this machine and must not be applied to loopback HTTP).
func AWSConfig(endpoint string) aws.Config {
	return aws.Config{
		Region:                     "us-east-1",
		Credentials:                credentials.NewStaticCredentialsProvider("testing", "testing", ""),
		BaseEndpoint:               aws.String(endpoint),
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	}
}

// S3 returns a path-style S3 client for the emulator.
func S3(endpoint string) *s3.Client {
	return s3.NewFromConfig(AWSConfig(endpoint), func(o *s3.Options) {
		o.UsePathStyle = true
		o.HTTPClient = &http.Client{Timeout: 60 * time.Second}
	})
}

// SQS returns an SQS client for the emulator.
func SQS(endpoint string) *sqs.Client {
	return sqs.NewFromConfig(AWSConfig(endpoint), func(o *sqs.Options) {
		o.HTTPClient = &http.Client{Timeout: 60 * time.Second}
	})
}

// Keys lists the keys of bucket under prefix (one page: up to 1,000).
func Keys(t testing.TB, c *s3.Client, bucket, prefix string) []string {
	t.Helper()
	out, err := c.ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String(prefix)})
	if err != nil {
		t.Fatalf("list s3://%s/%s: %v", bucket, prefix, err)
	}
	keys := make([]string, 0, len(out.Contents))
	for _, o := range out.Contents {
		keys = append(keys, aws.ToString(o.Key))
	}
	return keys
}

// Bucket creates a uniquely named bucket and returns its name.
func Bucket(t testing.TB, c *s3.Client) string {
	t.Helper()
	name := fmt.Sprintf("t-%d", time.Now().UnixNano())
	if _, err := c.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		t.Fatalf("create bucket: %v", err)
	}
	return name
}

// motoEnv is env without the AWS variables set empty: a test that sets
// them (AWS_PROFILE= for the commands it runs in-process) may be the first
// to need moto, and moto_server's botocore answers some calls with 500
// under AWS_PROFILE="" (CreateQueue, for one).
func motoEnv(env []string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		if k, v, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "AWS_") && v == "" {
			continue
		}
		out = append(out, kv)
	}
	return out
}
