package ingest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// ErrNotEvent is wrapped by ParseNotification's error for a message body that
// is not an S3 event notification in any shape it knows.
var ErrNotEvent = errors.New("not an S3 event notification")

// EnqueueEventSource is the eventSource of the S3-event-shaped messages that
// Enqueue sends.
const EnqueueEventSource = "fhirload:enqueue"

// ObjectRef names one created S3 object taken from a notification.
type ObjectRef struct {
	Bucket string
	Key    string // decoded: the object's real key
	ETag   string // unquoted; "" when the notification has none
	Size   int64  // -1 when the notification has none
	Event  string // e.g. "ObjectCreated:Put", "Object Created", "ObjectCreated:Enqueue"
}

// s3Event is the native S3 notification (and the shape Enqueue sends).
type s3Event struct {
	Records *[]s3Record `json:"Records"`
	// s3:TestEvent, sent when a notification configuration is saved.
	Event   string `json:"Event"`
	Service string `json:"Service"`
}

type s3Record struct {
	EventSource string `json:"eventSource"`
	EventName   string `json:"eventName"`
	S3          *struct {
		Bucket struct {
			Name string `json:"name"`
		} `json:"bucket"`
		Object struct {
			Key  *string      `json:"key"`
			Size *json.Number `json:"size"`
			ETag string       `json:"eTag"`
		} `json:"object"`
	} `json:"s3"`
}

// snsEnvelope is an SNS notification delivered to SQS without raw delivery.
type snsEnvelope struct {
	Type    string  `json:"Type"`
	Message *string `json:"Message"`
}

// eventBridgeEvent is an S3 event delivered through EventBridge.
type eventBridgeEvent struct {
	DetailType string `json:"detail-type"`
	Source     string `json:"source"`
	Detail     *struct {
		Bucket struct {
			Name string `json:"name"`
		} `json:"bucket"`
		Object struct {
			Key  *string      `json:"key"`
			Size *json.Number `json:"size"`
			ETag string       `json:"etag"`
		} `json:"object"`
	} `json:"detail"`
}

// Notification is what one queue message says.
type Notification struct {
	// Refs are the created objects to read.
	Refs []ObjectRef
	// Ignored are the event names deliberately passed over: deletes,
	// restores, tagging, replication…, and s3:TestEvent.
	Ignored []string
	// Bad says, per record that cannot be understood (no eventName, no s3
	// element, an object-created event without its bucket or key), why —
	// without values. The message must be kept (dead-lettered) before it is
	// deleted: nothing is skipped in silence.
	Bad []string
}

// ParseMessage reads an SQS message body. It understands the native S3 event
// notification (Records[].s3, several records per message), the same wrapped
// in an SNS envelope (Type=Notification, Message as a string), EventBridge
// "Object Created" events (detail.bucket.name, detail.object.key) and
// Enqueue's messages (the native shape). Object keys are URL-decoded as S3
// encodes them in events ('+' is a space, %XX a byte) in every shape.
//
// A body in none of these shapes gives an error wrapping ErrNotEvent. A
// body in one of them gives a Notification, whose Bad lists the records that
// could not be understood.
func ParseMessage(body []byte) (Notification, error) {
	return parseNotification(body, 0)
}

// ParseNotification is ParseMessage for callers that need every record
// understood: a record in Notification.Bad is an error wrapping ErrNotEvent.
func ParseNotification(body []byte) ([]ObjectRef, error) {
	n, err := ParseMessage(body)
	if err != nil {
		return nil, err
	}
	if len(n.Bad) > 0 {
		return nil, fmt.Errorf("%w: %s", ErrNotEvent, strings.Join(n.Bad, "; "))
	}
	return n.Refs, nil
}

func parseNotification(body []byte, depth int) (Notification, error) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 || body[0] != '{' {
		return Notification{}, fmt.Errorf("%w: not a JSON object", ErrNotEvent)
	}
	var probe struct {
		Records    json.RawMessage `json:"Records"`
		Type       string          `json:"Type"`
		DetailType *string         `json:"detail-type"`
		Event      string          `json:"Event"`
	}
	if err := json.Unmarshal(body, &probe); err != nil {
		return Notification{}, fmt.Errorf("%w: invalid JSON: %w", ErrNotEvent, err)
	}
	switch {
	case probe.Records != nil:
		return parseS3Event(body)
	case probe.Event == "s3:TestEvent":
		return Notification{Ignored: []string{probe.Event}}, nil
	case probe.Type == "Notification" && depth == 0:
		var env snsEnvelope
		if err := json.Unmarshal(body, &env); err != nil || env.Message == nil {
			return Notification{}, fmt.Errorf("%w: SNS notification without a Message", ErrNotEvent)
		}
		n, err := parseNotification([]byte(*env.Message), depth+1)
		if err != nil {
			return Notification{}, fmt.Errorf("SNS message: %w", err)
		}
		return n, nil
	case probe.DetailType != nil:
		return parseEventBridge(body)
	}
	return Notification{}, fmt.Errorf("%w: no Records, SNS envelope or EventBridge detail", ErrNotEvent)
}

