package importjob

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/healthlake"
	hltypes "github.com/aws/aws-sdk-go-v2/service/healthlake/types"
	"github.com/aws/smithy-go"
	"go.uber.org/zap"

	"github.com/fhirload/fhirload/internal/ctxtime"
)

// finalStatus reports whether an import job status is final.
func finalStatus(s string) bool {
	switch hltypes.JobStatus(s) {
	case hltypes.JobStatusCompleted, hltypes.JobStatusCompletedWithErrors, hltypes.JobStatusFailed, hltypes.JobStatusCancelCompleted:
		return true
	}
	return false
}

// failedStatus reports whether a final status means the job did not
// import the batch (it ended FAILED, or was canceled): it holds no outcome
// of the lines, and the batch needs a new job.
func failedStatus(s string) bool {
	return hltypes.JobStatus(s) == hltypes.JobStatusFailed || hltypes.JobStatus(s) == hltypes.JobStatusCancelCompleted
}

// JobFailedError is the error of Flush when the batch's import job ended
// without importing it (FAILED, or canceled). The batch's lines stay
// unsettled; the next run with the same lines starts a new job on the same
// staged objects.
type JobFailedError struct {
	JobID, Status, Message string
}

func (e *JobFailedError) Error() string {
	msg := e.Message
	if msg == "" {
		msg = "no message"
	}
	return fmt.Sprintf("import job %s ended %s: %s (its lines are not settled; a rerun starts a new job)", e.JobID, e.Status, msg)
}

func newClientToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return "fhirload-" + hex.EncodeToString(b[:])
}

// runJob makes sure batch b has an import job that holds (or will hold)
// its outcome, waits for the job's end and returns it. Every step is
// recorded in batch.json before the next: the client token before
// StartFHIRImportJob (a crash before its answer is recorded is answered
// with the same job by the next run), the job id as soon as it is known,
// the final status once seen.
func (s *Sink) runJob(ctx context.Context, b *batchRecord) (*jobAttempt, error) {
	if b.needsNewJob() {
		b.Jobs = append(b.Jobs, jobAttempt{ClientToken: newClientToken(),
			JobName: fmt.Sprintf("%s-%s-%d", s.opts.JobNamePrefix, b.Key[:12], len(b.Jobs)+1), Submitted: time.Now().UTC()})
		if err := s.state.saveBatch(b); err != nil {
			return nil, err
		}
	}
	j := b.job()
	log := s.log.With(zap.String("batch", b.Key))
	if j.JobID == "" {
		id, err := s.startJob(ctx, b, j)
		if err != nil {
			return nil, err
		}
		j.JobID = id
		if err := s.state.saveBatch(b); err != nil {
			return nil, err
		}
		log.Info("import job started", zap.String("job", id), zap.String("job_name", j.JobName),
			zap.String("input", b.Prefix), zap.Int64("lines", b.Lines), zap.Int("objects", len(b.Parts)))
	} else {
		log.Info("import job of this batch found (started by run "+b.RunID+")", zap.String("job", j.JobID), zap.String("status", j.Status))
	}
	s.progress.setJob(j.JobID, j.Status)
	if !finalStatus(j.Status) {
		if err := s.poll(ctx, b, j); err != nil {
			return nil, err
		}
	}
	s.progress.setJob(j.JobID, j.Status)
	s.progress.setCounts(j.Scanned, j.Imported, j.Failed)
	if failedStatus(j.Status) {
		return nil, &JobFailedError{JobID: j.JobID, Status: j.Status, Message: j.Message}
	}
	return j, nil
}

// startJob calls StartFHIRImportJob, retrying throttling and server
// errors for up to Options.FailureBudget.
func (s *Sink) startJob(ctx context.Context, b *batchRecord, j *jobAttempt) (string, error) {
	in := &healthlake.StartFHIRImportJobInput{
		ClientToken:       aws.String(j.ClientToken),
		DataAccessRoleArn: aws.String(s.opts.RoleARN),
		DatastoreId:       aws.String(b.Datastore),
		InputDataConfig:   &hltypes.InputDataConfigMemberS3Uri{Value: b.Prefix},
		JobName:           aws.String(j.JobName),
		JobOutputDataConfig: &hltypes.OutputDataConfigMemberS3Configuration{Value: hltypes.S3Configuration{
			S3Uri: aws.String(b.OutputURL), KmsKeyId: aws.String(s.opts.KMSKeyID)}},
	}
	var out *healthlake.StartFHIRImportJobOutput
	err := s.retrying(ctx, "StartFHIRImportJob", func() error {
		var err error
		out, err = s.opts.HealthLake.StartFHIRImportJob(ctx, in)
		return err
	})
	if err != nil {
		return "", err
	}
	if aws.ToString(out.JobId) == "" {
		return "", errors.New("StartFHIRImportJob: the answer has no JobId")
	}
	j.Status = string(out.JobStatus)
	return aws.ToString(out.JobId), nil
}

