package loader

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/fhirload/fhirload/internal/jsonscan"
)

// Read methods of a Reader.
const (
	// ReadBatch reads with batch Bundles of GET entries (POST to the base).
	// The default: a read by id is strongly consistent on HealthLake.
	ReadBatch = "batch"
	// ReadSearch reads with GET {Type}?_id=a,b,c searches (at most
	// MaxSearchIDs ids each). Cheaper in requests, but a search index may lag
	// the writes (HealthLake's is eventually consistent: a resource written a
	// moment ago may be absent, or older, in search results).
	ReadSearch = "search"
)

// MaxSearchIDs is the most ids one _id search asks for (HealthLake's and
// fhirload serve's largest _count).
const MaxSearchIDs = 100

// ReadOptions configures what a Reader adds to Options.
type ReadOptions struct {
	Method string // ReadBatch (default) or ReadSearch
	// UnitsPerSecond caps the read rate: one read unit per resource asked
	// for (a Bundle of 100 GETs or a search for 100 ids costs 100 units, a
	// single read 1). 0 means no configured cap (the adaptive rate still
	// applies once the server throttles).
	UnitsPerSecond float64
}

// Ref names one resource to read back.
type Ref struct{ Type, ID string }

// ReadStatus is what a read found.
type ReadStatus uint8

// The read statuses.
const (
	// Found: the target holds the resource; Got.Body is its JSON.
	Found ReadStatus = iota + 1
	// Absent: the target does not hold it (404, 410 Gone, or not in the
	// search results).
	Absent
	// Unread: it could not be read: the server refused the read (a 4xx
	// other than 404/410) or retries were exhausted; Got.Message says why.
	Unread
)

// Got is the result of reading one Ref.
type Got struct {
	Status     ReadStatus
	Body       json.RawMessage // Found: the resource as returned (owned by the caller)
	HTTPStatus int             // the last status seen (0 for a network error)
	Message    string          // Unread: short and PHI-free
	Attempts   int
}

// Reader reads resources back from the target, for verify. It is a Writer's
// request engine pointed at reads — the same SigV4 signing, TLS rules,
// Classify, backoff honouring Retry-After, adaptive concurrency and pacer —
// with its own concurrency limit and its own pacer in read units, so that
// reading never spends the write budget. It is safe for concurrent use.
type Reader struct {
	w      *Writer
	method string
}

// NewReader checks opts and ro and builds a Reader. opts.Mode and
// opts.WriteUnitsPerSecond are not used; opts.BatchSize caps the refs of
// one Read.
func NewReader(opts Options, ro ReadOptions) (*Reader, error) {
	switch ro.Method {
	case "":
		ro.Method = ReadBatch
	case ReadBatch, ReadSearch:
	default:
		return nil, fmt.Errorf("loader: read method %q: want %q or %q", ro.Method, ReadBatch, ReadSearch)
	}
	if ro.UnitsPerSecond < 0 {
		return nil, fmt.Errorf("loader: read units per second %g: want >= 0", ro.UnitsPerSecond)
	}
	opts.Mode, opts.WriteUnitsPerSecond = ModeBatch, ro.UnitsPerSecond
	w, err := New(opts)
	if err != nil {
		return nil, err
	}
	return &Reader{w: w, method: ro.Method}, nil
}

// Close releases idle connections of the Reader's own HTTP client.
func (r *Reader) Close() { r.w.Close() }

// Check probes the target like Writer.Check.
func (r *Reader) Check(ctx context.Context) error { return r.w.Check(ctx) }

// Stats returns the Reader's counters (Created, Updated and Failed stay 0).
func (r *Reader) Stats() Stats { return r.w.Stats() }

// Method is the read method in use.
func (r *Reader) Method() string { return r.method }

