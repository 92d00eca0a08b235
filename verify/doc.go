// Package verify proves, by reading back, that the target holds what the
// source says: `fhirload verify` and `fhirload run --verify`.
//
// Verify runs the pipeline's Runner over the same sources, with the same
// transform (ids, reference rewriting, profile) and batching as `run`, and a
// Sink that reads each batch's resources back from the target
// (loader.Reader) and compares each one with what `run` would write
// (Comparer). Nothing is written to the target or to the dead-letter store.
package verify