func parseS3Event(body []byte) (Notification, error) {
	var ev s3Event
	if err := json.Unmarshal(body, &ev); err != nil {
		return Notification{}, fmt.Errorf("%w: S3 event: %w", ErrNotEvent, err)
	}
	if ev.Records == nil {
		return Notification{}, fmt.Errorf("%w: S3 event: Records is null", ErrNotEvent)
	}
	var n Notification
	for i, rec := range *ev.Records {
		name := strings.TrimPrefix(rec.EventName, "s3:")
		switch {
		case name == "":
			n.Bad = append(n.Bad, fmt.Sprintf("record %d has no eventName", i))
			continue
		case !strings.HasPrefix(name, "ObjectCreated:") && s3EventFamily(name):
			n.Ignored = append(n.Ignored, name)
			continue
		case !strings.HasPrefix(name, "ObjectCreated:"):
			n.Bad = append(n.Bad, fmt.Sprintf("record %d has an event name S3 does not send (%.40q)", i, name))
			continue
		case rec.S3 == nil:
			n.Bad = append(n.Bad, fmt.Sprintf("record %d (%s) has no s3 element", i, name))
			continue
		}
		o := rec.S3.Object
		ref, err := makeRef(rec.S3.Bucket.Name, o.Key, o.Size, o.ETag, name)
		if err != nil {
			n.Bad = append(n.Bad, fmt.Sprintf("record %d (%s): %v", i, name, err))
			continue
		}
		n.Refs = append(n.Refs, ref)
	}
	return n, nil
}

// s3EventFamily reports whether name is one of the S3 event types other than
// object creation (they are ignored on purpose; anything else is not an S3
// event and must not be skipped in silence).
func s3EventFamily(name string) bool {
	family, _, _ := strings.Cut(name, ":")
	switch family {
	case "ObjectRemoved", "ObjectRestore", "ObjectTagging", "ObjectAcl", "LifecycleExpiration",
		"LifecycleTransition", "IntelligentTiering", "Replication", "ReducedRedundancyLostObject":
		return true
	}
	return false
}

func parseEventBridge(body []byte) (Notification, error) {
	var ev eventBridgeEvent
	if err := json.Unmarshal(body, &ev); err != nil {
		return Notification{}, fmt.Errorf("%w: EventBridge event: %w", ErrNotEvent, err)
	}
	if ev.Source != "aws.s3" || ev.Detail == nil {
		return Notification{}, fmt.Errorf("%w: EventBridge event from %q", ErrNotEvent, ev.Source)
	}
	if ev.DetailType != "Object Created" {
		return Notification{Ignored: []string{ev.DetailType}}, nil
	}
	o := ev.Detail.Object
	ref, err := makeRef(ev.Detail.Bucket.Name, o.Key, o.Size, o.ETag, ev.DetailType)
	if err != nil {
		return Notification{Bad: []string{fmt.Sprintf("EventBridge %s: %v", ev.DetailType, err)}}, nil
	}
	return Notification{Refs: []ObjectRef{ref}}, nil
}

func makeRef(bucket string, encKey *string, size *json.Number, etag, event string) (ObjectRef, error) {
	if bucket == "" || encKey == nil || *encKey == "" {
		return ObjectRef{}, errors.New("event without bucket or key")
	}
	key, err := url.QueryUnescape(*encKey)
	if err != nil || key == "" {
		return ObjectRef{}, errors.New("key is not URL-encoded")
	}
	ref := ObjectRef{Bucket: bucket, Key: key, ETag: strings.Trim(etag, `"`), Size: -1, Event: event}
	if size != nil {
		n, err := size.Int64()
		if err != nil || n < 0 {
			return ObjectRef{}, errors.New("bad object size")
		}
		ref.Size = n
	}
	return ref, nil
}

// EncodeEventKey encodes an object key as S3 does in event notifications:
// form encoding ('+' for a space, %XX for other reserved bytes) with '/' kept.
func EncodeEventKey(key string) string {
	return strings.ReplaceAll(url.QueryEscape(key), "%2F", "/")
}

// enqueueMessage returns the body Enqueue sends for an object: a native S3
// event with one record.
func enqueueMessage(bucket, key, etag string, size int64) ([]byte, error) {
	type object struct {
		Key  string `json:"key"`
		Size int64  `json:"size"`
		ETag string `json:"eTag,omitempty"`
	}
	type record struct {
		EventVersion string `json:"eventVersion"`
		EventSource  string `json:"eventSource"`
		EventName    string `json:"eventName"`
		S3           struct {
			Bucket struct {
				Name string `json:"name"`
			} `json:"bucket"`
			Object object `json:"object"`
		} `json:"s3"`
	}
	var rec record
	rec.EventVersion = "2.1"
	rec.EventSource = EnqueueEventSource
	rec.EventName = "ObjectCreated:Enqueue"
	rec.S3.Bucket.Name = bucket
	rec.S3.Object = object{Key: EncodeEventKey(key), Size: size, ETag: strings.Trim(etag, `"`)}
	b, err := json.Marshal(struct {
		Records []record `json:"Records"`
	}{[]record{rec}})
	if err != nil {
		return nil, fmt.Errorf("encode message: %w", err)
	}
	return b, nil
}
