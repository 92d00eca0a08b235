package fhirstore

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
)

// fhirError is a failure to report to the client: an HTTP status and an
// OperationOutcome issue. Its text is PHI-free by construction: callers put
// only resource types, ids, parameter names and reasons in it.
type fhirError struct {
	status int
	code   string // FHIR issue-type code: invalid, not-found, duplicate, ...
	text   string
	// retryAfter is the Retry-After value in seconds for 429 responses.
	retryAfter int
	// etag is sent as ETag, for 410 Gone (the deletion's version).
	etag string
	// allow is sent as Allow, for 405 Method Not Allowed.
	allow []string
	// unknownParam marks an unknown or unsupported search parameter, which
	// Prefer: handling=lenient ignores (and reports).
	unknownParam bool
	// expression is the FHIRPath location of the issue, when there is one.
	expression string
}

func (e *fhirError) Error() string { return strconv.Itoa(e.status) + " " + e.code + ": " + e.text }

func errf(status int, code, format string, args ...any) *fhirError {
	return &fhirError{status: status, code: code, text: fmt.Sprintf(format, args...)}
}

type details struct {
	Text string `json:"text"`
}

// issue is one OperationOutcome issue.
type issue struct {
	Severity    string   `json:"severity"`
	Code        string   `json:"code"`
	Details     details  `json:"details"`
	Diagnostics string   `json:"diagnostics,omitempty"`
	Expression  []string `json:"expression,omitempty"`
}

// outcome renders an OperationOutcome with one issue.
func outcome(severity, code, text string) []byte {
	return outcomeOf([]issue{{Severity: severity, Code: code, Details: details{Text: text}}})
}

// outcomeOf renders an OperationOutcome.
func outcomeOf(issues []issue) []byte {
	b, _ := json.Marshal(struct {
		ResourceType string  `json:"resourceType"`
		Issue        []issue `json:"issue"`
	}{"OperationOutcome", issues})
	return b
}

// awsStyle reports whether status is answered the way AWS's front door
// answers it (a small JSON message) rather than with an OperationOutcome;
// section 1.5 of the HealthLake reference lists which is which.
func awsStyle(status int) bool {
	switch status {
	case http.StatusUnauthorized, http.StatusForbidden, http.StatusTooManyRequests, http.StatusInternalServerError:
		return true
	}
	return false
}

// awsErrorType names the AWS exception for the statuses answered AWS-style.
func awsErrorType(status int) string {
	switch status {
	case http.StatusUnauthorized:
		return "UnauthorizedException"
	case http.StatusForbidden:
		return "AccessDeniedException"
	case http.StatusTooManyRequests:
		return "ThrottlingException"
	default:
		return "InternalServerException"
	}
}

// writeError writes e as the response.
func writeError(w http.ResponseWriter, e *fhirError) {
	h := w.Header()
	if e.etag != "" {
		h.Set("ETag", e.etag)
	}
	if len(e.allow) > 0 {
		h.Set("Allow", strings.Join(e.allow, ", "))
	}
	if e.status == http.StatusTooManyRequests {
		ra := e.retryAfter
		if ra < 1 {
			ra = 1
		}
		h.Set("Retry-After", strconv.Itoa(ra))
	}
	if awsStyle(e.status) {
		b, _ := json.Marshal(struct {
			Type    string `json:"__type"`
			Message string `json:"message"`
		}{awsErrorType(e.status), e.text})
		h.Set("Content-Type", "application/json")
		h.Set("X-Amzn-ErrorType", awsErrorType(e.status))
		w.WriteHeader(e.status)
		_, _ = w.Write(b)
		return
	}
	h.Set("Content-Type", contentTypeFHIR)
	w.WriteHeader(e.status)
	_, _ = w.Write(e.outcome())
}

// outcome renders e as an OperationOutcome.
func (e *fhirError) outcome() []byte {
	is := issue{Severity: "error", Code: e.code, Details: details{Text: e.text}}
	if e.expression != "" {
		is.Expression = []string{e.expression}
	}
	return outcomeOf([]issue{is})
}

// statusLine is the Bundle response.status text for code, e.g. "201 Created".
func statusLine(code int) string {
	return strconv.Itoa(code) + " " + http.StatusText(code)
}
