package testutil

import (
	"context"
	"slices"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
)

func TestMotoS3AndSQS(t *testing.T) {
	ep := Moto(t)
	b := Bucket(t, S3(ep))
	if b == "" {
		t.Fatal("no bucket")
	}
	q, err := SQS(ep).CreateQueue(context.Background(), &sqs.CreateQueueInput{QueueName: aws.String("q-" + b)})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(q.QueueUrl) == "" {
		t.Fatal("no queue url")
	}
}

// TestMotoEnv: the emulator's environment drops the AWS variables set empty
// and keeps everything else.
func TestMotoEnv(t *testing.T) {
	got := motoEnv([]string{"PATH=/bin", "AWS_PROFILE=", "AWS_REGION=us-east-1", "AWS_SESSION_TOKEN=", "HOME=", "AWS_CA_BUNDLE=/etc/ca"})
	want := []string{"PATH=/bin", "AWS_REGION=us-east-1", "HOME=", "AWS_CA_BUNDLE=/etc/ca"}
	if !slices.Equal(got, want) {
		t.Fatalf("motoEnv: %q, want %q", got, want)
	}
}
