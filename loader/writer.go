package loader

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/cenkalti/backoff/v4"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
)

const maxResponseBytes = 64 << 20

// Writer writes FHIR resources to one target. It is safe for concurrent use; all Writes share its
// adaptive concurrency limit, its token bucket and its HTTP connections.
type Writer struct {
	opts      Options
	base      string // with trailing slash
	metadata  string
	client    *http.Client
	ownClient bool
	signer    *v4.Signer
	limit     *limit
	pace      *pacer
	log       *zap.Logger
	bodies    sync.Pool // *body
	respBufs  sync.Pool // *bytes.Buffer

	requests, retries, throttled atomic.Int64
	created, updated, failed     atomic.Int64
	causesMu                     sync.Mutex
	causes                       map[string]int64
}

// Stats are the Writer's counters since New. Retries and RetriesByCause count resources re-sent
// (one per entry of a re-sent Bundle); Throttled counts 429 answers (whole requests and entries).
type Stats struct {
	Requests, Retries, Throttled, Created, Updated, Failed int64
	RetriesByCause                                         map[string]int64
	InFlight, Limit                                        int
	Rate                                                   float64 // current adaptive send rate, units/s (0 = unlimited)
}

// New checks opts, applies defaults and builds a Writer. It refuses plain http to a non-loopback
// host, batch sizes above 500 and sigv4 without credentials.
func New(opts Options) (*Writer, error) {
	if err := opts.normalize(); err != nil {
		return nil, err
	}
	u, err := parseBase(opts.BaseURL)
	if err != nil {
		return nil, err
	}
	w := &Writer{
		opts:     opts,
		base:     u.String(),
		client:   opts.HTTPClient,
		signer:   v4.NewSigner(),
		limit:    newLimit(opts.Concurrency),
		pace:     newPacer(opts.WriteUnitsPerSecond),
		log:      opts.Logger,
		causes:   map[string]int64{},
		metadata: u.String() + "metadata",
	}
	if w.client == nil {
		w.client, w.ownClient = newHTTPClient(opts.Concurrency), true
	}
	w.bodies.New = func() any { return &body{pool: &w.bodies} }
	w.respBufs.New = func() any { return new(bytes.Buffer) }
	return w, nil
}

// Close releases idle connections of the Writer's own HTTP client.
func (w *Writer) Close() {
	if w.ownClient {
		w.client.CloseIdleConnections()
	}
}

// Stats returns a snapshot of the counters.
func (w *Writer) Stats() Stats {
	s := Stats{
		Requests: w.requests.Load(), Retries: w.retries.Load(), Throttled: w.throttled.Load(),
		Created: w.created.Load(), Updated: w.updated.Load(), Failed: w.failed.Load(),
		RetriesByCause: map[string]int64{}, Rate: w.pace.currentRate(),
	}
	w.causesMu.Lock()
	for k, v := range w.causes {
		s.RetriesByCause[k] = v
	}
	w.causesMu.Unlock()
	s.InFlight, s.Limit = w.limit.state()
	return s
}

// Check probes the target with a signed GET {base}metadata. A refusal of credentials or
// permissions (401/403), a missing data store (404) or an unreachable target is a *FatalError.
func (w *Writer) Check(ctx context.Context) error {
	b := w.newBackOff()
	b.MaxElapsedTime = 0
	for attempt := 1; ; attempt++ {
		// Sent directly, not through do: a probe is not load, and its answer
		// (a 429 from a busy or chaotic server) must not teach the pacer anything.
		res, err := w.send(ctx, http.MethodGet, w.metadata, nil)
		if err != nil {
			return err
		}
		d := Classify(res.status, res.body, res.err)
		res.free(w)
		switch {
		case d.Kind == Loaded && res.status != 409:
			return nil
		case d.Kind == Retry && attempt < 3:
			if err := w.opts.clock.Sleep(ctx, max(b.NextBackOff(), res.retryAfter)); err != nil {
				return err
			}
		case res.err != nil:
			return &FatalError{Message: fmt.Sprintf("target unreachable: %s (%s)", d.Message, w.hostOnly())}
		default:
			return fatalFor(res.status, d)
		}
	}
}