// Read reads refs (at most BatchSize) and returns one Got per ref, in order.
//
// Retryable failures (429, 5xx, network) are retried with exponential
// backoff honouring Retry-After until RetryOptions.MaxElapsed; then the refs
// still unread are Unread. A Bundle or search the server refuses as a whole
// (400, 405, 413, 414, 422: it does not do batch reads or long id lists) is
// redone one GET /{Type}/{id} per ref.
//
// A fatal condition (401, 403, a missing data store, an untrusted
// certificate) returns a *FatalError; when ctx ends, ctx.Err(). With an
// error the results are meaningless.
func (r *Reader) Read(ctx context.Context, refs []Ref) ([]Got, error) {
	if len(refs) > r.w.opts.BatchSize {
		return nil, fmt.Errorf("loader: %d refs exceed batch size %d", len(refs), r.w.opts.BatchSize)
	}
	out := make([]Got, len(refs))
	pending := make([]int, 0, len(refs))
	for i, ref := range refs {
		if !validType(ref.Type) || !validID(ref.ID) {
			out[i] = Got{Status: Unread, Message: "invalid resource type or id"}
			continue
		}
		pending = append(pending, i)
	}
	var err error
	switch {
	case len(pending) == 0:
	case len(pending) == 1:
		err = r.readOne(ctx, refs[pending[0]], &out[pending[0]])
	case r.method == ReadSearch:
		err = r.readSearches(ctx, refs, out, pending)
	default:
		err = r.readBatch(ctx, refs, out, pending)
	}
	if err == nil {
		err = ctx.Err()
	}
	return out, err
}

// readEntry is what the Reader takes of one entry of a batch-response or a
// searchset.
type readEntry struct {
	resource []byte // the resource's JSON, a slice of the response
	status   string // response.status
	outcome  []byte // response.outcome
	mode     string // search.mode
}

// parseReadBundle scans a batch-response or searchset Bundle (owned by the
// caller: the entries' resources are slices of it) for its type, entries
// and next link. It scans rather than decodes: the resources are compared
// byte-wise afterwards, and encoding/json spent more CPU on them than
// everything else the client does.
func parseReadBundle(body []byte) (typ string, entries []readEntry, next string, ok bool) {
	var top [8]jsonscan.Member
	ms, ok := jsonscan.AppendMembers(top[:0], body)
	if !ok {
		return "", nil, "", false
	}
	isBundle := false
	var entryArr, linkArr []byte
	for _, m := range ms {
		switch string(m.Key) {
		case "resourceType":
			rt, _ := jsonscan.Str(m.Value)
			isBundle = rt == "Bundle"
		case "type":
			typ, _ = jsonscan.Str(m.Value)
		case "entry":
			entryArr = m.Value
		case "link":
			linkArr = m.Value
		}
	}
	if !isBundle {
		return "", nil, "", false
	}
	var elems [][]byte
	if entryArr != nil {
		if elems, ok = jsonscan.AppendElements(nil, entryArr); !ok {
			return "", nil, "", false
		}
	}
	entries = make([]readEntry, len(elems))
	var em [6]jsonscan.Member
	for i, el := range elems {
		fields, ok := jsonscan.AppendMembers(em[:0], el)
		if !ok {
			return "", nil, "", false
		}
		e := &entries[i]
		for _, f := range fields {
			switch string(f.Key) {
			case "resource":
				if v := jsonscan.Trim(f.Value); len(v) > 0 && v[0] == '{' {
					e.resource = v
				}
			case "response":
				if v, ok := jsonscan.Field(f.Value, "status"); ok {
					e.status, _ = jsonscan.Str(v)
				}
				e.outcome, _ = jsonscan.Field(f.Value, "outcome")
			case "search":
				if v, ok := jsonscan.Field(f.Value, "mode"); ok {
					e.mode, _ = jsonscan.Str(v)
				}
			}
		}
	}
	if linkArr != nil {
		links, _ := jsonscan.AppendElements(nil, linkArr)
		for _, l := range links {
			rel, _ := jsonscan.Field(l, "relation")
			if r, _ := jsonscan.Str(rel); r == "next" {
				u, _ := jsonscan.Field(l, "url")
				next, _ = jsonscan.Str(u)
			}
		}
	}
	return typ, entries, next, true
}