// retrying calls fn until it succeeds, fails with an error no retry fixes
// (refused access, an unknown data store, an invalid request), or has
// failed for longer than Options.FailureBudget.
func (s *Sink) retrying(ctx context.Context, op string, fn func() error) error {
	var since time.Time
	wait := s.opts.PollInterval
	for {
		err := fn()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if permanent(err) {
			return fmt.Errorf("%s: %w", op, err)
		}
		if since.IsZero() {
			since = time.Now()
		}
		if time.Since(since) > s.opts.FailureBudget {
			return fmt.Errorf("%s: failing for %v: %w", op, s.opts.FailureBudget, err)
		}
		s.log.Warn("HealthLake control plane failed; retrying", zap.String("operation", op), zap.Duration("in", wait), zap.Error(err))
		if err := ctxtime.Sleep(ctx, wait); err != nil {
			return err
		}
		wait = min(wait*2, s.opts.PollMax)
	}
}

// permanent reports whether a control-plane error is one no retry fixes.
func permanent(err error) bool {
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		return false // a network error
	}
	switch ae.ErrorCode() {
	case "ThrottlingException", "InternalServerException", "ServiceUnavailableException", "RequestTimeout", "RequestTimeoutException":
		return false
	}
	return true
}

// poll describes job j until it ends, with a wait that doubles from
// Options.PollInterval to Options.PollMax, and logs its progress when it
// moves (and at least every 10 polls).
func (s *Sink) poll(ctx context.Context, b *batchRecord, j *jobAttempt) error {
	wait := s.opts.PollInterval
	started := time.Now()
	log := s.log.With(zap.String("job", j.JobID))
	for n := 0; ; n++ {
		var out *healthlake.DescribeFHIRImportJobOutput
		err := s.retrying(ctx, "DescribeFHIRImportJob", func() error {
			var err error
			out, err = s.opts.HealthLake.DescribeFHIRImportJob(ctx, &healthlake.DescribeFHIRImportJobInput{
				DatastoreId: aws.String(b.Datastore), JobId: aws.String(j.JobID)})
			return err
		})
		if err != nil {
			return err
		}
		p := out.ImportJobProperties
		if p == nil {
			return errors.New("DescribeFHIRImportJob: the answer has no ImportJobProperties")
		}
		status := string(p.JobStatus)
		var scanned, imported, failed int64
		var throughput float64
		if r := p.JobProgressReport; r != nil {
			scanned, imported = aws.ToInt64(r.TotalNumberOfResourcesScanned), aws.ToInt64(r.TotalNumberOfResourcesImported)
			failed = aws.ToInt64(r.TotalNumberOfResourcesWithCustomerError)
			throughput = aws.ToFloat64(r.Throughput)
		}
		moved := status != j.Status || scanned != j.Scanned
		j.Status, j.Scanned, j.Imported, j.Failed, j.Message = status, scanned, imported, failed, aws.ToString(p.Message)
		s.progress.setJob(j.JobID, status)
		s.progress.setCounts(scanned, imported, failed)
		if finalStatus(status) {
			j.Ended = time.Now().UTC()
			if err := s.state.saveBatch(b); err != nil {
				return err
			}
			log.Info("import job ended", zap.String("status", status), zap.Int64("scanned", scanned), zap.Int64("imported", imported),
				zap.Int64("rejected", failed), zap.Duration("waited", time.Since(started).Round(time.Millisecond)))
			return nil
		}
		if moved || n%10 == 0 {
			log.Info("import job progress", zap.String("status", status), zap.Int64("scanned", scanned), zap.Int64("imported", imported),
				zap.Int64("rejected", failed), zap.Int64("lines", b.Lines), zap.Float64("resources_per_second", throughput))
		}
		if err := ctxtime.Sleep(ctx, wait); err != nil {
			return err
		}
		wait = min(wait*2, s.opts.PollMax)
	}
}
