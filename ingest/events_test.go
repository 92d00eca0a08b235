package ingest

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

const nativeEvent = `{"Records":[
 {"eventVersion":"2.1","eventSource":"aws:s3","awsRegion":"us-east-1","eventName":"ObjectCreated:Put",
  "s3":{"s3SchemaVersion":"1.0","bucket":{"name":"drop","arn":"arn:aws:s3:::drop"},
        "object":{"key":"in/red+flower%2B1+%C3%A9.ndjson","size":1024,"eTag":"abc123","sequencer":"0A"}}},
 {"eventSource":"aws:s3","eventName":"ObjectRemoved:Delete",
  "s3":{"bucket":{"name":"drop"},"object":{"key":"gone.ndjson"}}},
 {"eventSource":"aws:s3","eventName":"ObjectCreated:CompleteMultipartUpload",
  "s3":{"bucket":{"name":"drop"},"object":{"key":"big.ndjson.gz","size":99,"eTag":"\"m-2\""}}}
]}`

func snsWrap(t *testing.T, inner string) string {
	t.Helper()
	b, err := json.Marshal(map[string]string{
		"Type": "Notification", "MessageId": "m1", "TopicArn": "arn:aws:sns:us-east-1:1:t",
		"Subject": "Amazon S3 Notification", "Message": inner,
	})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

const eventBridgeCreated = `{"version":"0","id":"1","detail-type":"Object Created","source":"aws.s3",
 "account":"1","time":"2021-11-12T00:00:00Z","region":"us-east-1","resources":["arn:aws:s3:::drop"],
 "detail":{"version":"0","bucket":{"name":"drop"},
   "object":{"key":"eb/a+b.ndjson","size":5,"etag":"e1","version-id":"v","sequencer":"1"},
   "reason":"PutObject"}}`

func TestParseNotification(t *testing.T) {
	created := []ObjectRef{
		{Bucket: "drop", Key: "in/red flower+1 é.ndjson", ETag: "abc123", Size: 1024, Event: "ObjectCreated:Put"},
		{Bucket: "drop", Key: "big.ndjson.gz", ETag: "m-2", Size: 99, Event: "ObjectCreated:CompleteMultipartUpload"},
	}
	enq, err := enqueueMessage("b", "dir/a b+c%d é.ndjson", `"e"`, 7)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		body string
		want []ObjectRef
		err  error
	}{
		{name: "native, several records, delete skipped", body: nativeEvent, want: created},
		{name: "native with s3: prefix on event name", body: `{"Records":[{"eventName":"s3:ObjectCreated:Copy","s3":{"bucket":{"name":"b"},"object":{"key":"k"}}}]}`,
			want: []ObjectRef{{Bucket: "b", Key: "k", Size: -1, Event: "ObjectCreated:Copy"}}},
		{name: "native empty records", body: `{"Records":[]}`, want: nil},
		{name: "only non-create events", body: `{"Records":[{"eventName":"ObjectRemoved:Delete","s3":{"bucket":{"name":"b"},"object":{"key":"k"}}}]}`, want: nil},
		{name: "test event", body: `{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2014-10-13T15:57:02.089Z","Bucket":"drop","RequestId":"5582815E1AEA5ADF"}`, want: nil},
		{name: "sns wrapped", body: snsWrap(t, nativeEvent), want: created},
		{name: "sns wrapped test event", body: snsWrap(t, `{"Service":"Amazon S3","Event":"s3:TestEvent"}`), want: nil},
		{name: "eventbridge created", body: eventBridgeCreated,
			want: []ObjectRef{{Bucket: "drop", Key: "eb/a b.ndjson", ETag: "e1", Size: 5, Event: "Object Created"}}},
		{name: "eventbridge deleted", body: `{"detail-type":"Object Deleted","source":"aws.s3","detail":{"bucket":{"name":"d"},"object":{"key":"k"}}}`, want: nil},
		{name: "enqueue message", body: string(enq),
			want: []ObjectRef{{Bucket: "b", Key: "dir/a b+c%d é.ndjson", ETag: "e", Size: 7, Event: "ObjectCreated:Enqueue"}}},

		{name: "not json", body: `hello`, err: ErrNotEvent},
		{name: "empty", body: ``, err: ErrNotEvent},
		{name: "json array", body: `[1]`, err: ErrNotEvent},
		{name: "other json", body: `{"resourceType":"Patient"}`, err: ErrNotEvent},
		{name: "records null", body: `{"Records":null}`, err: ErrNotEvent},
		{name: "records not array", body: `{"Records":{}}`, err: ErrNotEvent},
		{name: "record without s3", body: `{"Records":[{"eventSource":"aws:dynamodb","eventName":"INSERT"}]}`, err: ErrNotEvent},
		{name: "created without key", body: `{"Records":[{"eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":{}}}]}`, err: ErrNotEvent},
		{name: "created without bucket", body: `{"Records":[{"eventName":"ObjectCreated:Put","s3":{"bucket":{},"object":{"key":"k"}}}]}`, err: ErrNotEvent},
		{name: "bad escape in key", body: `{"Records":[{"eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":{"key":"%zz"}}}]}`, err: ErrNotEvent},
		{name: "negative size", body: `{"Records":[{"eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":{"key":"k","size":-1}}}]}`, err: ErrNotEvent},
		{name: "sns without message", body: `{"Type":"Notification"}`, err: ErrNotEvent},
		{name: "sns wrapping junk", body: snsWrap(t, "junk"), err: ErrNotEvent},
		{name: "sns in sns", body: snsWrap(t, snsWrap(t, nativeEvent)), err: ErrNotEvent},
		{name: "eventbridge other source", body: `{"detail-type":"Object Created","source":"aws.ec2","detail":{}}`, err: ErrNotEvent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseNotification([]byte(tt.body))
			if !errors.Is(err, tt.err) || (err == nil) != (tt.err == nil) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("refs = %+v\nwant   %+v", got, tt.want)
			}
		})
	}
}