// readBatch reads refs[pending] with batch Bundles of GET entries until
// every one has a final result.
func (r *Reader) readBatch(ctx context.Context, refs []Ref, out []Got, pending []int) error {
	w := r.w
	bo := w.newBackOff()
	cause := make([]string, len(out))
	var retry []int
	for len(pending) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		buf := getBody(&w.bodies)
		buf.b = appendReadBundle(buf.b, refs, pending)
		res, err := w.do(ctx, http.MethodPost, w.base, buf, float64(len(pending)))
		buf.release()
		if err != nil {
			return err
		}
		for _, i := range pending {
			out[i].Attempts++
		}
		d := Classify(res.status, res.body, res.err)
		if res.err == nil && res.status == http.StatusNotFound {
			d = Decision{Kind: Fatal, Message: "HTTP 404 (data store not found)"}
		}
		retry = retry[:0]
		switch d.Kind {
		case Fatal:
			res.free(w)
			return fatalFor(res.status, d)
		case DeadLetter:
			res.free(w)
			w.log.Debug("batch read refused as a whole; reading one by one", zap.Int("status", res.status))
			return r.readSingles(ctx, refs, out, pending)
		case Retry:
			for _, i := range pending {
				setUnread(&out[i], res.status, d.Message)
				cause[i] = d.Cause
			}
			retry = append(retry, pending...)
		case Loaded:
			var err error
			retry, err = r.applyReadResponse(res, out, cause, pending, retry)
			if err != nil {
				res.free(w)
				return err
			}
		}
		res.free(w)
		if len(retry) == 0 {
			return nil
		}
		if err := r.backoff(ctx, bo, res.retryAfter, cause, retry); err != nil {
			if errors.Is(err, errExhausted) {
				r.exhaust(out, retry)
				return nil
			}
			return err
		}
		pending = append(pending[:0], retry...)
	}
	return nil
}

var errExhausted = errors.New("retries exhausted")

// backoff waits before the next attempt of idx, or returns errExhausted.
func (r *Reader) backoff(ctx context.Context, bo *backoff.ExponentialBackOff, retryAfter time.Duration, cause []string, idx []int) error {
	w := r.w
	wait := bo.NextBackOff()
	if wait == backoff.Stop {
		return errExhausted
	}
	w.countRetries(cause, idx)
	return w.opts.clock.Sleep(ctx, w.retryWait(wait, retryAfter))
}

// applyReadResponse classifies each entry of a batch-response to reads; it
// returns the entries to retry.
func (r *Reader) applyReadResponse(res *result, out []Got, cause []string, pending, retry []int) ([]int, error) {
	w := r.w
	_, entries, _, ok := parseReadBundle(bytes.Clone(res.body))
	if !ok || len(entries) != len(pending) {
		for _, i := range pending {
			setUnread(&out[i], res.status, fmt.Sprintf("HTTP %d (batch-response does not match the request)", res.status))
			cause[i] = CauseBadResponse
		}
		return append(retry, pending...), nil
	}
	throttled := 0
	for k, i := range pending {
		e := &entries[k]
		st := entryStatus(e.status)
		switch {
		case st == http.StatusOK && len(e.resource) > 0:
			out[i] = Got{Status: Found, Body: e.resource, HTTPStatus: st, Attempts: out[i].Attempts}
			continue
		case st == http.StatusNotFound || st == http.StatusGone:
			out[i] = Got{Status: Absent, HTTPStatus: st, Attempts: out[i].Attempts}
			continue
		}
		var d Decision
		if st == 0 || st == http.StatusOK {
			d = Decision{Kind: Retry, Cause: CauseBadResponse, Message: "batch entry without status or resource"}
		} else {
			d = Classify(st, e.outcome, nil)
		}
		switch d.Kind {
		case Fatal:
			return retry, fatalFor(st, d)
		case Retry:
			if st == http.StatusTooManyRequests {
				throttled++
				w.throttled.Add(1)
			}
			setUnread(&out[i], st, d.Message)
			cause[i] = d.Cause
			retry = append(retry, i)
		default:
			setUnread(&out[i], st, d.Message)
		}
	}
	if throttled > 0 {
		ev := entryWeight * float64(throttled) / float64(len(pending))
		w.congestion(w.pace.addEvidence(w.opts.clock.Now(), res.sentAt, ev), 0)
	}
	return retry, nil
}

