package fhirstore

import (
	"net/http"
	"slices"
	"strings"
)

// CORS (Options.CORSOrigins): a request whose Origin is allowed gets
// Access-Control-Allow-Origin (the origin, or * when every origin is
// allowed) and the response headers a FHIR client reads exposed (ETag,
// Location, Last-Modified, …). An OPTIONS preflight (Origin and
// Access-Control-Request-Method) is answered before authentication, as
// browsers send it unsigned: 204 with the methods and headers allowed when
// the origin is, 403 (OperationOutcome naming the cause) when it is not or
// CORS is off. An OPTIONS that is not a preflight is answered 204 with
// Allow listing the methods the server takes.

const (
	corsMethods = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
	corsHeaders = "Accept, Authorization, Content-Type, If-Match, If-Modified-Since, If-None-Exist, If-None-Match, Prefer, " +
		"X-Amz-Content-Sha256, X-Amz-Date, X-Amz-Security-Token, X-Amz-Target"
	corsExposed = "ETag, Location, Content-Location, Last-Modified, Preference-Applied, Retry-After, X-Amzn-Requestid"
)

// corsOrigin returns the Access-Control-Allow-Origin value for origin, or
// "" when it is not allowed.
func (s *Server) corsOrigin(origin string) string {
	if origin == "" {
		return ""
	}
	for _, o := range s.opts.CORSOrigins {
		if o == "*" {
			return "*"
		}
		if strings.EqualFold(strings.TrimSuffix(o, "/"), origin) {
			return origin
		}
	}
	return ""
}

// cors sets the CORS headers of r's response and answers OPTIONS; it
// returns true when it has answered.
func (s *Server) cors(w http.ResponseWriter, r *http.Request) bool {
	origin := r.Header.Get("Origin")
	allowed := s.corsOrigin(origin)
	h := w.Header()
	if allowed != "" {
		h.Set("Access-Control-Allow-Origin", allowed)
		if allowed != "*" {
			h.Add("Vary", "Origin")
		}
	}
	if r.Method != http.MethodOptions {
		if allowed != "" {
			h.Set("Access-Control-Expose-Headers", corsExposed)
		}
		return false
	}
	reqMethod := r.Header.Get("Access-Control-Request-Method")
	if origin == "" || reqMethod == "" {
		h.Set("Allow", corsMethods)
		w.WriteHeader(http.StatusNoContent)
		return true
	}
	if allowed == "" {
		reason := "CORS is off: start serve with --cors-origin to allow browser clients."
		if len(s.opts.CORSOrigins) > 0 {
			reason = "Origin not allowed: it is not one of --cors-origin."
		}
		writeError(w, errf(http.StatusForbidden, "forbidden", "%s", reason))
		return true
	}
	if !slices.Contains(strings.Split(strings.ReplaceAll(corsMethods, " ", ""), ","), strings.ToUpper(reqMethod)) {
		writeError(w, errf(http.StatusForbidden, "not-supported", "CORS preflight: method %s is not served.", safeName(reqMethod)))
		return true
	}
	h.Set("Access-Control-Allow-Methods", corsMethods)
	if rh := r.Header.Get("Access-Control-Request-Headers"); rh != "" {
		h.Set("Access-Control-Allow-Headers", rh)
	} else {
		h.Set("Access-Control-Allow-Headers", corsHeaders)
	}
	h.Set("Access-Control-Max-Age", "600")
	w.WriteHeader(http.StatusNoContent)
	return true
}
