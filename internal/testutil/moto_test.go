package testutil

import (
	"context"
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