// readSearches reads refs[pending] with _id searches, one type and at most
// MaxSearchIDs ids at a time.
func (r *Reader) readSearches(ctx context.Context, refs []Ref, out []Got, pending []int) error {
	for len(pending) > 0 {
		typ := refs[pending[0]].Type
		var group, rest []int
		seen := map[string]bool{}
		for _, i := range pending {
			switch {
			case refs[i].Type != typ:
				rest = append(rest, i)
			case seen[refs[i].ID]:
				group = append(group, i) // asked for already: shares its result
			case len(seen) < MaxSearchIDs:
				seen[refs[i].ID] = true
				group = append(group, i)
			default:
				rest = append(rest, i)
			}
		}
		if err := r.readSearch(ctx, refs, out, typ, group); err != nil {
			return err
		}
		pending = rest
	}
	return nil
}

// readSearch reads one group of refs of type typ with an _id search,
// following next links while some are not found yet.
func (r *Reader) readSearch(ctx context.Context, refs []Ref, out []Got, typ string, group []int) error {
	w := r.w
	bo := w.newBackOff()
	cause := make([]string, len(out))
	ids := uniqueIDs(refs, group)
	u := w.base + typ + "?_id=" + strings.Join(ids, ",") + "&_count=" + strconv.Itoa(len(ids))
	found := map[string]json.RawMessage{}
	for page := 0; u != ""; {
		if err := ctx.Err(); err != nil {
			return err
		}
		res, err := w.do(ctx, http.MethodGet, u, nil, float64(len(ids)))
		if err != nil {
			return err
		}
		for _, i := range group {
			out[i].Attempts++
		}
		d := Classify(res.status, res.body, res.err)
		if res.err == nil && res.status == http.StatusNotFound {
			d = Decision{Kind: Fatal, Message: "HTTP 404 (data store not found)"}
		}
		switch d.Kind {
		case Fatal:
			res.free(w)
			return fatalFor(res.status, d)
		case DeadLetter:
			res.free(w)
			w.log.Debug("search refused; reading one by one", zap.Int("status", res.status))
			return r.readSingles(ctx, refs, out, group)
		case Retry:
			for _, i := range group {
				setUnread(&out[i], res.status, d.Message)
				cause[i] = d.Cause
			}
			res.free(w)
			if err := r.backoff(ctx, bo, res.retryAfter, cause, group); err != nil {
				if errors.Is(err, errExhausted) {
					r.exhaust(out, group)
					return nil
				}
				return err
			}
			continue
		}
		next, ok := r.applySearch(res.body, typ, found)
		status := res.status
		res.free(w)
		if !ok {
			for _, i := range group {
				setUnread(&out[i], status, fmt.Sprintf("HTTP %d (not a searchset Bundle)", status))
				cause[i] = CauseBadResponse
			}
			if err := r.backoff(ctx, bo, 0, cause, group); err != nil {
				if errors.Is(err, errExhausted) {
					r.exhaust(out, group)
					return nil
				}
				return err
			}
			continue
		}
		page++
		u = ""
		if next != "" && len(found) < len(ids) && page <= len(ids) {
			if !r.sameOrigin(next) {
				return &FatalError{Status: status, Message: "target sent a search link to another host (not followed)"}
			}
			u = next
			bo.Reset()
		}
	}
	for _, i := range group {
		if body, ok := found[refs[i].ID]; ok {
			out[i] = Got{Status: Found, Body: body, HTTPStatus: http.StatusOK, Attempts: out[i].Attempts}
		} else {
			out[i] = Got{Status: Absent, HTTPStatus: http.StatusOK, Attempts: out[i].Attempts}
		}
	}
	return nil
}

// applySearch adds the matches of a searchset page to found and returns its
// next link.
func (r *Reader) applySearch(body []byte, typ string, found map[string]json.RawMessage) (string, bool) {
	kind, entries, next, ok := parseReadBundle(bytes.Clone(body))
	if !ok || kind != "searchset" {
		return "", false
	}
	var ms [32]jsonscan.Member
	for _, e := range entries {
		if e.mode != "" && e.mode != "match" || len(e.resource) == 0 {
			continue
		}
		fields, ok := jsonscan.AppendMembers(ms[:0], e.resource)
		if !ok {
			continue
		}
		var rt, id string
		for _, f := range fields {
			switch string(f.Key) {
			case "resourceType":
				rt, _ = jsonscan.Str(f.Value)
			case "id":
				id, _ = jsonscan.Str(f.Value)
			}
		}
		if rt == typ && id != "" {
			found[id] = e.resource
		}
	}
	return next, true
}

