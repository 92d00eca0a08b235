package ingest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/smithy-go"
	"go.uber.org/zap"

	"github.com/fhirload/fhirload/internal/ctxtime"
)

// SQSOptions configure an SQSSource.
type SQSOptions struct {
	QueueURL string
	// WaitSeconds is the long-poll wait of ReceiveMessage (0..20). Default 20.
	WaitSeconds int32
	// MaxMessages is how many messages one ReceiveMessage may return (1..10).
	// Default 10.
	MaxMessages int32
	// VisibilityTimeout is asked for on receive and renewed by the heartbeat
	// (whole seconds). Default 5m.
	VisibilityTimeout time.Duration
	// Heartbeat is how often the visibility of a message with work in flight
	// is extended. Default VisibilityTimeout/3.
	Heartbeat time.Duration
	// Logger receives receive errors and heartbeat failures; nil means none.
	Logger *zap.Logger
	// OnNotEvent is called for a message that is not an S3 event (the
	// pipeline dead-letters it); when it returns nil the message is deleted,
	// else left for redelivery (and the queue's redrive policy). When nil,
	// such messages are logged and left.
	OnNotEvent func(ctx context.Context, messageID string, body []byte, reason string) error
	// OnReceived and OnDeleted, when set, are told of each message received
	// and each message deleted (for metrics).
	OnReceived, OnDeleted func()
}

func (o SQSOptions) withDefaults() SQSOptions {
	if o.WaitSeconds <= 0 {
		o.WaitSeconds = 20
	}
	o.WaitSeconds = min(o.WaitSeconds, 20)
	if o.MaxMessages <= 0 {
		o.MaxMessages = 10
	}
	o.MaxMessages = min(o.MaxMessages, 10)
	if o.VisibilityTimeout <= 0 {
		o.VisibilityTimeout = 5 * time.Minute
	}
	o.VisibilityTimeout = max(o.VisibilityTimeout.Round(time.Second), time.Second)
	if o.Heartbeat <= 0 {
		o.Heartbeat = o.VisibilityTimeout / 3
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	return o
}

// SQSSource turns S3 event notifications on an SQS queue into Objects.
//
// Ownership: Receive owns the receiving loop and returns when its context
// ends. Every message handed out (as one Object per created S3 object) is
// owned by its Objects until each of them is acked; until then a heartbeat
// goroutine, owned by the SQSSource, keeps the message invisible. Those
// heartbeats outlive Receive on purpose, so that a pipeline can drain the
// objects in flight after it stops receiving. Close stops every heartbeat and
// waits for them; messages not yet settled then reappear on the queue after
// their visibility timeout (at-least-once). Call Close after the last Ack.
type SQSSource struct {
	client *sqs.Client
	s3     *S3Source
	opts   SQSOptions
	log    *zap.Logger

	// life bounds the heartbeats and the settling calls made from Ack.
	life   context.Context
	stop   context.CancelFunc
	wg     sync.WaitGroup
	closed sync.Once
}

// NewSQSSource returns an SQSSource reading opts.QueueURL; objects are opened
// through s3src.
func NewSQSSource(client *sqs.Client, s3src *S3Source, opts SQSOptions) *SQSSource {
	opts = opts.withDefaults()
	life, stop := context.WithCancel(context.Background())
	return &SQSSource{client: client, s3: s3src, opts: opts, log: opts.Logger, life: life, stop: stop}
}

// Close stops the heartbeats of unsettled messages and waits for every
// goroutine of the source. It is safe to call more than once.
func (q *SQSSource) Close() error {
	q.closed.Do(q.stop)
	q.wg.Wait()
	return nil
}

// Receive long-polls the queue until ctx is done, sending one Object per
// created S3 object to out. A send blocks while out is full, and no new
// message is received meanwhile (back-pressure). Messages naming no created
// object (s3:TestEvent, deletes) are deleted at once; messages that are not
// S3 events go to OnNotEvent.
//
// An Object's Ack settles its message once every object of the message has
// been acked: all with a nil error deletes the message; any error makes it
// visible again at once so that it is redelivered (and, after the queue's
// maxReceiveCount, moved to its dead-letter queue).
//
// Receive returns nil when ctx is cancelled, or the error of a queue that
// cannot be read (missing queue, access denied). Transient receive errors
// are logged and retried with backoff.
func (q *SQSSource) Receive(ctx context.Context, out chan<- Object) error {
	failures := 0
	for ctx.Err() == nil {
		res, err := q.client.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
			QueueUrl:            aws.String(q.opts.QueueURL),
			MaxNumberOfMessages: q.opts.MaxMessages,
			WaitTimeSeconds:     q.opts.WaitSeconds,
			VisibilityTimeout:   int32(q.opts.VisibilityTimeout / time.Second),
		})
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			if fatalQueueError(err) {
				return fmt.Errorf("receive from %s: %w", q.opts.QueueURL, err)
			}
			failures++
			q.log.Warn("sqs receive failed; retrying", zap.Int("failures", failures), zap.Error(err))
			if ctxtime.Sleep(ctx, backoff(failures)) != nil {
				break
			}
			continue
		}
		failures = 0
		if q.opts.OnReceived != nil {
			for range res.Messages {
				q.opts.OnReceived()
			}
		}
		// Heartbeats start for the whole batch before any send blocks: the
		// visibility clock of every received message is already running.
		msgs := make([]*message, len(res.Messages))
		for i, m := range res.Messages {
			msgs[i] = q.accept(ctx, m)
		}
		for _, m := range msgs {
			if m != nil {
				q.dispatch(ctx, m, out)
			}
		}
	}
	return nil
}

