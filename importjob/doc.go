// Package importjob is the HealthLake import-job sink of target.mode
// import: a pipeline.DeferredSink that loads a run's resources with one
// StartFHIRImportJob instead of REST writes, and settles every line from
// the job's output with the same guarantees as the REST sinks.
//
// # The flow
//
// Transform and validation happen before the sink, as in every mode: a line
// that fails them is dead-lettered and never staged. Write appends each
// item's resource as one NDJSON line (line breaks between JSON tokens, as in
// a pretty-printed Bundle entry, become spaces) to the staged object being
// written in the state folder, records the item in the object's index (16
// bytes: its token, source line and source), and answers Deferred. An
// object is cut at Options.ObjectBytes and uploaded to
// {StagingURL}/{run id}/part-NNNNNN.ndjson (SSE-S3) while the next one
// fills; its local copy is then removed. At most Options.Uploads uploads
// run at once and Write waits for a free one, so the local disk holds a few
// objects and memory holds none.
//
// Flush (called by the runner once its sources are read) waits for the
// last upload, records the batch (below), starts one import job over the
// run's staging folder with a client token (StartFHIRImportJob), polls
// DescribeFHIRImportJob (Options.PollInterval doubling to Options.PollMax;
// throttling, 5xx and network errors are retried for
// Options.FailureBudget), logs the job's progress when it moves, then reads
// the job's output — manifest.json, which must be there, then every record
// of SUCCESS/ and FAILURE/ under {OutputURL}/{datastore}-FHIR_IMPORT-{job}/
// — and settles each item it was written:
//
//   - a FAILURE record for its staged line: Failed, reason import-rejected,
//     the record's HTTP status and OperationOutcome, the resource's type and
//     id, a message naming the job, the status and the issue code (never
//     the line's content). A record without a line (the job could not read
//     the staged object from that line on) fails every later line of the
//     object it did not report imported;
//   - a SUCCESS record: Loaded (Created when its status is 201);
//   - no record: Failed (import-rejected, "reported no outcome"): such a
//     line may or may not be loaded, and replay loads it — except when the
//     job wrote no SUCCESS records at all and its counters account for
//     every line (imported + rejected = staged, rejected = FAILURE
//     records), when the lines without a record count as loaded.
//
// The runner then dead-letters the failed lines with their verbatim line
// (read again from the source) and acknowledges the objects. A job that
// ends FAILED (or is canceled) makes Flush return a *JobFailedError: the run
// is fatal, no line is settled, no object acknowledged. Staged objects are
// deleted once the outcome is known (Options.KeepStaged keeps them).
//
// Sizes. HealthLake reads at most 10,000 files per import job and runs one
// import job at a time per data store (others queue). Objects of 128 MiB
// (the default) keep a
// job of a terabyte under the file limit; smaller objects start uploads
// sooner and hold less local disk, larger ones cost fewer requests. The
// job output is read one staged object at a time: memory is two bits per
// line of the sources (which lines were reported, which created), one map entry per
// failed line (its record is spilled to a file), and the index of one
// object.
//
// # State, crash safety and idempotency
//
// Options.StateDir (locked by one sink at a time) holds:
//
//	lock                      flock, held while a sink is open
//	staging-{run}/            the batch run {run} is staging: staging.json, part-*.ndjson, part-*.idx
//	batches/{key}/            a batch staged to its end: batch.json, part-*.idx
//
// A batch is recognised by its content: its key hashes Options.Target (the
// data store) with the fingerprint of its lines — their count and the sum
// modulo 2^128 of a SHA-256 digest of each line's source, line number and
// staged resource, which does not depend on the order lines arrive in.
// When the last upload is done, Flush writes batch.json into the staging
// folder and renames the folder to batches/{key}: a crash leaves either a
// staging or a whole batch. Each step of the job is recorded in batch.json
// before the next: the client token before StartFHIRImportJob, the job id
// when it is answered, the final status when seen.
//
//   - Stopped before the batch is recorded (SIGTERM while staging, a fatal
//     error): Close lets the uploads in flight end (a PUT cut short may
//     still be stored after the delete), then deletes the staged objects
//     and the staging folder; nothing half-staged is ever imported. Uploads
//     still running after 15 s are canceled and the folder is kept, so that
//     the next Open deletes the staging again. Killed there (SIGKILL): the
//     next Open deletes them.
//   - Killed after: the rerun stages the same lines again (their
//     fingerprint is known only when all are read), finds batches/{key},
//     deletes its own copy, and uses the batch's job — starting it with the
//     recorded client token if its id was never recorded (the same token
//     answers with the same job), polling it otherwise — then settles its
//     own items from that job's output (by source and line). One job, as
//     ListFHIRImportJobs shows.
//   - A rerun after the job ended: the same, with no poll: the same lines
//     are never imported twice. Lines the job rejected are dead-lettered
//     again (replay is how to load them).
//   - A job that ended FAILED: the rerun's staging replaces the batch's,
//     and a new job (a new client token) imports it.
//   - Lines that differ (an edited file, another transform) are another
//     batch, and another job; so are the same lines for another data store
//     (fhirload's Target names the data store with its creation time: one
//     deleted and created again under the same id is another).
//
// A recognised batch is trusted: resources deleted from the data store
// after its job are not loaded again by a rerun of the same lines (`verify`
// shows them missing; a run in target.mode batch, or after the batch's
// retention, loads them). Open removes batches older than Options.Retention
// (7 days by default) and their staged objects; the state holds 16 bytes per
// staged line of each batch kept.
//
// The state folder is what makes a rerun resume rather than import again:
// keep it on persistent storage. A lost state folder costs a second import
// of the same lines, never a duplicate resource (ids are stable, and an
// import writes with update semantics).
//
// No PHI leaves the sink in logs or errors: they name sources, lines,
// staged objects, jobs, statuses and counts.
package importjob