func (w *Writer) hostOnly() string {
	u, err := url.Parse(w.base)
	if err != nil {
		return "target"
	}
	return u.Host
}

// Write loads items (at most BatchSize) and returns one Outcome per item, in order.
//
// In batch mode the items go as one batch Bundle of PUT entries; in single mode as one PUT per item,
// sent concurrently. Retryable failures are re-sent (for a Bundle, only the entries that failed)
// with exponential backoff, honouring Retry-After, until RetryOptions.MaxElapsed; then the items
// are dead-lettered as ReasonRetriesExhausted. A Bundle rejected as a whole (400, 413, 422) is
// re-sent item by item so one bad resource does not take its batch down with it.
//
// A fatal condition returns a *FatalError; the outcomes are then meaningless and nothing should be
// dead-lettered for it. When ctx is canceled, requests in flight finish, no new ones start and
// Write returns ctx.Err(): only outcomes with Loaded set are final, the others are unresolved.
func (w *Writer) Write(ctx context.Context, items []Item) ([]Outcome, error) {
	if len(items) > w.opts.BatchSize {
		return nil, fmt.Errorf("loader: %d items exceed batch size %d", len(items), w.opts.BatchSize)
	}
	out := make([]Outcome, len(items))
	pending := make([]int, 0, len(items))
	for i, it := range items {
		if !validType(it.Type) || !validID(it.ID) || len(bytes.TrimSpace(it.Body)) == 0 {
			out[i] = Outcome{Reason: ReasonRejected, Message: "invalid resource type, id or empty body"}
			w.failed.Add(1)
			continue
		}
		pending = append(pending, i)
	}
	if len(pending) == 0 {
		return out, nil
	}
	var err error
	if w.opts.Mode == ModeSingle || len(pending) == 1 {
		err = w.writeSingles(ctx, items, out, pending)
	} else {
		err = w.writeBatch(ctx, items, out, pending)
	}
	if err == nil {
		err = ctx.Err()
	}
	return out, err
}

func (w *Writer) newBackOff() *backoff.ExponentialBackOff {
	b := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(w.opts.Retry.Initial),
		backoff.WithMaxInterval(w.opts.Retry.Max),
		backoff.WithMaxElapsedTime(w.opts.Retry.MaxElapsed),
		backoff.WithMultiplier(2),
		backoff.WithClockProvider(w.opts.clock),
	)
	if w.opts.noJitter {
		b.RandomizationFactor = 0
	}
	b.Reset()
	return b
}

// writeBatch sends items[pending] as Bundles until every entry has a final outcome.
func (w *Writer) writeBatch(ctx context.Context, items []Item, out []Outcome, pending []int) error {
	bo := w.newBackOff()
	var retry []int
	cause := make([]string, len(out)) // retry cause of each entry's last failure
	for len(pending) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		buf := getBody(&w.bodies)
		buf.b = appendBundle(buf.b, items, pending)
		res, err := w.do(ctx, http.MethodPost, w.base, buf, units(len(buf.b)))
		buf.release()
		if err != nil {
			return err
		}
		for _, i := range pending {
			out[i].Attempts++
		}
		d := Classify(res.status, res.body, res.err)
		if res.err == nil && res.status == http.StatusNotFound {
			d = Decision{Kind: Fatal, Message: "HTTP 404 (data store not found)"} // the base itself is missing
		}
		retry = retry[:0]
		switch d.Kind {
		case Fatal:
			res.free(w)
			return fatalFor(res.status, d)
		case Retry:
			for _, i := range pending {
				w.setLast(&out[i], res.status, d, res.body)
				cause[i] = d.Cause
			}
			retry = append(retry, pending...)
		case DeadLetter:
			res.free(w)
			// The Bundle as a whole was refused (malformed entry, too large): find the culprit alone.
			return w.writeSingles(ctx, items, out, pending)
		case Loaded:
			var err error
			if retry, err = w.applyBatchResponse(res, out, cause, pending, retry); err != nil {
				res.free(w)
				return err
			}
		}
		res.free(w)
		if len(retry) == 0 {
			return nil
		}
		wait := bo.NextBackOff()
		if wait == backoff.Stop {
			w.exhaust(out, retry)
			return nil
		}
		wait = w.retryWait(wait, res.retryAfter)
		w.countRetries(cause, retry)
		w.log.Debug("retrying batch entries", zap.Int("entries", len(retry)), zap.Int("status", res.status), zap.Duration("wait", wait))
		if err := w.opts.clock.Sleep(ctx, wait); err != nil {
			return err
		}
		pending = append(pending[:0], retry...)
	}
	return nil
}

