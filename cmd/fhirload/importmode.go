package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/healthlake"
	hltypes "github.com/aws/aws-sdk-go-v2/service/healthlake/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	"go.uber.org/zap"

	"github.com/fhirload/fhirload/deadletter"
	"github.com/fhirload/fhirload/importjob"
	"github.com/fhirload/fhirload/pipeline"
)

// modeImport is target.mode's value for HealthLake import jobs.
const modeImport = "import"

// importStages opens what `run` in target.mode import writes to: the
// dead-letter store and the import-job sink, after checking that the data
// store is ACTIVE and the staging and output buckets exist.
func (e *env) importStages(ctx context.Context, m *pipeline.Metrics) (deadletter.Store, *importjob.Sink, error) {
	dl, err := e.deadLetters(ctx)
	if err != nil {
		return nil, nil, err
	}
	s3c, err := e.s3(ctx)
	if err != nil {
		return nil, nil, err
	}
	hl, target, err := e.healthLake(ctx, m)
	if err != nil {
		return nil, nil, err
	}
	im := e.cfg.Target.Import
	ds := e.cfg.ImportDatastoreID()
	created, err := importPreflight(ctx, hl, s3c, ds, im.StagingURL, im.OutputURL)
	if err != nil {
		return nil, nil, err
	}
	// A data store deleted and created again under the same id is another
	// target: what was imported into the old one is imported again.
	target += "@" + created
	sink, err := importjob.Open(ctx, importjob.Options{
		HealthLake: hl, S3: s3c, DatastoreID: ds, Target: target,
		StagingURL: im.StagingURL, OutputURL: im.OutputURL, RoleARN: im.RoleARN, KMSKeyID: im.KMSKeyID,
		StateDir: e.cfg.ImportStateDir(), ObjectBytes: im.ObjectBytes, PollInterval: im.PollInterval, PollMax: im.PollMax,
		FailureBudget: e.cfg.Retry.MaxElapsed, JobNamePrefix: im.JobNamePrefix, KeepStaged: im.KeepStaged, Retention: im.StateRetention,
		RunID: e.runID, Logger: e.log,
	})
	if err != nil {
		return nil, nil, err
	}
	e.stops = append(e.stops, func() { _ = sink.Close() })
	if err := m.Register(sink.Collectors()...); err != nil {
		return nil, nil, fmt.Errorf("metrics: %w", err)
	}
	return dl, sink, nil
}

// healthLake builds the client of the HealthLake control plane and names
// the data store stably across runs (the batch key's target). The
// endpoint is target.import.endpoint_url, else target.url's scheme and
// host (fhirload serve, the embedded store), else the SDK's regional
// endpoint (target.url on amazonaws.com). Credentials: the embedded
// store's key, none for target.auth none, else the AWS credential chain.
func (e *env) healthLake(ctx context.Context, m *pipeline.Metrics) (*healthlake.Client, string, error) {
	t := e.cfg.Target
	opts, err := e.targetOptions(ctx, m) // starts the embedded store
	if err != nil {
		return nil, "", err
	}
	c, err := e.aws(ctx)
	if err != nil {
		return nil, "", err
	}
	endpoint := t.Import.EndpointURL
	if endpoint == "" {
		u, err := url.Parse(opts.BaseURL)
		if err != nil {
			return nil, "", fmt.Errorf("target.url: %w", err)
		}
		if !strings.HasSuffix(strings.ToLower(u.Hostname()), ".amazonaws.com") {
			endpoint = u.Scheme + "://" + u.Host
		}
	}
	ds := e.cfg.ImportDatastoreID()
	target := endpoint + "/" + ds
	switch {
	case t.URL == pipeline.EmbeddedTarget:
		abs, _ := filepath.Abs(t.Data)
		target = "embedded:" + abs + "/" + ds // its address changes at every start
	case endpoint == "":
		target = "healthlake:" + t.Region + "/" + ds
	}
	hl := healthlake.NewFromConfig(c, func(o *healthlake.Options) {
		o.Region = t.Region
		o.HTTPClient = awsHTTPClient()
		o.BaseEndpoint = nil // aws.endpoint_url is for S3 and SQS
		if endpoint != "" {
			o.BaseEndpoint = aws.String(endpoint)
		}
		switch {
		case opts.Credentials != nil:
			o.Credentials = opts.Credentials
		case t.Auth == "none":
			o.Credentials = aws.AnonymousCredentials{}
		}
	})
	return hl, target, nil
}

// importPreflight checks, before anything is read, what would otherwise
// fail only after the whole batch is staged: the data store is ACTIVE (and
// the credentials may use the control plane), and the staging and output
// buckets exist. It returns the data store's creation time.
func importPreflight(ctx context.Context, hl *healthlake.Client, s3c *s3.Client, ds, staging, output string) (string, error) {
	d, err := hl.DescribeFHIRDatastore(ctx, &healthlake.DescribeFHIRDatastoreInput{DatastoreId: aws.String(ds)})
	if err != nil {
		var ae smithy.APIError
		if errors.As(err, &ae) {
			return "", fmt.Errorf("target.mode import: data store %s: %s: %s", ds, ae.ErrorCode(), ae.ErrorMessage())
		}
		return "", fmt.Errorf("target.mode import: data store %s: %w", ds, err)
	}
	p := d.DatastoreProperties
	if p == nil || p.DatastoreStatus != hltypes.DatastoreStatusActive {
		status := "unknown"
		if p != nil {
			status = string(p.DatastoreStatus)
		}
		return "", fmt.Errorf("target.mode import: data store %s is %s, not ACTIVE", ds, status)
	}
	for _, u := range []struct{ key, uri string }{{"target.import.staging_url", staging}, {"target.import.output_url", output}} {
		bucket, _, _ := strings.Cut(strings.TrimPrefix(u.uri, "s3://"), "/")
		if _, err := s3c.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(bucket)}); err != nil {
			return "", fmt.Errorf("%s: bucket %s: %w", u.key, bucket, err)
		}
	}
	var created string
	if p.CreatedAt != nil {
		created = p.CreatedAt.UTC().Format(time.RFC3339Nano)
	}
	return created, nil
}

// importProgress is the progress line of run in target.mode import: the
// runner's numbers, then what was staged and what the job has done.
func importProgress(sink *importjob.Sink) progressLine {
	return func(rep *pipeline.Report) (string, []zap.Field) {
		text, fields := loadProgress(rep)
		p := sink.Progress()
		text += fmt.Sprintf("  | staged %d", p.Staged)
		fields = append(fields, zap.Int64("staged", p.Staged))
		if p.JobID != "" {
			text += fmt.Sprintf("  job %s %s: %d imported, %d rejected", p.JobID, p.Status, p.Imported, p.Rejected)
			fields = append(fields, zap.String("job", p.JobID), zap.String("job_status", p.Status),
				zap.Int64("job_imported", p.Imported), zap.Int64("job_rejected", p.Rejected))
		}
		return text, fields
	}
}

// errWatchImport is why watch refuses target.mode import.
var errWatchImport = errors.New("target.mode import is not supported by watch: an import job settles a whole batch, " +
	"and a queue of file drops has no end to close one at; run `fhirload run s3://bucket/prefix` over the drops on a schedule, " +
	"or use target.mode batch")
