package fhirstore

import (
	"context"
	"crypto/sha256"
	"errors"
	"hash"
	"io"
	"net/http"
	"os"
	"time"

	"golang.org/x/sync/semaphore"
)

// Request bodies are admitted in three steps, so that no client — signed or
// not — can make the server hold memory or a connection it did not grant:
//
//  1. Before any byte of the body is read: a body announced larger than
//     MaxBodyBytes is refused (413), the signature is checked from the
//     headers (see sigCheck; a request that is unsigned or wrongly signed is
//     refused with 401), and the announced length is reserved from a budget
//     of buffered bytes shared by all requests (MaxBufferedBytes). A request
//     that cannot get its reservation within bodyBudgetWait is refused with
//     429 and Retry-After: 1 — the answer HealthLake gives to a client that
//     must slow down, which every HealthLake client already retries.
//  2. The body must then arrive within BodyReadTimeout (a read deadline on
//     the connection); a body that stalls is answered 408.
//  3. The body is hashed as it arrives and the signature check is finished
//     with the hash (401 when it does not match).
//
// A refused request's connection is closed without reading the rest of its
// body. The reservation is held until the response is written.
const (
	// DefaultMaxBufferedBytes is the default of Options.MaxBufferedBytes.
	DefaultMaxBufferedBytes = 64 << 20
	// DefaultBodyReadTimeout is the default of Options.BodyReadTimeout.
	DefaultBodyReadTimeout = 30 * time.Second
	// bodyBudgetWait is how long a request waits for its share of the
	// buffered-bytes budget before it is answered 429.
	bodyBudgetWait = time.Second
	// chunkedStart is the first reservation of a body of unknown length
	// (chunked); it doubles as the body grows.
	chunkedStart = 64 << 10
)

// intake is the admission of request bodies: the budget of buffered bytes
// and the limits in Options.
type intake struct {
	budget  *semaphore.Weighted
	max     int64
	timeout time.Duration
	wait    time.Duration
}

func newIntake(maxBody, buffered int64, timeout time.Duration) *intake {
	return &intake{budget: semaphore.NewWeighted(max(buffered, maxBody)), max: maxBody, timeout: timeout, wait: bodyBudgetWait}
}

// body is a request body as admitted: its bytes, their SHA-256 (when asked
// for) and the reservation to give back.
type body struct {
	b        []byte
	sum      []byte
	reserved int64
	in       *intake
}

// release gives the body's reservation back. It is safe on a nil body.
func (b *body) release() {
	if b != nil && b.reserved > 0 {
		b.in.budget.Release(b.reserved)
		b.reserved = 0
	}
}

func busy() *fhirError {
	return &fhirError{status: http.StatusTooManyRequests, code: "throttled", retryAfter: 1,
		text: "Rate exceeded: the server is receiving too many request bodies at once; retry after a moment."}
}

// tooLarge is the 413 for a body over max bytes.
func tooLarge(max int64) *fhirError {
	return errf(http.StatusRequestEntityTooLarge, "too-long", "Request body exceeds %d bytes.", max)
}

// read admits and reads r's body (steps 1 and 2 above; the caller has done
// the header checks). With hashed, the returned body carries its SHA-256.
// On error nothing stays reserved, and the caller should answer with the
// error and close the connection (the body is not read to its end).
func (in *intake) read(w http.ResponseWriter, r *http.Request, hashed bool) (*body, *fhirError) {
	out := &body{in: in}
	var h hash.Hash
	if hashed {
		h = sha256.New()
	}
	n := r.ContentLength
	if r.Body == nil || r.Body == http.NoBody || n == 0 {
		if h != nil {
			out.sum = h.Sum(nil)
		}
		return out, nil
	}
	if n > in.max {
		return nil, tooLarge(in.max)
	}
	rc := http.NewResponseController(w)
	// Without a deadline (a ResponseWriter that cannot set one), a stalled
	// body holds its reservation until the client goes away; Serve's
	// connections all support it.
	_ = rc.SetReadDeadline(time.Now().Add(in.timeout))
	var buf []byte
	var err error
	if n > 0 {
		if !in.reserve(r.Context(), out, n) {
			return nil, busy()
		}
		buf = make([]byte, n)
		var k int
		k, err = io.ReadFull(r.Body, buf)
		if h != nil {
			h.Write(buf[:k])
		}
	} else {
		buf, err = in.readChunked(r, out, h)
	}
	if err != nil {
		out.release()
		return nil, in.readError(err)
	}
	// The deadline must not outlive the body: net/http reads on from the
	// connection in the background once the body is consumed, and a
	// deadline passing then would cancel the request's context.
	_ = rc.SetReadDeadline(time.Time{})
	out.b = buf
	if h != nil {
		out.sum = h.Sum(nil)
	}
	return out, nil
}

// reserve takes n bytes of the budget for out, waiting at most in.wait.
func (in *intake) reserve(ctx context.Context, out *body, n int64) bool {
	if !in.budget.TryAcquire(n) {
		wctx, cancel := context.WithTimeout(ctx, in.wait)
		defer cancel()
		if in.budget.Acquire(wctx, n) != nil {
			return false
		}
	}
	out.reserved += n
	return true
}

// errBusy ends a chunked body that could not get more of the budget.
var errBusy = errors.New("buffered-bytes budget exhausted")

// readChunked reads a body of unknown length, reserving budget as its
// buffer grows.
func (in *intake) readChunked(r *http.Request, out *body, h hash.Hash) ([]byte, error) {
	src := http.MaxBytesReader(nil, r.Body, in.max)
	size := int64(min(chunkedStart, in.max))
	if !in.reserve(r.Context(), out, size) {
		return nil, errBusy
	}
	buf := make([]byte, 0, size)
	for {
		if len(buf) == cap(buf) {
			if int64(cap(buf)) == in.max {
				// Full at the limit: the body must end here.
				var probe [1]byte
				_, err := src.Read(probe[:])
				if errors.Is(err, io.EOF) {
					return buf, nil
				}
				if err == nil {
					err = &http.MaxBytesError{Limit: in.max}
				}
				return nil, err
			}
			next := min(2*int64(cap(buf)), in.max)
			if !in.reserve(r.Context(), out, next-int64(cap(buf))) {
				return nil, errBusy
			}
			nb := make([]byte, len(buf), next)
			copy(nb, buf)
			buf = nb
		}
		k, err := src.Read(buf[len(buf):cap(buf)])
		if h != nil {
			h.Write(buf[len(buf) : len(buf)+k])
		}
		buf = buf[:len(buf)+k]
		if errors.Is(err, io.EOF) {
			return buf, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// readError maps a failed body read to the answer.
func (in *intake) readError(err error) *fhirError {
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return tooLarge(in.max)
	case errors.Is(err, errBusy):
		return busy()
	case errors.Is(err, os.ErrDeadlineExceeded):
		return errf(http.StatusRequestTimeout, "timeout", "The request body did not arrive within %s.", in.timeout)
	}
	return badRequest("Could not read the request body.")
}

// closeAfter makes the server close the connection after this response
// instead of reading the rest of an unread body to reuse it.
func closeAfter(w http.ResponseWriter) { w.Header().Set("Connection", "close") }