// applyBatchResponse classifies each entry of a batch-response; it returns the entries to retry.
func (w *Writer) applyBatchResponse(res *result, out []Outcome, cause []string, pending, retry []int) ([]int, error) {
	var br batchResponse
	if err := json.Unmarshal(res.body, &br); err != nil || br.ResourceType != "Bundle" || len(br.Entry) != len(pending) {
		d := Decision{Kind: Retry, Cause: CauseBadResponse, Message: fmt.Sprintf("HTTP %d (batch-response does not match the request)", res.status)}
		for _, i := range pending {
			w.setLast(&out[i], res.status, d, nil)
			cause[i] = d.Cause
		}
		return append(retry, pending...), nil
	}
	entryThrottled := 0
	for k, i := range pending {
		e := br.Entry[k].Response
		st := entryStatus(e.Status)
		var d Decision
		if st == 0 {
			d = Decision{Kind: Retry, Cause: CauseBadResponse, Message: "batch entry without status"}
		} else {
			d = Classify(st, e.Outcome, nil)
		}
		if d.Kind == Fatal && st == http.StatusNotFound {
			// The data store answered, so a 404 entry is about the resource.
			d = Decision{Kind: DeadLetter, Reason: ReasonRejected, Message: "HTTP 404 (entry)"}
		}
		switch d.Kind {
		case Fatal:
			return retry, fatalFor(st, d)
		case Retry:
			if st == http.StatusTooManyRequests {
				entryThrottled++
				w.throttled.Add(1)
			}
			w.setLast(&out[i], st, d, e.Outcome)
			cause[i] = d.Cause
			retry = append(retry, i)
		default:
			w.finish(&out[i], st, d, e.Outcome)
		}
	}
	if entryThrottled > 0 {
		// Weaker evidence than a whole-request 429: the server took the request.
		ev := entryWeight * float64(entryThrottled) / float64(len(pending))
		w.congestion(w.pace.addEvidence(w.opts.clock.Now(), res.sentAt, ev), 0)
	}
	return retry, nil
}

// writeSingles PUTs items[idx...] one per request, concurrently under the Writer's limits.
func (w *Writer) writeSingles(ctx context.Context, items []Item, out []Outcome, idx []int) error {
	if len(idx) == 1 {
		return w.writeOne(ctx, items[idx[0]], &out[idx[0]])
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(w.opts.Concurrency)
	for _, i := range idx {
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error { return w.writeOne(gctx, items[i], &out[i]) })
	}
	err := g.Wait()
	var fe *FatalError
	if errors.As(err, &fe) {
		return err
	}
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	return err
}

func (w *Writer) writeOne(ctx context.Context, it Item, o *Outcome) error {
	u := w.base + it.Type + "/" + it.ID
	var bo *backoff.ExponentialBackOff // built on the first retry: most PUTs never need it
	buf := &body{b: it.Body}           // not pooled: the item's own bytes, read-only
	buf.refs.Store(1)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		res, err := w.do(ctx, http.MethodPut, u, buf, units(len(buf.b)))
		if err != nil {
			return err
		}
		o.Attempts++
		d := Classify(res.status, res.body, res.err)
		switch d.Kind {
		case Fatal:
			res.free(w)
			return fatalFor(res.status, d)
		case Retry:
			w.setLast(o, res.status, d, res.body)
			res.free(w)
			if bo == nil {
				bo = w.newBackOff()
			}
			wait := bo.NextBackOff()
			if wait == backoff.Stop {
				o.Reason = ReasonRetriesExhausted
				w.failed.Add(1)
				w.log.Warn("retries exhausted", zap.Int("resources", 1), zap.String("cause", d.Cause))
				return nil
			}
			w.countRetry(d.Cause, 1)
			if err := w.opts.clock.Sleep(ctx, w.retryWait(wait, res.retryAfter)); err != nil {
				return err
			}
		default:
			w.finish(o, res.status, d, res.body)
			res.free(w)
			return nil
		}
	}
}

