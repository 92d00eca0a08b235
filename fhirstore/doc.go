// Package fhirstore is `fhirload serve`: a local FHIR R4 server that behaves
// like AWS HealthLake's FHIR API (reference/healthlake-fhir-api.txt) and
// stores its data in SQLite (pure Go, WAL mode, one file of mode 0600).
//
// The base URL is /datastore/{ID}/r4/. Served (route.go, exec.go), for
// every R4 resource type:
//
//   - create (POST, 201), conditional create (If-None-Exist, or a Bundle
//     entry's request.ifNoneExist: 200 with the match when there is one,
//     412 when several), read, vread (/_history/{vid}), conditional read
//     (If-None-Match: a version or *, If-Modified-Since: 304 without a
//     body), update (PUT; 201 when it creates, 200 when it updates),
//     conditional update (PUT Type?criteria: updates the one match, creates
//     when none, 412 when several), JSON Patch (PATCH with
//     application/json-patch+json, RFC 6902 with test-op semantics, on the
//     current version; 422 naming the operation that cannot apply; a Bundle
//     entry carries it as a Binary; FHIRPath Patch is 415; patch.go),
//     delete (204; then read is 410) and conditional delete (Type?criteria,
//     one match). If-Match is honoured by update, patch and delete (412);
//   - search (GET Type?… or POST Type/_search), system search
//     (GET ?_type=…, the parameters common to the types), compartment
//     search (Patient/X/Observation?…, Patient/X/*; compartments from the
//     R4 CompartmentDefinitions, a compartment holds its focal resource),
//     Patient/$everything and Patient/X/$everything (the Patients, their
//     compartments and what those reference; _since, _type, _count;
//     compartment.go);
//   - history at instance, type and system level (Type/X/_history,
//     Type/_history, _history) with _since, _at, _count and paging by
//     _offset; each entry says how its version was written (request.method
//     POST with url Type for a create by POST; PUT, PATCH or DELETE with
//     Type/X; history.go);
//   - batch and transaction Bundles posted to the base (at most 500
//     entries; a transaction that touches one resource in two entries is
//     400; a Bundle of reads only runs on the read connections, beside
//     the writes), and GET metadata, a CapabilityStatement generated from
//     what the server does (capability.go).
//
// A method a path does not take is 405 with Allow. Accept admitting no JSON
// (application/fhir+xml) and _format=xml are 406; answers are JSON.
// Prefer: return=minimal|representation|OperationOutcome shapes the answer
// of writes (single writes return the resource by default, batch-response
// entries only with return=representation), and Prefer: handling=strict
// (the default) refuses an unknown or unsupported search parameter with
// 400 naming it, while handling=lenient leaves it out and reports it in an
// OperationOutcome entry (search.mode outcome) of the Bundle;
// Preference-Applied says what was applied, respond-async is 400. CORS
// (Options.CORSOrigins, serve --cors-origin; cors.go): an allowed Origin
// gets Access-Control-Allow-Origin and the FHIR response headers exposed;
// an OPTIONS preflight is answered before authentication (204, or 403 for
// another origin). Every write sets meta.versionId and meta.lastUpdated;
// every other byte of the resource is kept as sent (whitespace aside), so
// number literals survive unchanged.
//
// Every R4 resource type is stored and searched. A resource is checked on
// write as a FHIR R4 resource of its type (registry): JSON, known elements
// only (an unknown element is a 400 naming it), no null values, the
// required top-level elements, codes of complete required value sets, and
// the shape of every element a search parameter reads (a 400 names the
// element: Observation.effectivePeriod.start). Options.Profile "seed" (the
// default of fhirload serve) also requires every Patient.name to have a
// family and a given name, as HealthLake's API document does (section
// 1.3): 400, issue code "required", the element in its expression.
//
// Search parameters are the R4 core package's SearchParameters (the
// registry), for every type: token, reference, date, string, quantity,
// number and uri parameters, _id, _lastUpdated, _tag, _profile, _security
// and _source, evaluated with their FHIRPath expressions (unions,
// where(resolve() is T), as/ofType, extension('…')). Composite and special
// parameters, phonetic and geographic ones, and those without an
// expression (_text, _content, _filter, _query) are not supported: a
// search using one is refused with 400 naming it and why (see
// catalog.go and extract.go for what each kind indexes). Tokens take code,
// system|code, system| and |code, and the modifiers :not, :text
// (CodeableConcept.text and Coding.display, by prefix of a word), :of-type
// (identifiers) and :missing; :above, :below, :in and :not-in need a
// terminology service and are refused. Strings match case-insensitively
// by prefix (:exact and :contains too; accents are not folded). References
// take Type/id, id, an absolute URL or urn:uuid:, a :Type modifier and
// :identifier. Dates take the prefixes eq ne gt lt ge le sa eb ap and
// partial dates; ap is ±10% of the time between the value and now (at
// least a day). Numbers and quantities take the same prefixes; eq matches
// the range the value's precision implies (5.4 is [5.35, 5.45)) and ap
// ±10%; quantity units are system|code or ||code (code or unit), compared
// as written (no UCUM conversion). uri takes :below and :above. Every
// kind takes :missing. A repeated parameter is ANDed and comma-separated
// values are ORed. Chained parameters (subject:Patient.name=…, several
// links deep) and _has (reverse chains, nested) are served from the same
// index. Results are ordered by insertion, 100 per page at most (_count),
// with next and previous links that page by cursor; _sort orders by any
// supported parameter, several keys, - for descending (a date sorts by
// its range's start ascending and its end descending; a match without a
// value sorts last; ties by insertion), paged by _offset: a sorted search
// reads the sort keys of every match from resources.keys, so it costs
// about 3 µs per match (docs/PERFORMANCE.md). _include and _revinclude
// (Type:param[:target], Type:*, :iterate) add search.mode include entries
// to a page (at most 1,000). _total takes none, estimate and accurate
// (both exact); _summary takes true, text, data and count, _elements a
// list of elements (the mandatory ones are kept; SUBSETTED is tagged); a
// read and history take _summary and _elements too. An unknown parameter
// is 400 naming it.
//
// The index holds the values of every parameter in resources.keys, and,
// in idx, those of the parameters a search has used (active.go): a
// parameter's index rows are built from resources.keys the first time a
// search needs them, and kept by every write after. The types whose
// identifiers must be unique (Options.UniqueIdentifiers; Patient and
// Observation by default) keep their identifier rows from the start.
//
// Errors follow section 1.5 of the reference: OperationOutcome bodies for
// 400, 404, 405, 410, 412, 413, 415 and 422 (issue code "duplicate" when a
// create or update gives a resource of a type in Options.UniqueIdentifiers
// an identifier system and value another resource of the type has),
// AWS-style JSON ({"__type", "message"}) for 401, 403, 429 and 500.
// Error texts name resource types, ids and parameters, never resource content.
//
// Authentication is AWS Signature Version 4 for service "healthlake" in the
// configured region; keys carry SMART system scopes, checked per interaction
// and, in Bundles, per entry: a batch entry without scope gets 403 in its
// response.outcome, a transaction with such an entry fails whole with 403.
// A search (or the criteria of a conditional interaction) that would read
// other types through _include, _revinclude, a chained parameter or _has
// needs the search scope of each type it may read (403 otherwise; name the
// target, Observation:subject:Patient, to narrow an _include); system
// search, system history and $everything need the scopes of every type.
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
// all-or-nothing on its own; their index rows are inserted once, in key
// order, after the last savepoint. The search index keys its rows by a
// small integer per (type, parameter part, sub-key) and keeps values as
// sent (an identifier "00123" is not the number 123); each resource row
// lists its index rows, so an update that leaves them unchanged (a rerun)
// does not touch the index. The layout's version is PRAGMA user_version: a
// data folder written by an older version is migrated when opened (its
// index rebuilt), and so is one indexed with another search catalog.
// Options.CacheBytes sets the SQLite page cache of each connection.
//
// # Control plane
//
// The HealthLake control plane is served on the same host (control.go):
// AWS JSON 1.0, POST / with Content-Type application/x-amz-json-1.0 and
// X-Amz-Target: HealthLake.{Operation}, signed like the data plane (SigV4,
// service "healthlake"). CreateFHIRDatastore, DescribeFHIRDatastore,
// ListFHIRDatastores, DeleteFHIRDatastore, StartFHIRImportJob,
// DescribeFHIRImportJob and ListFHIRImportJobs take and return the
// service's shapes (timestamps in epoch seconds), validate members with the
// service model's constraints and answer with its error types:
// ValidationException, ResourceNotFoundException, ConflictException,
// AccessDeniedException (a key without the scope system/*.*: the control
// plane needs every scope), InternalServerException; other operations
// (export jobs, tags) are UnknownOperationException. The aws CLI and the AWS
// SDKs work against it with only an endpoint URL. ClientToken makes
// CreateFHIRDatastore and StartFHIRImportJob idempotent. ARNs use the
// account 000000000000 and the server's region; NextToken is an offset;
// lists are in creation order.
//
// Data stores. The default one (Options.DatastoreID, "local") is Dir's own
// database, always ACTIVE, and cannot be deleted. A created data store has
// a 32-hex-digit id, its database in Dir/datastores/{id}/fhirstore.db, and
// is served under /datastore/{id}/r4/; its status goes CREATING → ACTIVE
// (CREATE_FAILED if its database cannot be created) and, on delete,
// DELETING → DELETED, when its folder is removed; a DELETED data store stays
// listed, and its data plane answers 404 like an unknown one. Deleting a
// data store with an unfinished import job is a ConflictException.
// DatastoreEndpoint is the FHIR base URL on the host the caller used.
// PreloadDataConfig and authorization strategies other than AWS_AUTH are
// refused; SseConfiguration is kept and echoed (the files are not
// encrypted by the server). The control plane's state is Dir/control.db
// (0600). Data stores created by another process on the same folder are
// seen after a restart.
//
// # Import jobs
//
// StartFHIRImportJob queues a job (SUBMITTED); jobs run one at a time, in
// the order they were submitted (IN_PROGRESS), and end COMPLETED,
// COMPLETED_WITH_ERRORS (some lines or files failed) or FAILED (the job
// could not run: its Message says why — the input cannot be listed or is
// empty, the output bucket cannot be written, the data store is gone).
// Only the process holding Dir/jobs.lock runs jobs.
//
// S3 is reached with Options.S3 or, by default, a client built from the
// standard AWS SDK configuration: region, the credential chain, and an
// endpoint from AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL (with one, objects
// are addressed path-style, as emulators need). DataAccessRoleArn is
// validated and recorded, not assumed: the server's own credentials read
// and write. Outputs are written with SSE-KMS under the job's KmsKeyId.
//
// Input: every object under the input URI's prefix except folder markers
// (keys ending in "/"), in key order, each read as NDJSON — gzip when it
// starts with the gzip magic bytes, a UTF-8 byte-order mark dropped, lines
// ending in \n or \r\n. Lines are numbered from 1 in the file; blank lines
// are skipped and not counted. Each line is checked as the data plane
// checks a PUT of it — JSON, a known resourceType, a valid id, the indexed
// elements' shapes, no other resource of the type with one of its
// identifiers (422) — and written with PUT semantics (an existing id gets a
// new version). A line without an id gets one derived from the job, file
// and line, so that a resumed job writes the same resource. A line longer
// than 8 MiB is refused. A refused line is a failure record; it never fails
// the job. A file that cannot be read to its end (GetObject refused, corrupt
// gzip; a stream broken off is retried twice) keeps the lines read before
// and gets one failure record without a line; it counts in
// TotalNumberOfFilesReadWithCustomerError.
//
// Output, under {output URI}/{datastoreId}-FHIR_IMPORT-{jobId}/ as
// HealthLake names it: SUCCESS/{name} and FAILURE/{name} per input file,
// where {name} is the file's key below the input prefix with ".ndjson"
// appended unless it ends so (only when there are such records), and
// manifest.json. A success record:
//
//	{"inputFile":"s3://in/batch/Patient.ndjson","lineNumber":1,"resourceType":"Patient","id":"p1","versionId":"1","status":"201 Created"}
//
// A failure record carries the line as sent ("line", or "lineBase64" when
// it is not UTF-8; "lineTruncated" with the first 64 KiB of an over-long
// line), the HTTP status the data plane would have answered, and the
// OperationOutcome:
//
//	{"inputFile":"s3://in/batch/Patient.ndjson","lineNumber":8,"resourceType":"Patient","id":"p4","line":"{\"resourceType\":…}",
//	 "status":"422 Unprocessable Entity","operationOutcome":{"resourceType":"OperationOutcome","issue":[{"severity":"error",
//	 "code":"duplicate","details":{"text":"Duplicate identifier: another Patient already has an identifier with system urn:mrn and the same value."}}]}}
//
// manifest.json has HealthLake's documented fields (inputDataConfig,
// outputDataConfig, successOutput, failureOutput, numberOfScannedFiles,
// numberOfFilesImported, sizeOfScannedFilesInMB,
// sizeOfDataImportedSuccessfullyInMB, numberOfResourcesScanned,
// numberOfResourcesImportedSuccessfully, numberOfResourcesWithCustomerError,
// numberOfResourcesWithServerError) and two of fhirload's:
// numberOfFilesReadWithCustomerError and files, one entry per input file
// with its output URIs and counts. DescribeFHIRImportJob's
// JobProgressReport counts the same while the job runs (Throughput is
// resources imported per second).
//
// Restart: a job interrupted by Close, a crash or SIGKILL is resumed when
// the folder is next opened. Lines are written in chunks (5,000 lines or
// 8 MiB); each chunk's resources, its output records and the line to read
// next commit in one transaction of the data store's database, and a
// file's records go to S3 once the file is read, before the file is marked
// done in control.db. So a resumed job reads on from the line after its
// last chunk, and every line is written once and reported once.
//
// Options.ChaosImportReject (serve --chaos-import-reject) rejects that
// fraction of lines with a failure record (status 503, issue code
// "transient") instead of importing them; which lines is decided by
// ChaosSeed, the file and the line number, fixed when the job is submitted.
package fhirstore