// sameOrigin reports whether a link points at the target's own host: a
// signed request never goes anywhere else.
func (r *Reader) sameOrigin(link string) bool {
	u, err := url.Parse(link)
	b, berr := url.Parse(r.w.base)
	return err == nil && berr == nil && u.Scheme == b.Scheme && strings.EqualFold(u.Host, b.Host)
}

func uniqueIDs(refs []Ref, group []int) []string {
	ids := make([]string, 0, len(group))
	seen := make(map[string]bool, len(group))
	for _, i := range group {
		if id := refs[i].ID; !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	return ids
}

// readSingles reads refs[idx...] one GET each, concurrently under the
// Reader's limits.
func (r *Reader) readSingles(ctx context.Context, refs []Ref, out []Got, idx []int) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(r.w.opts.Concurrency)
	for _, i := range idx {
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error { return r.readOne(gctx, refs[i], &out[i]) })
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

// readOne reads one resource with GET /{Type}/{id}.
func (r *Reader) readOne(ctx context.Context, ref Ref, g *Got) error {
	w := r.w
	u := w.base + ref.Type + "/" + ref.ID
	var bo *backoff.ExponentialBackOff
	cause := []string{""}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		res, err := w.do(ctx, http.MethodGet, u, nil, 1)
		if err != nil {
			return err
		}
		g.Attempts++
		switch {
		case res.err == nil && res.status == http.StatusOK:
			*g = Got{Status: Found, Body: append(json.RawMessage(nil), res.body...), HTTPStatus: res.status, Attempts: g.Attempts}
			res.free(w)
			return nil
		case res.err == nil && res.status == http.StatusGone:
			*g = Got{Status: Absent, HTTPStatus: res.status, Attempts: g.Attempts}
			res.free(w)
			return nil
		}
		d := Classify(res.status, res.body, res.err)
		status, retryAfter := res.status, res.retryAfter
		res.free(w)
		switch {
		case d.Kind == Fatal:
			return fatalFor(status, d)
		case status == http.StatusNotFound: // Classify found an OperationOutcome about the resource
			*g = Got{Status: Absent, HTTPStatus: status, Attempts: g.Attempts}
			return nil
		case d.Kind == Retry:
			setUnread(g, status, d.Message)
			cause[0] = d.Cause
			if bo == nil {
				bo = w.newBackOff()
			}
			if err := r.backoff(ctx, bo, retryAfter, cause, []int{0}); err != nil {
				if errors.Is(err, errExhausted) {
					giveUp(g)
					w.log.Warn("read retries exhausted", zap.Int("resources", 1))
					return nil
				}
				return err
			}
		default:
			setUnread(g, status, d.Message)
			return nil
		}
	}
}

func setUnread(g *Got, status int, msg string) {
	g.Status, g.Body, g.HTTPStatus, g.Message = Unread, nil, status, msg
}

// exhaust marks idx as given up: they stay Unread with their last failure.
func (r *Reader) exhaust(out []Got, idx []int) {
	for _, i := range idx {
		giveUp(&out[i])
	}
	r.w.log.Warn("read retries exhausted", zap.Int("resources", len(idx)))
}

func giveUp(g *Got) {
	g.Status, g.Body = Unread, nil
	g.Message = "retries exhausted: " + g.Message
}

// appendReadBundle writes a batch Bundle of GET entries for refs[idx...].
// Types and ids were validated (FHIR syntax), so they need no escaping.
func appendReadBundle(dst []byte, refs []Ref, idx []int) []byte {
	dst = append(dst, `{"resourceType":"Bundle","type":"batch","entry":[`...)
	for k, i := range idx {
		if k > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"request":{"method":"GET","url":"`...)
		dst = append(dst, refs[i].Type...)
		dst = append(dst, '/')
		dst = append(dst, refs[i].ID...)
		dst = append(dst, `"}}`...)
	}
	return append(dst, "]}"...)
}
