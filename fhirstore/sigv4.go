package fhirstore

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

const (
	sigv4Algorithm = "AWS4-HMAC-SHA256"
	sigv4Service   = "healthlake"
	amzDateFormat  = "20060102T150405Z"
	maxClockSkew   = 5 * time.Minute
)

// verifier checks AWS Signature Version 4 on incoming requests.
type verifier struct {
	region string
	keys   map[string]verifierKey
	now    func() time.Time
}

type verifierKey struct {
	secret string
	grants grants
}

func newVerifier(region string, keys []Key, now func() time.Time) *verifier {
	v := &verifier{region: region, keys: make(map[string]verifierKey, len(keys)), now: now}
	for _, k := range keys {
		v.keys[k.AccessKeyID] = verifierKey{secret: k.SecretAccessKey, grants: newGrants(k.Scopes)}
	}
	return v
}

func unauthorized(text string) *fhirError {
	return &fhirError{status: http.StatusUnauthorized, code: "login", text: text}
}

// sigv4Auth is the parsed Authorization header.
type sigv4Auth struct {
	accessKey, date, region, service string
	signedHeaders                    []string
	signature                        []byte
}

func parseAuthorization(h string) (sigv4Auth, bool) {
	var a sigv4Auth
	rest, ok := strings.CutPrefix(h, sigv4Algorithm+" ")
	if !ok {
		return a, false
	}
	var cred, signed, sig string
	for part := range strings.SplitSeq(rest, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return a, false
		}
		switch k {
		case "Credential":
			cred = v
		case "SignedHeaders":
			signed = v
		case "Signature":
			sig = v
		default:
			return a, false
		}
	}
	c := strings.Split(cred, "/")
	if len(c) != 5 || c[0] == "" || c[4] != "aws4_request" || signed == "" {
		return a, false
	}
	s, err := hex.DecodeString(sig)
	if err != nil || len(s) != sha256.Size {
		return a, false
	}
	a.accessKey, a.date, a.region, a.service = c[0], c[1], c[2], c[3]
	a.signedHeaders = strings.Split(signed, ";")
	a.signature = s
	return a, true
}

// sigCheck is a signature check begun from a request's headers and
// finished with the SHA-256 of its body, which the server computes while the
// body streams in. When the client declared the payload hash
// (X-Amz-Content-Sha256), the signature was already verified against it in
// begin, and finish only compares the body with the declared hash: a request
// whose signature is wrong is refused before a byte of its body is read.
type sigCheck struct {
	grants grants
	// declared is the payload hash the client sent and signed, or nil.
	declared []byte
	// Without a declared hash, the signature is checked in finish: the
	// candidate canonical requests up to (not including) the payload hash.
	prefixes   []string
	amzDate    string
	scope      string
	signingKey []byte
	signature  []byte
}

// begin checks everything of r's signature that its headers carry: the
// Authorization header's form, the key, the credential scope, the date and
// clock skew, the signed headers, and — when X-Amz-Content-Sha256 is sent —
// the signature itself. It never reads the body.
func (v *verifier) begin(r *http.Request) (*sigCheck, *fhirError) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return nil, unauthorized("Missing Authentication Token: the request must be signed with AWS Signature Version 4.")
	}
	a, ok := parseAuthorization(h)
	if !ok {
		return nil, unauthorized("Malformed Authorization header: expected AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=….")
	}
	key, ok := v.keys[a.accessKey]
	if !ok {
		return nil, unauthorized("The security token included in the request is invalid: unknown access key.")
	}
	if a.service != sigv4Service || a.region != v.region {
		return nil, unauthorized("Credential should be scoped to region '" + v.region + "' and service '" + sigv4Service + "'.")
	}
	amzDate := r.Header.Get("X-Amz-Date")
	t, err := time.Parse(amzDateFormat, amzDate)
	if err != nil {
		return nil, unauthorized("Missing or malformed X-Amz-Date header.")
	}
	if a.date != amzDate[:8] {
		return nil, unauthorized("Credential date does not match X-Amz-Date.")
	}
	if d := v.now().Sub(t); d > maxClockSkew || d < -maxClockSkew {
		return nil, unauthorized("Signature expired or not yet valid: request time is more than 5 minutes from the server time.")
	}
	if !slices.Contains(a.signedHeaders, "host") || !slices.IsSorted(a.signedHeaders) {
		return nil, unauthorized("Malformed Authorization header: SignedHeaders must be sorted and include host.")
	}
	if r.Header.Get("X-Amz-Security-Token") != "" && !slices.Contains(a.signedHeaders, "x-amz-security-token") {
		return nil, unauthorized("X-Amz-Security-Token must be a signed header.")
	}

	c := &sigCheck{grants: key.grants, amzDate: amzDate, signature: a.signature,
		scope:      a.date + "/" + a.region + "/" + a.service + "/aws4_request",
		signingKey: deriveSigningKey(key.secret, a.date, a.region, a.service)}
	headers := canonicalHeaders(r, a.signedHeaders)
	signedList := strings.Join(a.signedHeaders, ";")
	// Clients disagree on how to canonicalise paths and queries: AWS SDKs
	// escape the path a second time and re-encode the query, botocore signs
	// the query as sent. Each candidate is a full, valid SigV4 form.
	escaped := r.URL.EscapedPath()
	paths := []string{awsEscape(escaped, true)}
	if paths[0] != escaped {
		paths = append(paths, escaped)
	}
	queries := []string{canonicalQueryEncoded(r.URL.RawQuery)}
	if raw := canonicalQueryRaw(r.URL.RawQuery); raw != queries[0] {
		queries = append(queries, raw)
	}
	for _, p := range paths {
		for _, q := range queries {
			c.prefixes = append(c.prefixes, r.Method+"\n"+p+"\n"+q+"\n"+headers+"\n"+signedList+"\n")
		}
	}
	if ph := r.Header.Get("X-Amz-Content-Sha256"); ph != "" {
		d, err := hex.DecodeString(ph)
		if err != nil || len(d) != sha256.Size || strings.ToLower(ph) != ph {
			return nil, unauthorized("x-amz-content-sha256 must be the hex SHA-256 of the request body.")
		}
		if !c.matches(ph) {
			return nil, unauthorized("The request signature we calculated does not match the signature you provided, for the payload hash in x-amz-content-sha256.")
		}
		c.declared = d
	}
	return c, nil
}

