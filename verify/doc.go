// Package verify proves, by reading back, that the target holds what the
// source says: `fhirload verify` and `fhirload run --verify`.
//
// # How
//
// Verify is the pipeline's Runner with another Sink. The same sources are
// read with the same transform as `run` (ids, reference rewriting, profile,
// mapping), cut into the same batches and run at the same concurrency; the
// Sink reads each batch's resources back from the target (a loader.Reader:
// signed, paced in read units, retried on 429/5xx honouring Retry-After)
// and compares each one with what `run` would write (Comparer). It writes
// nothing to the target and runs without a dead-letter store. A line gets
// exactly one verdict, settled by the runner like any outcome:
//
//   - matched: the target holds the resource as the source says (Loaded);
//   - missing: it does not hold it (404, 410, absent from a search);
//   - different: it holds it otherwise: the paths that differ are kept,
//     never the values;
//   - unreachable: it could not be read back (retries exhausted, a read
//     refused with a 4xx);
//   - skipped: the transform rejects the line (or it cannot be read): run
//     would have dead-lettered it, so the target is not expected to hold it.
//
// Items carry their source and line (pipeline.Item), so the Sink keeps each
// mismatch with where it came from: the first DefaultMaxMismatches by source
// and line, whatever order the batches finish in, and a count of the rest.
// Memory is bounded whatever the input size.
//
// # Equality
//
// Comparer states the rule: key order and whitespace do not matter, strings
// compare decoded, numbers by exact decimal value (170.0 equals 170, 0.1 does
// not equal 0.10000000000000001), arrays in order, and in the resource's
// meta only what the source set counts (versionId, lastUpdated and anything
// the server adds are the server's; tags, security labels and profiles are
// sets). Paths are FHIRPath-like (Patient.name[0].given[1]).
//
// # Report and exit codes
//
// Report carries verified, matched, missing, different, skipped (with
// reasons), unreachable, unsettled and the mismatches
// [{source, line, type, id, kind, paths}]. Its invariant:
// lines = skipped_blank + verified + skipped + unreachable + unsettled, with
// verified = matched + missing + different. Exit codes: 0 every verified
// resource matches; 2 some are missing or different; 1 verify could not do
// its job (bad config, refused credentials, an unreachable target, or
// resources that could not be read back: the verification is incomplete).
//
// # Reads
//
// loader.ReadBatch (batch Bundles of GET entries, the default) and
// loader.ReadSearch (GET Type?_id=a,b,c) are both served by HealthLake and
// by fhirload serve. Batch is the default for two reasons: a read by id is
// strongly consistent, while HealthLake's search index is eventually
// consistent (a resource written a moment ago — run --verify — can be absent
// from, or older in, search results); and against fhirload serve batch reads
// cost the server less CPU per resource (docs/PERFORMANCE.md, "verify").
package verify