// setLast records the latest failure on an outcome that will be retried.
func (w *Writer) setLast(o *Outcome, status int, d Decision, oo []byte) {
	o.HTTPStatus, o.Message = status, d.Message
	o.OperationOutcome = nil
	if isOutcome(oo) {
		o.OperationOutcome = append(json.RawMessage(nil), oo...)
	}
}

// finish records a final Loaded or DeadLetter decision.
func (w *Writer) finish(o *Outcome, status int, d Decision, oo []byte) {
	w.setLast(o, status, d, oo)
	if d.Kind == Loaded {
		o.Loaded, o.Created, o.Reason = true, d.Created, ""
		o.OperationOutcome = nil
		if d.Created {
			w.created.Add(1)
		} else {
			w.updated.Add(1)
		}
		return
	}
	o.Reason = d.Reason
	w.failed.Add(1)
}

func (w *Writer) exhaust(out []Outcome, idx []int) {
	for _, i := range idx {
		out[i].Reason = ReasonRetriesExhausted
		if out[i].Message == "" {
			out[i].Message = "retries exhausted"
		}
	}
	w.failed.Add(int64(len(idx)))
	w.log.Warn("retries exhausted", zap.Int("resources", len(idx)))
}

func (w *Writer) countRetries(cause []string, idx []int) {
	byCause := map[string]int64{}
	for _, i := range idx {
		byCause[cause[i]]++
	}
	for c, n := range byCause {
		w.countRetry(c, n)
	}
}

func (w *Writer) countRetry(cause string, n int64) {
	w.retries.Add(n)
	w.causesMu.Lock()
	w.causes[cause] += n
	w.causesMu.Unlock()
}

// congestion cuts the concurrency limit after the pacer judged a 429 to be congestion (see
// pacing.go) and cut the rate.
func (w *Writer) congestion(cut bool, retryAfter time.Duration) {
	if !cut {
		return
	}
	w.limit.cut()
	_, l := w.limit.state()
	w.log.Info("target throttled: slowing down", zap.Float64("units_per_second", w.pace.currentRate()),
		zap.Int("concurrency", l), zap.Duration("retry_after", retryAfter), zap.Float64("background_429_share", w.pace.backgroundShare()))
}

// retryWait is the wait before re-sending after a failure: the backoff, or the server's
// Retry-After plus up to 20% jitter (so items throttled together do not return together) when
// that is longer.
func (w *Writer) retryWait(backoffWait, retryAfter time.Duration) time.Duration {
	if retryAfter > 0 && !w.opts.noJitter {
		retryAfter += rand.N(retryAfter/5 + 1)
	}
	return max(backoffWait, retryAfter)
}

// units is the write-unit cost of a request body: one per started KB.
func units(n int) float64 {
	return float64((n + 1023) / 1024)
}

// result is one HTTP exchange.
type result struct {
	status     int
	body       []byte // valid until free
	err        error  // transport error
	retryAfter time.Duration
	sentAt     time.Time
	buf        *bytes.Buffer
}

func (r *result) free(w *Writer) {
	if r.buf != nil {
		r.buf.Reset()
		w.respBufs.Put(r.buf)
		r.buf, r.body = nil, nil
	}
}

