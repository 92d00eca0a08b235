// Package fhirstore is `fhirload serve`: a local FHIR R4 server that behaves
// like AWS HealthLake's FHIR API (reference/healthlake-fhir-api.txt) and
// stores its data in SQLite (pure Go, WAL mode, one file of mode 0600).
//
// The base URL is /datastore/{ID}/r4/. Served: create (POST, 201), read,
// vread (/_history/{vid}), instance history, update (PUT; 201 when it creates,
// 200 when it updates; If-Match honoured), delete (204; then read is 410),
// search (GET /{type}?… or POST /{type}/_search) with searchset Bundles,
// batch and transaction Bundles posted to the base (at most 500 entries), and
// GET metadata. Every write sets meta.versionId and meta.lastUpdated; every
// other byte of the resource is kept as sent (whitespace aside), so number
// literals survive unchanged.
//
// Search parameters: every type supports _id, _lastUpdated and identifier;
// Patient adds name, family, given, gender and birthdate; Observation adds
// patient, subject, category, code and date. Tokens take code, system|code,
// system| and |code; strings match case-insensitively by prefix (:exact and
// :contains too; accents are not folded); dates take the prefixes eq ne gt lt
// ge le sa eb ap and partial dates, a repeated parameter is ANDed and
// comma-separated values are ORed. Results are ordered by insertion, 100 per
// page at most (_count), with next links that page by cursor; _summary=count
// returns the total only. An unknown parameter is 400 naming it.
//
// Errors follow section 1.5 of the reference: OperationOutcome bodies for
// 400, 404, 405, 410, 412, 413, 415 and 422 (issue code "duplicate" when a
// create carries an identifier system and value another resource of the type
// has), AWS-style JSON ({"__type", "message"}) for 401, 403, 429 and 500.
// Error texts name resource types, ids and parameters, never resource content.
//
// Authentication is AWS Signature Version 4 for service "healthlake" in the
// configured region; keys carry SMART system scopes, checked per interaction
// and, in Bundles, per entry: a batch entry without scope gets 403 in its
// response.outcome, a transaction with such an entry fails whole with 403.
// A token bucket of write units (one per started KB of body) answers 429 with
// Retry-After, and chaos options inject 429, 500 and latency for client tests.
//
// Request bodies are admitted before they are read, so that no client can
// make the server hold memory or connections it did not grant (intake.go):
// a body announced over MaxBodyBytes is refused (413); the signature is
// checked from the headers — in full when the client sends the payload hash
// in X-Amz-Content-Sha256 (AWS SDKs and fhirload do), else everything but
// the hash — and an unsigned or wrongly signed request is refused (401)
// without reading its body; the announced length is then reserved from a
// budget of buffered bytes shared by all requests (MaxBufferedBytes, 64 MiB):
// a request that cannot get it within a second gets 429 with Retry-After: 1.
// The body must arrive within BodyReadTimeout (30 s; 408 beyond); it is
// hashed as it arrives and the signature check finished with the hash. Each
// refusal closes the connection without reading the rest of the body.
// --auth none has the same budget and deadline. Serve's http.Server bounds
// headers to 64 KiB arriving within 10 s and closes connections idle for
// 2 minutes.
//
// Storage is SQLite in WAL mode with synchronous=NORMAL: committed writes
// survive a crash of the process; a power loss or OS crash may lose the last
// transactions. Concurrent writes are group-committed: one SQLite transaction
// holds several requests, each in its own savepoint, so each request is still
// all-or-nothing on its own. The search index keys its rows by a small
// integer per (type, parameter) and keeps values as sent (an identifier
// "00123" is not the number 123); each resource row lists its index rows, so
// an update that leaves them unchanged (a rerun) does not touch the index.
// The layout's version is PRAGMA user_version: a data folder written by an
// older version is migrated when opened (its index rebuilt).
//
// Batch-response entries carry the resource only with
// "Prefer: return=representation"; single writes return it unless
// "Prefer: return=minimal".
package fhirstore