// matches reports whether the signature is right for the payload hash ph
// (lowercase hex) in one of the candidate canonical forms.
func (c *sigCheck) matches(ph string) bool {
	match := false
	for _, p := range c.prefixes {
		crSum := sha256.Sum256([]byte(p + ph))
		sts := sigv4Algorithm + "\n" + c.amzDate + "\n" + c.scope + "\n" + hex.EncodeToString(crSum[:])
		if hmac.Equal(hmacSHA256(c.signingKey, sts), c.signature) {
			match = true
		}
	}
	return match
}

// finish completes the check with the SHA-256 of the body as received and
// returns the scopes of the key that signed the request.
func (c *sigCheck) finish(bodySum []byte) (grants, *fhirError) {
	if c.declared != nil {
		if !bytes.Equal(c.declared, bodySum) {
			return nil, unauthorized("The provided x-amz-content-sha256 header does not match the request body.")
		}
		return c.grants, nil
	}
	if !c.matches(hex.EncodeToString(bodySum)) {
		return nil, unauthorized("The request signature we calculated does not match the signature you provided.")
	}
	return c.grants, nil
}

func canonicalHeaders(r *http.Request, names []string) string {
	var b strings.Builder
	for _, n := range names {
		b.WriteString(n)
		b.WriteByte(':')
		if n == "host" {
			b.WriteString(strings.TrimSpace(r.Host))
		} else {
			for i, v := range r.Header.Values(n) {
				if i > 0 {
					b.WriteByte(',')
				}
				b.WriteString(strings.Join(strings.Fields(v), " "))
			}
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// canonicalQueryEncoded decodes the query and re-encodes it the SigV4 way.
func canonicalQueryEncoded(raw string) string {
	if raw == "" {
		return ""
	}
	var pairs []string
	for part := range strings.SplitSeq(raw, "&") {
		if part == "" {
			continue
		}
		k, v, _ := strings.Cut(part, "=")
		if dk, err := url.QueryUnescape(k); err == nil {
			k = dk
		}
		if dv, err := url.QueryUnescape(v); err == nil {
			v = dv
		}
		pairs = append(pairs, awsEscape(k, false)+"="+awsEscape(v, false))
	}
	slices.Sort(pairs)
	return strings.Join(pairs, "&")
}

// canonicalQueryRaw sorts the query's pairs as sent, as botocore does.
func canonicalQueryRaw(raw string) string {
	if raw == "" {
		return ""
	}
	type kv struct{ k, v string }
	var pairs []kv
	for part := range strings.SplitSeq(raw, "&") {
		k, v, _ := strings.Cut(part, "=")
		pairs = append(pairs, kv{k, v})
	}
	slices.SortFunc(pairs, func(a, b kv) int {
		if c := strings.Compare(a.k, b.k); c != 0 {
			return c
		}
		return strings.Compare(a.v, b.v)
	})
	out := make([]string, len(pairs))
	for i, p := range pairs {
		out[i] = p.k + "=" + p.v
	}
	return strings.Join(out, "&")
}

// awsEscape percent-encodes everything but RFC 3986 unreserved characters
// (and '/' when keepSlash).
func awsEscape(s string, keepSlash bool) string {
	const hexDigits = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_', c == '.', c == '~':
			b.WriteByte(c)
		case c == '/' && keepSlash:
			b.WriteByte(c)
		default:
			b.WriteByte('%')
			b.WriteByte(hexDigits[c>>4])
			b.WriteByte(hexDigits[c&15])
		}
	}
	return b.String()
}

func hmacSHA256(key []byte, data string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(data))
	return m.Sum(nil)
}

func deriveSigningKey(secret, date, region, service string) []byte {
	k := hmacSHA256([]byte("AWS4"+secret), date)
	k = hmacSHA256(k, region)
	k = hmacSHA256(k, service)
	return hmacSHA256(k, "aws4_request")
}