// TestParseMessageRecordsNotUnderstood: records that cannot be understood
// are reported (the message is kept before it is deleted), never skipped in
// silence; the records that can be read are read all the same.
func TestParseMessageRecordsNotUnderstood(t *testing.T) {
	good := `{"eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":{"key":"k"}}}`
	tests := []struct {
		name    string
		records string
		refs    int
		bad     string
		ignored []string
	}{
		{"no eventName", `{"s3":{"bucket":{"name":"b"},"object":{"key":"x"}}}`, 0, "record 0 has no eventName", nil},
		{"no eventName beside a good record", good + `,{"eventSource":"aws:s3","s3":{}}`, 1, "record 1 has no eventName", nil},
		{"created without s3", `{"eventName":"ObjectCreated:Put"}`, 0, "record 0 (ObjectCreated:Put) has no s3 element", nil},
		{"created without key", `{"eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":{}}}`, 0, "event without bucket or key", nil},
		{"another service's event", `{"eventSource":"aws:dynamodb","eventName":"INSERT"}`, 0, "event name S3 does not send", nil},
		{"deletes and restores ignored", `{"eventName":"ObjectRemoved:Delete","s3":{}},{"eventName":"s3:ObjectRestore:Completed"}`, 0, "",
			[]string{"ObjectRemoved:Delete", "ObjectRestore:Completed"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := ParseMessage([]byte(`{"Records":[` + tt.records + `]}`))
			if err != nil {
				t.Fatal(err)
			}
			if len(n.Refs) != tt.refs || strings.Join(n.Bad, "; ") != tt.bad && !strings.Contains(strings.Join(n.Bad, "; "), tt.bad) ||
				(tt.bad == "") != (len(n.Bad) == 0) || !reflect.DeepEqual(n.Ignored, tt.ignored) {
				t.Fatalf("refs %d bad %q ignored %q; want %d %q %q", len(n.Refs), n.Bad, n.Ignored, tt.refs, tt.bad, tt.ignored)
			}
			if _, err := ParseNotification([]byte(`{"Records":[` + tt.records + `]}`)); (err != nil) != (tt.bad != "") {
				t.Fatalf("ParseNotification err %v", err)
			}
		})
	}
}

func TestEncodeEventKeyRoundTrip(t *testing.T) {
	for _, k := range append(hostileKeys, "a/b/c", "+", "%", " ", "a%2Fb") {
		body, err := enqueueMessage("b", k, "", 1)
		if err != nil {
			t.Fatal(err)
		}
		refs, err := ParseNotification(body)
		if err != nil || len(refs) != 1 || refs[0].Key != k {
			t.Errorf("key %q: refs %+v err %v", k, refs, err)
		}
	}
}

func FuzzParseNotification(f *testing.F) {
	enq, _ := enqueueMessage("b", "a b+c%.ndjson", "e", 3)
	for _, s := range []string{
		nativeEvent, eventBridgeCreated, string(enq), `{"Event":"s3:TestEvent"}`,
		`{"Type":"Notification","Message":"{\"Records\":[]}"}`, `{"Records":null}`, `junk`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		refs, err := ParseNotification(body)
		if err != nil {
			if refs != nil {
				t.Fatalf("refs %v with error %v", refs, err)
			}
			return
		}
		for _, r := range refs {
			if r.Bucket == "" || r.Key == "" || r.Size < -1 {
				t.Fatalf("bad ref %+v", r)
			}
			// What Enqueue would send for the ref parses back to it.
			b, err := enqueueMessage(r.Bucket, r.Key, r.ETag, max(r.Size, 0))
			if err != nil {
				t.Fatal(err)
			}
			back, err := ParseNotification(b)
			if err != nil || len(back) != 1 || back[0].Key != r.Key || back[0].Bucket != r.Bucket {
				t.Fatalf("round trip of %+v: %+v, %v", r, back, err)
			}
		}
	})
}