func backoff(failures int) time.Duration {
	return min(time.Duration(1<<min(failures, 6))*100*time.Millisecond, 10*time.Second)
}

func fatalQueueError(err error) bool {
	var api smithy.APIError
	if !errors.As(err, &api) {
		return false
	}
	switch api.ErrorCode() {
	case "AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist",
		"AccessDenied", "AccessDeniedException", "InvalidClientTokenId",
		"UnrecognizedClientException", "SignatureDoesNotMatch", "InvalidAddress":
		return true
	}
	return false
}

// message tracks the objects of one SQS message.
type message struct {
	q       *SQSSource
	id      string
	handle  string
	objects []Object

	mu      sync.Mutex
	acked   []bool // per object: acked already (a second ack of one object is ignored)
	pending int    // objects not yet acked
	failed  bool   // an object was acked with an error
	settled bool
	stop    chan struct{} // closed to end the heartbeat
	hbDone  chan struct{} // closed when the heartbeat has ended
}

// accept parses a received message. It settles messages without work at once
// and returns nil for them; for the others it starts the heartbeat.
func (q *SQSSource) accept(ctx context.Context, m types.Message) *message {
	id, handle, body := aws.ToString(m.MessageId), aws.ToString(m.ReceiptHandle), aws.ToString(m.Body)
	n, err := ParseMessage([]byte(body))
	if err != nil {
		q.notEvent(ctx, id, handle, []byte(body), err)
		return nil
	}
	for _, ev := range n.Ignored {
		q.log.Debug("event ignored", zap.String("message_id", id), zap.String("event", ev))
	}
	if len(n.Bad) > 0 {
		// Kept verbatim first: the records we read are read all the same, and
		// the message is deleted once both are done.
		if !q.keep(ctx, id, []byte(body), fmt.Errorf("%w: %s", ErrNotEvent, strings.Join(n.Bad, "; "))) {
			return nil // left on the queue: it comes back, and is kept then
		}
	}
	refs := n.Refs
	if len(refs) == 0 {
		if err := q.delete(ctx, handle); err != nil {
			q.log.Warn("delete of an event without objects failed", zap.String("message_id", id), zap.Error(err))
		}
		return nil
	}
	msg := &message{q: q, id: id, handle: handle, pending: len(refs), acked: make([]bool, len(refs)),
		stop: make(chan struct{}), hbDone: make(chan struct{})}
	for i, ref := range refs {
		o := q.s3.Object(ref.Bucket, ref.Key, ref.ETag, ref.Size)
		o.Ack = func(ctx context.Context, err error) error { return msg.ack(ctx, i, err) }
		o.Redelivers = true
		msg.objects = append(msg.objects, o)
	}
	q.wg.Add(1)
	go msg.heartbeat()
	return msg
}

