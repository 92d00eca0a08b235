package ingest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/fhirload/fhirload/internal/testutil"
)

// drop is a bucket whose object-created notifications go to a queue.
type drop struct {
	s3     *s3.Client
	sqs    *sqs.Client
	bucket string
	queue  string
}

func newDrop(t *testing.T, notify bool) drop {
	t.Helper()
	ctx := context.Background()
	ep := testutil.Moto(t)
	d := drop{s3: testutil.S3(ep), sqs: testutil.SQS(ep)}
	d.bucket = testutil.Bucket(t, d.s3)
	q, err := d.sqs.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String("q-" + d.bucket)})
	if err != nil {
		t.Fatal(err)
	}
	d.queue = aws.ToString(q.QueueUrl)
	if !notify {
		return d
	}
	attrs, err := d.sqs.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl: q.QueueUrl, AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameQueueArn},
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = d.s3.PutBucketNotificationConfiguration(ctx, &s3.PutBucketNotificationConfigurationInput{
		Bucket: aws.String(d.bucket),
		NotificationConfiguration: &s3types.NotificationConfiguration{
			QueueConfigurations: []s3types.QueueConfiguration{{
				QueueArn: aws.String(attrs.Attributes["QueueArn"]),
				Events:   []s3types.Event{"s3:ObjectCreated:*"},
			}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// counts returns the queue's visible and in-flight message counts.
func (d drop) counts(t *testing.T) (visible, inFlight int) {
	t.Helper()
	out, err := d.sqs.GetQueueAttributes(context.Background(), &sqs.GetQueueAttributesInput{
		QueueUrl: aws.String(d.queue),
		AttributeNames: []sqstypes.QueueAttributeName{
			sqstypes.QueueAttributeNameApproximateNumberOfMessages,
			sqstypes.QueueAttributeNameApproximateNumberOfMessagesNotVisible,
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	visible, _ = strconv.Atoi(out.Attributes["ApproximateNumberOfMessages"])
	inFlight, _ = strconv.Atoi(out.Attributes["ApproximateNumberOfMessagesNotVisible"])
	return visible, inFlight
}

// waitCounts polls until the queue shows the counts, failing after a generous
// deadline (a condition wait, not a timing assertion).
func (d drop) waitCounts(t *testing.T, visible, inFlight int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		v, f := d.counts(t)
		if v == visible && f == inFlight {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue has %d visible, %d in flight; want %d, %d", v, f, visible, inFlight)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// worker runs Receive in the background; stop cancels it, waits, closes the
// source and returns Receive's error.
type worker struct {
	src    *SQSSource
	out    chan Object
	cancel context.CancelFunc
	done   chan error
}

func startWorker(t *testing.T, d drop, opts SQSOptions, buffer int) *worker {
	t.Helper()
	opts.QueueURL = d.queue
	if opts.WaitSeconds == 0 {
		opts.WaitSeconds = 1
	}
	w := &worker{
		src:  NewSQSSource(d.sqs, &S3Source{Client: d.s3}, opts),
		out:  make(chan Object, buffer),
		done: make(chan error, 1),
	}
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	go func() { w.done <- w.src.Receive(ctx, w.out) }()
	t.Cleanup(func() { w.stop() })
	return w
}

func (w *worker) stop() error {
	w.cancel()
	err := <-w.done
	w.done <- err // idempotent for Cleanup
	w.src.Close()
	return err
}

func (w *worker) next(t *testing.T) Object {
	t.Helper()
	select {
	case o := <-w.out:
		return o
	case <-time.After(30 * time.Second):
		t.Fatal("no object received")
		return Object{}
	}
}

func TestSQSDeliverAndAck(t *testing.T) {
	d := newDrop(t, true)
	bodies := map[string]string{
		"in/Patient one.ndjson":    "{\"id\":\"p1\"}\n",
		"in/a+b%20c ünï.ndjson":    "{\"id\":\"p2\"}\n{\"id\":\"p3\"}",
		"in/Observation.ndjson.gz": "{\"id\":\"o1\"}\r\n",
	}
	for k, b := range bodies {
		data := []byte(b)
		if strings.HasSuffix(k, ".gz") {
			data = gz(t, b)
		}
		put(t, d.s3, d.bucket, k, data)
	}
	w := startWorker(t, d, SQSOptions{}, 10)
	got := map[string]string{}
	for range bodies {
		o := w.next(t)
		text, err := readObject(t, o)
		if err != nil {
			t.Fatalf("%s: %v", o.URI, err)
		}
		got[o.URI] = text
		if o.ETag == "" || o.Size <= 0 {
			t.Errorf("%s: etag %q size %d", o.URI, o.ETag, o.Size)
		}
		if err := o.Ack(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
	}
	for k, b := range bodies {
		want := strings.ReplaceAll(b, "\r", "")
		if !strings.HasSuffix(want, "\n") {
			want += "\n"
		}
		if got["s3://"+d.bucket+"/"+k] != want {
			t.Errorf("%s: got %q want %q", k, got["s3://"+d.bucket+"/"+k], want)
		}
	}
	// Everything acked, the s3:TestEvent deleted: nothing visible, nothing in flight.
	d.waitCounts(t, 0, 0)
	if err := w.stop(); err != nil {
		t.Fatalf("Receive: %v", err)
	}
}

func TestSQSAckErrorRedelivers(t *testing.T) {
	d := newDrop(t, true)
	put(t, d.s3, d.bucket, "x.ndjson", []byte("x\n"))
	w := startWorker(t, d, SQSOptions{}, 1)
	first := w.next(t)
	if err := first.Ack(context.Background(), errors.New("target down")); err != nil {
		t.Fatal(err)
	}
	again := w.next(t)
	if again.Key() != first.Key() {
		t.Fatalf("redelivered %s, want %s", again.Key(), first.Key())
	}
	if err := again.Ack(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	d.waitCounts(t, 0, 0)
}

func TestSQSNotEvent(t *testing.T) {
	tests := []struct {
		name   string
		hook   error // what OnNotEvent returns
		remain int   // messages left on the queue
	}{
		{"dead-lettered then deleted", nil, 0},
		{"dead-letter failed: left", errors.New("store down"), 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newDrop(t, false)
			sent, err := d.sqs.SendMessage(context.Background(), &sqs.SendMessageInput{
				QueueUrl: aws.String(d.queue), MessageBody: aws.String("this is not an event"),
			})
			if err != nil {
				t.Fatal(err)
			}
			type call struct{ id, body, reason string }
			calls := make(chan call, 10)
			w := startWorker(t, d, SQSOptions{
				VisibilityTimeout: time.Hour, // a left message stays in flight
				OnNotEvent: func(_ context.Context, id string, body []byte, reason string) error {
					calls <- call{id, string(body), reason}
					return tt.hook
				},
			}, 1)
			var c call
			select {
			case c = <-calls:
			case <-time.After(30 * time.Second):
				t.Fatal("OnNotEvent not called")
			}
			if c.id != aws.ToString(sent.MessageId) || c.body != "this is not an event" || !strings.Contains(c.reason, ErrNotEvent.Error()) {
				t.Fatalf("OnNotEvent(%q, %q, %q)", c.id, c.body, c.reason)
			}
			d.waitCounts(t, 0, tt.remain)
			w.stop()
			select {
			case o := <-w.out:
				t.Fatalf("object %s from a non-event", o.URI)
			default:
			}
		})
	}
}

func TestSQSTestEventAndDeletesIgnored(t *testing.T) {
	d := newDrop(t, true) // the configuration sends an s3:TestEvent
	for _, body := range []string{
		`{"Records":[{"eventSource":"aws:s3","eventName":"ObjectRemoved:Delete","s3":{"bucket":{"name":"b"},"object":{"key":"k"}}}]}`,
		`{"detail-type":"Object Deleted","source":"aws.s3","detail":{"bucket":{"name":"b"},"object":{"key":"k"}}}`,
	} {
		if _, err := d.sqs.SendMessage(context.Background(), &sqs.SendMessageInput{QueueUrl: aws.String(d.queue), MessageBody: aws.String(body)}); err != nil {
			t.Fatal(err)
		}
	}
	if v, _ := d.counts(t); v != 3 {
		t.Fatalf("%d messages before the worker, want 3", v)
	}
	w := startWorker(t, d, SQSOptions{OnNotEvent: func(context.Context, string, []byte, string) error {
		t.Error("OnNotEvent called for an event")
		return nil
	}}, 1)
	d.waitCounts(t, 0, 0)
	w.stop()
	if len(w.out) != 0 {
		t.Fatal("objects handed out for events without created objects")
	}
}

func TestSQSHeartbeat(t *testing.T) {
	d := newDrop(t, true)
	put(t, d.s3, d.bucket, "slow.ndjson", []byte("x\n"))
	w := startWorker(t, d, SQSOptions{VisibilityTimeout: 2 * time.Second, Heartbeat: 400 * time.Millisecond}, 1)
	o := w.next(t)
	// Hold the object for several visibility timeouts while another consumer
	// polls: without the heartbeat the message would reappear after 2s.
	other := 0
	for range 6 {
		res, err := d.sqs.ReceiveMessage(context.Background(), &sqs.ReceiveMessageInput{
			QueueUrl: aws.String(d.queue), WaitTimeSeconds: 1, MaxNumberOfMessages: 10,
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range res.Messages {
			if refs, _ := ParseNotification([]byte(aws.ToString(m.Body))); len(refs) > 0 {
				other++
			}
		}
	}
	if other != 0 {
		t.Fatalf("message redelivered %d times while its object was in flight", other)
	}
	if n := len(w.out); n != 0 {
		t.Fatalf("worker received the in-flight message again (%d)", n)
	}
	if err := o.Ack(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	d.waitCounts(t, 0, 0)
}

func TestSQSShutdownReleasesUndispatched(t *testing.T) {
	d := newDrop(t, false)
	put(t, d.s3, d.bucket, "a.ndjson", []byte("a\n"))
	if _, err := Enqueue(context.Background(), d.sqs, d.queue, &S3Source{Client: d.s3}, "s3://"+d.bucket); err != nil {
		t.Fatal(err)
	}
	// Nobody reads out: the worker holds the message, blocked on the send.
	// Stopped once the worker has the message (OnReceived), not once the
	// queue shows it in flight: that happens before the response reaches
	// the worker, and a receive canceled in between leaves the message
	// hidden for its visibility timeout (at-least-once: it comes back then).
	received := make(chan struct{}, 1)
	w := startWorker(t, d, SQSOptions{VisibilityTimeout: time.Hour, MaxMessages: 1,
		OnReceived: func() { received <- struct{}{} }}, 0)
	select {
	case <-received:
	case <-time.After(20 * time.Second):
		t.Fatal("the worker received nothing")
	}
	d.waitCounts(t, 0, 1)
	if err := w.stop(); err != nil {
		t.Fatal(err)
	}
	// Released at once, not after the hour.
	d.waitCounts(t, 1, 0)
}

func TestSQSMultipartUploadDeliveredPerEvent(t *testing.T) {
	d := newDrop(t, true)
	ctx := context.Background()
	key := "big/multi part.ndjson"
	mp, err := d.s3.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String(d.bucket), Key: aws.String(key)})
	if err != nil {
		t.Fatal(err)
	}
	part1 := bytes.Repeat([]byte("{\"part\":1}\n"), (5<<20)/11+1) // parts but the last are >= 5 MiB
	part2 := []byte("{\"part\":2}\n")
	var parts []s3types.CompletedPart
	for i, p := range [][]byte{part1, part2} {
		up, err := d.s3.UploadPart(ctx, &s3.UploadPartInput{
			Bucket: aws.String(d.bucket), Key: aws.String(key), UploadId: mp.UploadId,
			PartNumber: aws.Int32(int32(i + 1)), Body: bytes.NewReader(p),
		})
		if err != nil {
			t.Fatal(err)
		}
		parts = append(parts, s3types.CompletedPart{ETag: up.ETag, PartNumber: aws.Int32(int32(i + 1))})
	}
	if _, err := d.s3.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket: aws.String(d.bucket), Key: aws.String(key), UploadId: mp.UploadId,
		MultipartUpload: &s3types.CompletedMultipartUpload{Parts: parts},
	}); err != nil {
		t.Fatal(err)
	}
	visible, _ := d.counts(t)
	events := visible - 1 // the s3:TestEvent
	if events < 1 {
		t.Fatalf("%d events for the upload", events)
	}
	w := startWorker(t, d, SQSOptions{}, 10)
	var keys []string
	for range events {
		o := w.next(t)
		keys = append(keys, o.Key())
		if o.URI != "s3://"+d.bucket+"/"+key || !strings.Contains(o.ETag, "-2") {
			t.Errorf("object %s etag %s", o.URI, o.ETag)
		}
		if err := o.Ack(ctx, nil); err != nil {
			t.Fatal(err)
		}
	}
	// Every event is delivered with the same checkpoint key: deduplication is
	// the pipeline's, through checkpoints.
	for _, k := range keys {
		if k != keys[0] {
			t.Errorf("keys differ: %q", keys)
		}
	}
	t.Logf("%d events for one multipart upload", events)
	d.waitCounts(t, 0, 0)
}

func TestEnqueue(t *testing.T) {
	d := newDrop(t, false)
	ctx := context.Background()
	want := map[string]bool{}
	for i := range 23 {
		k := fmt.Sprintf("night/%02d %s.ndjson", i, hostileKeys[i%len(hostileKeys)][3:])
		if i%2 == 0 {
			k += ".gz"
			put(t, d.s3, d.bucket, k, gz(t, "x\n"))
		} else {
			put(t, d.s3, d.bucket, k, []byte("x\n"))
		}
		want["s3://"+d.bucket+"/"+k] = true
	}
	put(t, d.s3, d.bucket, "night/readme.txt", []byte("skip"))
	put(t, d.s3, d.bucket, "day/x.ndjson", []byte("skip"))
	n, err := Enqueue(ctx, d.sqs, d.queue, &S3Source{Client: d.s3, PageSize: 5}, "s3://"+d.bucket+"/night/")
	if err != nil || n != len(want) {
		t.Fatalf("Enqueue = %d, %v; want %d", n, err, len(want))
	}
	d.waitCounts(t, len(want), 0)

	// Two workers share the queue. A standard queue delivers at least once:
	// a message may now and then reach both (moto does this under load, as
	// SQS may), and the loads are idempotent, so a duplicate is logged, not
	// failed; every object must arrive, nothing else, and the acks must
	// leave the queue empty.
	w1 := startWorker(t, d, SQSOptions{}, 0)
	w2 := startWorker(t, d, SQSOptions{}, 0)
	got := map[string]int{}
	deadline := time.After(60 * time.Second)
	for len(got) < len(want) {
		var o Object
		select {
		case o = <-w1.out:
		case o = <-w2.out:
		case <-deadline:
			t.Fatalf("timeout: %d of %d objects received", len(got), len(want))
		}
		if _, err := readObject(t, o); err != nil {
			t.Error(err)
		}
		if !want[o.URI] {
			t.Errorf("unexpected %s", o.URI)
		}
		if got[o.URI]++; got[o.URI] > 1 {
			t.Logf("%s delivered %d times (at-least-once)", o.URI, got[o.URI])
		}
		if err := o.Ack(ctx, nil); err != nil {
			t.Error(err)
		}
	}
	d.waitCounts(t, 0, 0)
}

func TestSQSMissingObject(t *testing.T) {
	d := newDrop(t, false)
	body, err := enqueueMessage(d.bucket, "gone away.ndjson", "abc", 10)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.sqs.SendMessage(context.Background(), &sqs.SendMessageInput{QueueUrl: aws.String(d.queue), MessageBody: aws.String(string(body))}); err != nil {
		t.Fatal(err)
	}
	w := startWorker(t, d, SQSOptions{}, 1)
	o := w.next(t)
	if _, err := o.Open(context.Background()); !errors.Is(err, ErrMissingObject) {
		t.Fatalf("Open = %v, want ErrMissingObject", err)
	}
	// The pipeline dead-letters it as missing-object and acks it done.
	if err := o.Ack(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	d.waitCounts(t, 0, 0)
}

func TestSQSMissingQueueIsFatal(t *testing.T) {
	d := newDrop(t, false)
	d.queue += "-nope"
	w := startWorker(t, d, SQSOptions{}, 1)
	select {
	case err := <-w.done:
		w.done <- err
		if err == nil {
			t.Fatal("Receive on a missing queue returned nil")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Receive kept polling a missing queue")
	}
}

// TestSQSMultiObjectMessageAcksPerObject: a message naming two objects is
// deleted only once each object is acked; acking one object twice (a bug
// elsewhere) does not settle the message while the other is in flight.
func TestSQSMultiObjectMessageAcksPerObject(t *testing.T) {
	d := newDrop(t, false)
	put(t, d.s3, d.bucket, "a.ndjson", []byte("a\n"))
	put(t, d.s3, d.bucket, "b.ndjson", []byte("b\n"))
	rec := func(k string) string {
		return `{"eventSource":"aws:s3","eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"` + d.bucket + `"},"object":{"key":"` + k + `"}}}`
	}
	body := `{"Records":[` + rec("a.ndjson") + `,` + rec("b.ndjson") + `]}`
	if _, err := d.sqs.SendMessage(context.Background(), &sqs.SendMessageInput{QueueUrl: aws.String(d.queue), MessageBody: aws.String(body)}); err != nil {
		t.Fatal(err)
	}
	w := startWorker(t, d, SQSOptions{VisibilityTimeout: time.Hour}, 2)
	a, b := w.next(t), w.next(t)
	if !a.Redelivers || !b.Redelivers {
		t.Fatal("SQS objects must say that their source redelivers them")
	}
	for range 2 {
		if err := a.Ack(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
	}
	d.waitCounts(t, 0, 1) // still in flight: b has no outcome yet
	if err := b.Ack(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	d.waitCounts(t, 0, 0)
}

// TestSQSPartlyUnderstoodMessage: a message whose records are partly not
// understood is kept (OnNotEvent) and its readable objects are read; it is
// deleted once both are done. When it cannot be kept, it stays on the queue
// and nothing is read from it.
func TestSQSPartlyUnderstoodMessage(t *testing.T) {
	for _, keepFails := range []bool{false, true} {
		t.Run(fmt.Sprintf("keep fails %v", keepFails), func(t *testing.T) {
			d := newDrop(t, false)
			put(t, d.s3, d.bucket, "a.ndjson", []byte("a\n"))
			body := `{"Records":[{"eventSource":"aws:s3","eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"` + d.bucket +
				`"},"object":{"key":"a.ndjson"}}},{"eventSource":"aws:s3","s3":{"bucket":{"name":"` + d.bucket + `"},"object":{"key":"b.ndjson"}}}]}`
			if _, err := d.sqs.SendMessage(context.Background(), &sqs.SendMessageInput{QueueUrl: aws.String(d.queue), MessageBody: aws.String(body)}); err != nil {
				t.Fatal(err)
			}
			kept := make(chan string, 10)
			w := startWorker(t, d, SQSOptions{VisibilityTimeout: time.Hour,
				OnNotEvent: func(_ context.Context, _ string, b []byte, reason string) error {
					kept <- reason
					if keepFails {
						return errors.New("store down")
					}
					return nil
				}}, 1)
			select {
			case reason := <-kept:
				if !strings.Contains(reason, "record 1 has no eventName") {
					t.Fatalf("reason %q", reason)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("the message was not kept")
			}
			if keepFails {
				d.waitCounts(t, 0, 1)
				if len(w.out) != 0 {
					t.Fatal("objects read from a message that could not be kept")
				}
				return
			}
			o := w.next(t)
			if o.URI != "s3://"+d.bucket+"/a.ndjson" {
				t.Fatalf("object %s", o.URI)
			}
			d.waitCounts(t, 0, 1)
			if err := o.Ack(context.Background(), nil); err != nil {
				t.Fatal(err)
			}
			d.waitCounts(t, 0, 0)
		})
	}
}
