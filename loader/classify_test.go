package loader

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
)

func TestClassify(t *testing.T) {
	oo := func(code, text string) []byte {
		return fmt.Appendf(nil, `{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":%q,"diagnostics":%q}]}`, code, text)
	}
	tests := []struct {
		name    string
		status  int
		body    []byte
		err     error
		kind    Kind
		reason  string
		cause   string
		created bool
	}{
		{"201 created", 201, nil, nil, Loaded, "", "", true},
		{"200 updated", 200, nil, nil, Loaded, "", "", false},
		{"204 other 2xx", 204, nil, nil, Loaded, "", "", false},
		{"409 idempotency: already loaded", 409, oo("conflict", ""), nil, Loaded, "", "", false},
		{"400 bad request", 400, oo("invalid", "bad json"), nil, DeadLetter, ReasonRejected, "", false},
		{"401 bad signature", 401, []byte(`{"message":"The security token included in the request is invalid."}`), nil, Fatal, "", "", false},
		{"403 no permission", 403, []byte(`{"message":"not authorized"}`), nil, Fatal, "", "", false},
		{"404 resource OperationOutcome", 404, oo("not-found", "Resource Patient/x not found"), nil, DeadLetter, ReasonRejected, "", false},
		{"404 data store OperationOutcome", 404, oo("not-found", "Datastore 123 not found"), nil, Fatal, "", "", false},
		{"404 AWS error body", 404, []byte(`{"__type":"ResourceNotFoundException","message":"x"}`), nil, Fatal, "", "", false},
		{"404 empty body", 404, nil, nil, Fatal, "", "", false},
		{"405 method not allowed", 405, nil, nil, DeadLetter, ReasonRejected, "", false},
		{"408 request timeout", 408, nil, nil, Retry, "", CauseTimeout, false},
		{"410 gone", 410, oo("deleted", ""), nil, DeadLetter, ReasonRejected, "", false},
		{"412 precondition", 412, nil, nil, DeadLetter, ReasonRejected, "", false},
		{"413 too large", 413, nil, nil, DeadLetter, ReasonRejected, "", false},
		{"422 duplicate", 422, oo("duplicate", "identifier already used"), nil, DeadLetter, ReasonDuplicate, "", false},
		{"422 without outcome", 422, nil, nil, DeadLetter, ReasonDuplicate, "", false},
		{"422 other business rule", 422, oo("business-rule", ""), nil, DeadLetter, ReasonRejected, "", false},
		{"429 throttled", 429, []byte(`{"message":"Rate exceeded"}`), nil, Retry, "", CauseThrottled, false},
		{"500 internal", 500, nil, nil, Retry, "", CauseServerError, false},
		{"501 not implemented", 501, nil, nil, Fatal, "", "", false},
		{"502 bad gateway", 502, nil, nil, Retry, "", CauseServerError, false},
		{"503 unavailable", 503, nil, nil, Retry, "", CauseServerError, false},
		{"504 gateway timeout", 504, nil, nil, Retry, "", CauseServerError, false},
		{"302 unexpected", 302, nil, nil, DeadLetter, ReasonRejected, "", false},
		{"connection refused", 0, nil, &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, Retry, "", CauseNetwork, false},
		{"connection reset", 0, nil, &net.OpError{Op: "read", Err: syscall.ECONNRESET}, Retry, "", CauseNetwork, false},
		{"EOF", 0, nil, fmt.Errorf("post: %w", io.EOF), Retry, "", CauseNetwork, false},
		{"deadline", 0, nil, context.DeadlineExceeded, Retry, "", CauseTimeout, false},
		{"other network", 0, nil, errors.New("weird"), Retry, "", CauseNetwork, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Classify(tt.status, tt.body, tt.err)
			if d.Kind != tt.kind || d.Reason != tt.reason || d.Cause != tt.cause || d.Created != tt.created {
				t.Fatalf("Classify(%d) = %+v, want kind %v reason %q cause %q created %v", tt.status, d, tt.kind, tt.reason, tt.cause, tt.created)
			}
			if d.Message == "" {
				t.Fatal("empty message")
			}
		})
	}
}

func TestClassifyMessageHasNoDiagnostics(t *testing.T) {
	body := []byte(`{"resourceType":"OperationOutcome","issue":[{"code":"duplicate","diagnostics":"identifier 999-12-3456 of Jane Doe"}]}`)
	d := Classify(422, body, nil)
	if d.Message != "HTTP 422 (duplicate)" {
		t.Fatalf("message %q leaks or misses the code", d.Message)
	}
}

func TestEntryStatus(t *testing.T) {
	for in, want := range map[string]int{"201 Created": 201, "200": 200, "429 Too Many Requests": 429, "": 0, "abc": 0, "42": 0} {
		if got := entryStatus(in); got != want {
			t.Errorf("entryStatus(%q) = %d, want %d", in, got, want)
		}
	}
}

func BenchmarkClassify(b *testing.B) {
	oo := []byte(`{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"duplicate"}]}`)
	for b.Loop() {
		Classify(201, nil, nil)
		Classify(429, nil, nil)
		Classify(422, oo, nil)
	}
}