// notEvent keeps a message that is not an S3 event, then deletes it.
func (q *SQSSource) notEvent(ctx context.Context, id, handle string, body []byte, perr error) {
	if !q.keep(ctx, id, body, perr) {
		return
	}
	if err := q.delete(ctx, handle); err != nil {
		q.log.Warn("delete of a dead-lettered message failed", zap.String("message_id", id), zap.Error(err))
	}
}

// keep hands a message (or the part of one) that cannot be understood to
// OnNotEvent, to be dead-lettered verbatim. It reports whether that
// succeeded; when it did not, the message must stay on the queue.
func (q *SQSSource) keep(ctx context.Context, id string, body []byte, perr error) bool {
	if q.opts.OnNotEvent == nil {
		q.log.Warn("message not understood; left for the queue's redrive policy",
			zap.String("message_id", id), zap.Error(perr))
		return false
	}
	if err := q.opts.OnNotEvent(ctx, id, body, perr.Error()); err != nil {
		q.log.Warn("message not understood and could not be dead-lettered; left on the queue",
			zap.String("message_id", id), zap.Error(err))
		return false
	}
	return true
}

// dispatch sends the message's objects to out. When ctx ends first, the
// objects not sent are acked with ctx's error so that the message settles
// (and reappears) once those already sent are acked.
func (q *SQSSource) dispatch(ctx context.Context, m *message, out chan<- Object) {
	for i, o := range m.objects {
		select {
		case out <- o:
		case <-ctx.Done():
			for j := i; j < len(m.objects); j++ {
				_ = m.ack(q.life, j, fmt.Errorf("not dispatched: %w", ctx.Err()))
			}
			return
		}
	}
}

func (q *SQSSource) delete(ctx context.Context, handle string) error {
	_, err := q.client.DeleteMessage(ctx, &sqs.DeleteMessageInput{
		QueueUrl: aws.String(q.opts.QueueURL), ReceiptHandle: aws.String(handle),
	})
	if err == nil && q.opts.OnDeleted != nil {
		q.opts.OnDeleted()
	}
	return err
}

func (q *SQSSource) setVisibility(ctx context.Context, handle string, d time.Duration) error {
	_, err := q.client.ChangeMessageVisibility(ctx, &sqs.ChangeMessageVisibilityInput{
		QueueUrl: aws.String(q.opts.QueueURL), ReceiptHandle: aws.String(handle),
		VisibilityTimeout: int32(d / time.Second),
	})
	return err
}

// ack is the Ack of the message's object i. The message settles once each of
// its objects was acked; acking one object twice changes nothing.
func (m *message) ack(ctx context.Context, i int, err error) error {
	m.mu.Lock()
	if m.settled || m.acked[i] {
		m.mu.Unlock()
		return nil
	}
	m.acked[i] = true
	m.pending--
	if err != nil {
		m.failed = true
	}
	if m.pending > 0 {
		m.mu.Unlock()
		return nil
	}
	m.settled = true
	failed := m.failed
	close(m.stop)
	m.mu.Unlock()
	// A visibility extension still in flight must not land after the
	// settling call below (it would hide a released message again).
	<-m.hbDone

	if ctx == nil || ctx.Err() != nil {
		// The caller is shutting down; settle within the source's life.
		ctx = m.q.life
	}
	if failed {
		// Visible again now rather than after the timeout. Should this fail,
		// the message still reappears when its visibility runs out.
		if verr := m.q.setVisibility(ctx, m.handle, 0); verr != nil {
			m.q.log.Warn("release of a failed message failed", zap.String("message_id", m.id), zap.Error(verr))
		}
		return nil
	}
	if derr := m.q.delete(ctx, m.handle); derr != nil {
		return fmt.Errorf("delete message %s: %w", m.id, derr)
	}
	return nil
}

// heartbeat extends the message's visibility until it settles or the source
// is closed.
func (m *message) heartbeat() {
	defer m.q.wg.Done()
	defer close(m.hbDone)
	t := time.NewTicker(m.q.opts.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-m.q.life.Done():
			return
		case <-t.C:
			if err := m.q.setVisibility(m.q.life, m.handle, m.q.opts.VisibilityTimeout); err != nil {
				m.q.log.Warn("heartbeat failed", zap.String("message_id", m.id), zap.Error(err))
			}
		}
	}
}