// do paces, signs and sends one request. The returned error is only for ctx or credentials;
// transport failures are in result.err. The request itself is detached from ctx so that a
// cancellation lets requests in flight finish instead of leaving their outcome unknown.
func (w *Writer) do(ctx context.Context, method, u string, b *body, cost float64) (*result, error) {
	clk := w.opts.clock
	for {
		// A wait is booked for at most maxBooked: past that the units are
		// given back and booked again later, so a rate that recovers
		// meanwhile (or a gate that lifts) shortens the wait instead of
		// leaving goroutines asleep on a debt computed at the lowest rate.
		wait := w.pace.reserve(clk.Now(), cost)
		if wait <= maxBooked {
			if err := clk.Sleep(ctx, wait); err != nil {
				return nil, err
			}
			break
		}
		w.pace.unreserve(cost)
		if err := clk.Sleep(ctx, maxBooked); err != nil {
			return nil, err
		}
	}
	for { // a 429 seen meanwhile may have moved the gate further
		g := w.pace.gateWait(clk.Now())
		if g <= 0 {
			break
		}
		if err := clk.Sleep(ctx, g); err != nil {
			return nil, err
		}
	}
	if err := w.limit.acquire(ctx); err != nil {
		return nil, err
	}
	res, err := w.send(context.WithoutCancel(ctx), method, u, b)
	if err != nil {
		w.limit.release(false)
		return nil, err
	}
	clean := res.err == nil && res.status < 300
	w.limit.release(clean)
	now := clk.Now()
	switch {
	case res.err != nil:
		// No answer: neither accepted nor throttled.
	case res.status == http.StatusTooManyRequests:
		w.throttled.Add(1)
		w.congestion(w.pace.observe(now, res.sentAt, 1, min(res.retryAfter, w.opts.Retry.Max)), res.retryAfter)
	default:
		if clean {
			w.pace.accepted(now, cost)
		}
		w.pace.observe(now, res.sentAt, 0, 0)
	}
	return res, nil
}

// maxBooked is the longest wait do books with the pacer at once.
const maxBooked = 2 * time.Second

func (w *Writer) send(ctx context.Context, method, u string, b *body) (*result, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return nil, fmt.Errorf("loader: build request: %w", err)
	}
	var payload []byte
	if b != nil {
		payload = b.b
		req.Body = b.reader()
		req.GetBody = func() (io.ReadCloser, error) { return b.reader(), nil }
		req.ContentLength = int64(len(payload))
		req.Header.Set("Content-Type", "application/fhir+json")
	}
	req.Header.Set("Accept", "application/fhir+json")
	res := &result{sentAt: w.opts.clock.Now()}
	if w.opts.Auth == AuthSigV4 {
		if err := w.sign(ctx, req, payload, res.sentAt); err != nil {
			if req.Body != nil {
				req.Body.Close()
			}
			return nil, err
		}
	}
	w.requests.Add(1)
	start := time.Now()
	resp, err := w.client.Do(req)
	if err != nil {
		res.err = err
		w.observe(start)
		return res, nil
	}
	defer resp.Body.Close()
	res.status = resp.StatusCode
	res.retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), res.sentAt)
	res.buf = w.respBufs.Get().(*bytes.Buffer)
	if _, err := res.buf.ReadFrom(io.LimitReader(resp.Body, maxResponseBytes)); err != nil {
		res.err = err // a cut-off response is a network failure: retry
	}
	res.body = res.buf.Bytes()
	w.observe(start)
	return res, nil
}

func (w *Writer) observe(start time.Time) {
	if w.opts.ObserveLatency != nil {
		w.opts.ObserveLatency(time.Since(start))
	}
}

// sign adds a SigV4 signature over the body hash (sent as X-Amz-Content-Sha256); the signer adds
// X-Amz-Security-Token for session credentials.
func (w *Writer) sign(ctx context.Context, req *http.Request, payload []byte, now time.Time) error {
	creds, err := w.opts.Credentials.Retrieve(ctx)
	if err != nil {
		return &FatalError{Message: fmt.Sprintf("no usable AWS credentials: %v", err)}
	}
	return signRequest(ctx, w.signer, creds, req, payload, w.opts.Service, w.opts.Region, now)
}

func signRequest(ctx context.Context, s *v4.Signer, creds aws.Credentials, req *http.Request, payload []byte, service, region string, now time.Time) error {
	sum := sha256.Sum256(payload)
	hash := hex.EncodeToString(sum[:])
	req.Header.Set("X-Amz-Content-Sha256", hash)
	if err := s.SignHTTP(ctx, creds, req, hash, service, region, now); err != nil {
		return fmt.Errorf("loader: sign request: %w", err)
	}
	return nil
}

// parseRetryAfter reads Retry-After as delay-seconds or an HTTP date; 0 when absent or invalid.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil {
		if s < 0 {
			return 0
		}
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d
		}
	}
	return 0
}
