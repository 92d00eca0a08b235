package ingest

import (
	"context"
	"fmt"
	"strconv"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
)

// sqsBatchMax is SendMessageBatch's limit of entries per call.
const sqsBatchMax = 10

// Enqueue fans the objects under uri ("s3://bucket/prefix", filtered by
// src's suffixes) out to queueURL as one S3-event-shaped message each (see
// ParseNotification), sent with SendMessageBatch ten at a time, so that any
// number of SQS workers share them. It returns the number of messages sent;
// on error, the messages counted were sent and the others may not have been.
func Enqueue(ctx context.Context, client *sqs.Client, queueURL string, src *S3Source, uri string) (int, error) {
	sent := 0
	var batch []types.SendMessageBatchRequestEntry
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		out, err := client.SendMessageBatch(ctx, &sqs.SendMessageBatchInput{
			QueueUrl: aws.String(queueURL), Entries: batch,
		})
		if err != nil {
			return fmt.Errorf("enqueue to %s: %w", queueURL, err)
		}
		sent += len(out.Successful)
		if len(out.Failed) > 0 {
			f := out.Failed[0]
			return fmt.Errorf("enqueue to %s: %d of %d messages refused (first: %s %s)",
				queueURL, len(out.Failed), len(batch), aws.ToString(f.Code), aws.ToString(f.Message))
		}
		batch = batch[:0]
		return nil
	}
	err := src.List(ctx, uri, func(o Object) error {
		bucket, key, _ := ParseS3URI(o.URI)
		body, err := enqueueMessage(bucket, key, o.ETag, o.Size)
		if err != nil {
			return err
		}
		batch = append(batch, types.SendMessageBatchRequestEntry{
			Id:          aws.String(strconv.Itoa(len(batch))),
			MessageBody: aws.String(string(body)),
		})
		if len(batch) == sqsBatchMax {
			return flush()
		}
		return nil
	})
	if err != nil {
		return sent, err
	}
	if err := flush(); err != nil {
		return sent, err
	}
	return sent, nil
}
