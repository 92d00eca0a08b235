package loader

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
)

// Kind is what the writer does with a response: keep it, retry it, dead-letter it or stop the run.
type Kind int

// The kinds of Decision.
const (
	Loaded     Kind = iota + 1 // the resource is stored (created, updated or already there)
	Retry                      // transient: send again after backoff
	DeadLetter                 // permanent for this resource: dead-letter with Decision.Reason
	Fatal                      // the target refuses the whole run (credentials, permissions, wrong data store)
)

// String returns the kind's name.
func (k Kind) String() string {
	switch k {
	case Loaded:
		return "loaded"
	case Retry:
		return "retry"
	case DeadLetter:
		return "dead-letter"
	case Fatal:
		return "fatal"
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// Retry causes, the keys of Stats.RetriesByCause.
const (
	CauseThrottled   = "throttled"    // 429
	CauseServerError = "server-error" // 500, 502, 503, 504 and other retryable 5xx
	CauseTimeout     = "timeout"      // 408, client-side timeouts
	CauseNetwork     = "network"      // connection refused/reset, EOF
	CauseBadResponse = "bad-response" // a 2xx batch-response that does not match the request
)

// Decision is the classification of one response (or one batch-response entry).
type Decision struct {
	Kind    Kind
	Reason  string // for DeadLetter: ReasonDuplicate or ReasonRejected
	Cause   string // for Retry: one of the Cause constants
	Created bool   // for Loaded: 201 (created) rather than 200 (updated)
	Message string // short and PHI-free: status and OperationOutcome issue code only
}

// Classify is the single classification function of the loader. It maps an HTTP status (or a
// transport error) and the response body to a Decision:
//
//   - 2xx: Loaded; 201 counts as created, any other 2xx as updated.
//   - 409: Loaded. We never send If-Match, so a conflict on PUT means the server already holds this
//     resource under the same idempotency key (an earlier attempt that we saw fail did succeed).
//   - 422: DeadLetter "duplicate" when the OperationOutcome's issue code is "duplicate" or absent
//     (HealthLake's duplicate identifier rule); other business-rule codes dead-letter as "rejected".
//   - 404: a FHIR server answers a missing resource with an OperationOutcome. A 404 whose body is not
//     an OperationOutcome (an AWS/gateway error) or whose OperationOutcome names the data store means
//     the base URL is wrong: Fatal. Otherwise DeadLetter "rejected". PUT creates absent resources, so
//     a resource-level 404 is not expected in normal runs (an unknown resource type can cause one).
//     The Writer also treats any 404 to the Bundle POST at the base or to metadata as Fatal.
//   - 401, 403: Fatal (credentials, region or IAM permissions).
//   - 408, 429, 500, 502, 503, 504 and other 5xx: Retry. 501 and 505: Fatal (the server cannot do
//     this interaction at all, retrying or dead-lettering every line would not help).
//   - 400 and other 4xx: DeadLetter "rejected".
//   - transport errors: timeouts, refused/reset connections and unexpected EOF are Retry; certificate
//     errors are Fatal. The pipeline runs Check before loading, so a target that goes away mid-run is
//     retried and, once retries are exhausted, its lines are dead-lettered as "retries-exhausted".
func Classify(status int, body []byte, err error) Decision {
	if err != nil {
		return classifyErr(err)
	}
	msg := fmt.Sprintf("HTTP %d", status)
	switch {
	case status >= 200 && status < 300:
		return Decision{Kind: Loaded, Created: status == 201, Message: msg}
	case status == 409:
		return Decision{Kind: Loaded, Message: msg + " (already loaded)"}
	case status == 401, status == 403:
		return Decision{Kind: Fatal, Message: msg}
	case status == 404:
		oo, ok := parseOutcome(body)
		if !ok || oo.mentionsDataStore() {
			return Decision{Kind: Fatal, Message: msg + " (data store not found)"}
		}
		return Decision{Kind: DeadLetter, Reason: ReasonRejected, Message: msg + oo.codeSuffix()}
	case status == 422:
		oo, _ := parseOutcome(body)
		code := oo.code()
		if code == "" || code == "duplicate" {
			return Decision{Kind: DeadLetter, Reason: ReasonDuplicate, Message: msg + oo.codeSuffix()}
		}
		return Decision{Kind: DeadLetter, Reason: ReasonRejected, Message: msg + oo.codeSuffix()}
	case status == 408:
		return Decision{Kind: Retry, Cause: CauseTimeout, Message: msg}
	case status == 429:
		return Decision{Kind: Retry, Cause: CauseThrottled, Message: msg}
	case status == 501, status == 505:
		return Decision{Kind: Fatal, Message: msg + " (interaction not supported by the target)"}
	case status >= 500 && status < 600:
		return Decision{Kind: Retry, Cause: CauseServerError, Message: msg}
	case status >= 400 && status < 500:
		oo, _ := parseOutcome(body)
		return Decision{Kind: DeadLetter, Reason: ReasonRejected, Message: msg + oo.codeSuffix()}
	}
	// 1xx/3xx: the client follows redirects, so reaching here means a server we do not understand.
	return Decision{Kind: DeadLetter, Reason: ReasonRejected, Message: msg + " (unexpected status)"}
}

func classifyErr(err error) Decision {
	var (
		unknownAuth x509.UnknownAuthorityError
		hostErr     x509.HostnameError
		invalidCert x509.CertificateInvalidError
		netErr      net.Error
	)
	switch {
	case errors.As(err, &unknownAuth), errors.As(err, &hostErr), errors.As(err, &invalidCert):
		return Decision{Kind: Fatal, Message: "TLS certificate not trusted"}
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return Decision{Kind: Retry, Cause: CauseTimeout, Message: "timeout"}
	case errors.Is(err, syscall.ECONNREFUSED):
		return Decision{Kind: Retry, Cause: CauseNetwork, Message: "connection refused"}
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return Decision{Kind: Retry, Cause: CauseNetwork, Message: "connection reset"}
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return Decision{Kind: Retry, Cause: CauseNetwork, Message: "connection closed"}
	}
	return Decision{Kind: Retry, Cause: CauseNetwork, Message: "network error"}
}

// operationOutcome is the part of a FHIR OperationOutcome the loader reads.
type operationOutcome struct {
	ResourceType string `json:"resourceType"`
	Issue        []struct {
		Severity    string `json:"severity"`
		Code        string `json:"code"`
		Diagnostics string `json:"diagnostics"`
		Details     struct {
			Text string `json:"text"`
		} `json:"details"`
	} `json:"issue"`
}

func parseOutcome(body []byte) (operationOutcome, bool) {
	var oo operationOutcome
	if len(body) == 0 || json.Unmarshal(body, &oo) != nil || oo.ResourceType != "OperationOutcome" {
		return operationOutcome{}, false
	}
	return oo, true
}

func (oo operationOutcome) code() string {
	if len(oo.Issue) == 0 {
		return ""
	}
	return oo.Issue[0].Code
}

// codeSuffix is the issue code for messages: an enumerated FHIR token, so it carries no PHI (the
// diagnostics text may, and is kept out of messages).
func (oo operationOutcome) codeSuffix() string {
	if c := oo.code(); c != "" && isToken(c) {
		return " (" + c + ")"
	}
	return ""
}

func isToken(s string) bool {
	if len(s) > 40 {
		return false
	}
	for _, r := range s {
		if !(r == '-' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return false
		}
	}
	return true
}

// mentionsDataStore reports whether a 404 OperationOutcome is about the data store rather than a resource.
func (oo operationOutcome) mentionsDataStore() bool {
	for _, is := range oo.Issue {
		for _, t := range []string{is.Diagnostics, is.Details.Text} {
			lt := strings.ToLower(t)
			if strings.Contains(lt, "datastore") || strings.Contains(lt, "data store") {
				return true
			}
		}
	}
	return false
}

// isOutcome reports whether raw looks like a non-empty JSON value worth keeping as an OperationOutcome.
func isOutcome(raw []byte) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) > 0 && raw[0] == '{'
}
