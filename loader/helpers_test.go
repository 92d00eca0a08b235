package loader

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
)

// fakeClock advances only when the writer sleeps, so waits are asserted without wall-clock time.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	sleeps []time.Duration
}

var t0 = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

func newFakeClock() *fakeClock { return &fakeClock{now: t0} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d <= 0 {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	c.sleeps = append(c.sleeps, d)
	return nil
}

func (c *fakeClock) elapsed() time.Duration { return c.Now().Sub(t0) }

// bundleEntry is what a test server reads from a batch Bundle.
type bundleEntry struct {
	Resource json.RawMessage `json:"resource"`
	Request  struct {
		Method string `json:"method"`
		URL    string `json:"url"`
	} `json:"request"`
}

func readBundle(t testing.TB, r *http.Request) []bundleEntry {
	t.Helper()
	var b struct {
		ResourceType string        `json:"resourceType"`
		Type         string        `json:"type"`
		Entry        []bundleEntry `json:"entry"`
	}
	if err := json.NewDecoder(r.Body).Decode(&b); err != nil || b.ResourceType != "Bundle" || b.Type != "batch" {
		t.Errorf("bad bundle: %v %q %q", err, b.ResourceType, b.Type)
	}
	return b.Entry
}

// batchReply writes a batch-response with the given entry statuses and optional outcomes.
func batchReply(w http.ResponseWriter, statuses []string, outcomes []string) {
	var sb strings.Builder
	sb.WriteString(`{"resourceType":"Bundle","type":"batch-response","entry":[`)
	for i, s := range statuses {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, `{"response":{"status":%q`, s)
		if i < len(outcomes) && outcomes[i] != "" {
			fmt.Fprintf(&sb, `,"outcome":%s`, outcomes[i])
		}
		sb.WriteString(`}}`)
	}
	sb.WriteString(`]}`)
	w.Header().Set("Content-Type", "application/fhir+json")
	io.WriteString(w, sb.String())
}

func staticCreds() aws.CredentialsProvider {
	return aws.NewCredentialsCache(credentials.NewStaticCredentialsProvider("AKIDTEST", "secret", "session-token"))
}

// newTestWriter builds a Writer on a loopback server with a fake clock and no jitter.
func newTestWriter(t testing.TB, srv *httptest.Server, mutate func(*Options)) (*Writer, *fakeClock) {
	t.Helper()
	clk := newFakeClock()
	o := Options{
		BaseURL: srv.URL + "/datastore/local/r4", Auth: AuthNone, HTTPClient: srv.Client(),
		Retry: RetryOptions{Initial: time.Second, Max: 8 * time.Second, MaxElapsed: time.Minute},
		clock: clk, noJitter: true,
	}
	if mutate != nil {
		mutate(&o)
	}
	w, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	return w, clk
}

func items(n int) []Item {
	out := make([]Item, n)
	for i := range out {
		id := fmt.Sprintf("obs-%d", i)
		out[i] = Item{Type: "Observation", ID: id, Body: fmt.Appendf(nil, `{"resourceType":"Observation","id":%q,"status":"final"}`, id)}
	}
	return out
}
