package fhirstore

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
)

// The HealthLake control plane: AWS JSON 1.0 on the same host as the FHIR
// API (POST / with X-Amz-Target: HealthLake.{Operation}), with the request
// and response shapes, validation messages and error types of the real
// service, so that the aws CLI and the AWS SDKs work against the server
// with only an endpoint URL.

// accountID is the account in the ARNs this server makes up.
const accountID = "000000000000"

const contentTypeAWSJSON = "application/x-amz-json-1.0"

// apiError is a control-plane error: an AWS exception type and a message.
type apiError struct {
	status int
	typ    string
	msg    string
}

func (e *apiError) Error() string { return e.typ + ": " + e.msg }

func validation(format string, args ...any) *apiError {
	return &apiError{http.StatusBadRequest, "ValidationException", fmt.Sprintf(format, args...)}
}

func notFound(format string, args ...any) *apiError {
	return &apiError{http.StatusBadRequest, "ResourceNotFoundException", fmt.Sprintf(format, args...)}
}

func conflict(format string, args ...any) *apiError {
	return &apiError{http.StatusBadRequest, "ConflictException", fmt.Sprintf(format, args...)}
}

func writeAPIError(w http.ResponseWriter, e *apiError) {
	b, _ := json.Marshal(struct {
		Type    string `json:"__type"`
		Message string `json:"message"`
	}{e.typ, e.msg})
	h := w.Header()
	h.Set("Content-Type", contentTypeAWSJSON)
	h.Set("X-Amzn-ErrorType", e.typ)
	w.WriteHeader(e.status)
	_, _ = w.Write(b)
}

// controlOp is one operation: it decodes its request from body and returns
// the response to encode.
type controlOp func(s *Server, ctx context.Context, r *http.Request, body []byte) (any, *apiError)

var controlOps = map[string]controlOp{
	"CreateFHIRDatastore":   (*Server).createDatastore,
	"DescribeFHIRDatastore": (*Server).describeDatastore,
	"ListFHIRDatastores":    (*Server).listDatastores,
	"DeleteFHIRDatastore":   (*Server).deleteDatastore,
	"StartFHIRImportJob":    (*Server).startImportJob,
	"DescribeFHIRImportJob": (*Server).describeImportJob,
	"ListFHIRImportJobs":    (*Server).listImportJobs,
}

// serveControl serves one control-plane request. Operations need a key
// with every scope (system/*.*): the data plane's finer scopes have no
// counterpart here.
func (s *Server) serveControl(w http.ResponseWriter, r *http.Request, body []byte, g grants) {
	name, _ := strings.CutPrefix(r.Header.Get("X-Amz-Target"), "HealthLake.")
	op, ok := controlOps[name]
	switch {
	case r.Method != http.MethodPost:
		writeAPIError(w, &apiError{http.StatusBadRequest, "UnknownOperationException", "The control plane takes POST requests."})
		return
	case !ok:
		writeAPIError(w, &apiError{http.StatusBadRequest, "UnknownOperationException", "Unknown operation " + safeName(r.Header.Get("X-Amz-Target")) + "."})
		return
	case !g.allows("*", permAll):
		writeAPIError(w, &apiError{http.StatusForbidden, "AccessDeniedException", "User is not authorized to perform HealthLake:" + name + ": the key needs the scope system/*.*."})
		return
	}
	out, e := op(s, r.Context(), r, body)
	if e != nil {
		if e.status >= 500 {
			s.log.Error("control plane", zap.String("operation", name), zap.String("error", e.msg))
			e = &apiError{http.StatusInternalServerError, "InternalServerException", "Internal server error."}
		}
		writeAPIError(w, e)
		return
	}
	b, err := json.Marshal(out)
	if err != nil {
		writeAPIError(w, &apiError{http.StatusInternalServerError, "InternalServerException", "Internal server error."})
		return
	}
	w.Header().Set("Content-Type", contentTypeAWSJSON)
	_, _ = w.Write(b)
}

// decodeRequest decodes an operation's JSON request into v.
func decodeRequest(body []byte, v any) *apiError {
	if len(bytes.TrimSpace(body)) == 0 {
		body = []byte("{}")
	}
	if err := json.Unmarshal(body, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return &apiError{http.StatusBadRequest, "SerializationException", "Unexpected value type for " + safeName(te.Field) + "."}
		}
		return &apiError{http.StatusBadRequest, "SerializationException", "The request body is not valid JSON."}
	}
	return nil
}

func internal(err error) *apiError {
	return &apiError{http.StatusInternalServerError, "InternalServerException", err.Error()}
}

// epoch is a timestamp as AWS JSON writes it: seconds since the epoch.
type epoch time.Time

func (t epoch) MarshalJSON() ([]byte, error) {
	return strconv.AppendFloat(nil, float64(time.Time(t).UnixMilli())/1000, 'f', -1, 64), nil
}

func (t *epoch) UnmarshalJSON(b []byte) error {
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return errors.New("timestamp: want seconds since the epoch")
	}
	*t = epoch(time.UnixMilli(int64(f * 1000)).UTC())
	return nil
}

func epochPtr(t time.Time) *epoch {
	if t.IsZero() {
		return nil
	}
	e := epoch(t)
	return &e
}

// Constraints of the HealthLake API model.
var (
	namePattern        = regexp.MustCompile(`^([\p{L}\p{Z}\p{N}_.:/=+\-%@]*)$`)
	clientTokenPattern = regexp.MustCompile(`^[a-zA-Z0-9-]+$`)
	roleARNPattern     = regexp.MustCompile(`^arn:aws(-[^:]+)?:iam::[0-9]{12}:role/.+$`)
	kmsKeyPattern      = regexp.MustCompile(`^(arn:aws((-us-gov)|(-iso)|(-iso-b)|(-cn))?:kms:)?([a-z]{2}-[a-z]+(-[a-z]+)?-\d:)?(\d{12}:)?(((key/)?[a-zA-Z0-9-_]+)|(alias/[a-zA-Z0-9:/_-]+))$`)
)

// checkString validates an optional string member the way the API does.
func checkString(member, v string, minLen, maxLen int, pattern *regexp.Regexp) *apiError {
	n := len([]rune(v))
	switch {
	case n < minLen:
		return validation("1 validation error detected: Value at '%s' failed to satisfy constraint: Member must have length greater than or equal to %d", member, minLen)
	case n > maxLen:
		return validation("1 validation error detected: Value at '%s' failed to satisfy constraint: Member must have length less than or equal to %d", member, maxLen)
	case pattern != nil && !pattern.MatchString(v):
		return validation("1 validation error detected: Value at '%s' failed to satisfy constraint: Member must satisfy regular expression pattern: %s", member, pattern.String())
	}
	return nil
}

func checkOptional(member string, v *string, minLen, maxLen int, pattern *regexp.Regexp) *apiError {
	if v == nil {
		return nil
	}
	return checkString(member, *v, minLen, maxLen, pattern)
}

func checkRequired(member string, v *string) *apiError {
	if v == nil {
		return validation("1 validation error detected: Value null at '%s' failed to satisfy constraint: Member must not be null", member)
	}
	return nil
}

func checkMaxResults(v *int) *apiError {
	if v != nil && (*v < 1 || *v > 500) {
		return validation("1 validation error detected: Value '%d' at 'maxResults' failed to satisfy constraint: Member must have value between 1 and 500", *v)
	}
	return nil
}

// page cuts items (of length n) to one page: the offset in token, at most
// maxResults (default 100). It returns the bounds and the next token.
func page(n int, token *string, maxResults *int) (from, to int, next *string, e *apiError) {
	if token != nil && *token != "" {
		off, err := strconv.Atoi(*token)
		if err != nil || off < 0 || off > n {
			return 0, 0, nil, validation("Invalid NextToken.")
		}
		from = off
	}
	limit := 100
	if maxResults != nil {
		limit = *maxResults
	}
	to = min(n, from+limit)
	if to < n {
		t := strconv.Itoa(to)
		next = &t
	}
	return from, to, next, nil
}

// --- data stores ---

type createDatastoreIn struct {
	DatastoreName                 *string
	DatastoreTypeVersion          *string
	SseConfiguration              json.RawMessage
	PreloadDataConfig             json.RawMessage
	ClientToken                   *string
	Tags                          []struct{ Key, Value string }
	IdentityProviderConfiguration *struct {
		AuthorizationStrategy string
	}
}

type datastoreOut struct {
	DatastoreID       string `json:"DatastoreId"`
	DatastoreArn      string
	DatastoreStatus   string
	DatastoreEndpoint string
}

// datastoreProperties is DatastoreProperties: the fixed members, and the
// optional configurations as they were given at creation.
func (s *Server) datastoreProperties(r *http.Request, d *datastore) map[string]any {
	status, props := d.snapshot()
	m := map[string]any{}
	_ = json.Unmarshal([]byte(props), &m)
	if m == nil {
		m = map[string]any{}
	}
	if _, ok := m["SseConfiguration"]; !ok {
		m["SseConfiguration"] = map[string]any{"KmsEncryptionConfig": map[string]string{"CmkType": "AWS_OWNED_KMS_KEY"}}
	}
	if _, ok := m["IdentityProviderConfiguration"]; !ok {
		m["IdentityProviderConfiguration"] = map[string]any{"AuthorizationStrategy": "AWS_AUTH", "FineGrainedAuthorizationEnabled": false}
	}
	m["DatastoreId"] = d.id
	m["DatastoreArn"] = s.datastoreARN(d.id)
	if d.name != "" {
		m["DatastoreName"] = d.name
	}
	m["DatastoreStatus"] = status
	m["CreatedAt"] = epoch(d.created)
	m["DatastoreTypeVersion"] = "R4"
	m["DatastoreEndpoint"] = endpoint(r, d.id)
	return m
}

func (s *Server) datastoreARN(id string) string {
	return "arn:aws:healthlake:" + s.opts.Region + ":" + accountID + ":datastore/fhir/" + id
}

// endpoint is data store id's FHIR base URL on the host the client used.
func endpoint(r *http.Request, id string) string { return baseURL(r, basePath(id)) }

func (s *Server) createDatastore(ctx context.Context, r *http.Request, body []byte) (any, *apiError) {
	var in createDatastoreIn
	if e := decodeRequest(body, &in); e != nil {
		return nil, e
	}
	if e := checkRequired("datastoreTypeVersion", in.DatastoreTypeVersion); e != nil {
		return nil, e
	}
	if *in.DatastoreTypeVersion != "R4" {
		return nil, validation("1 validation error detected: Value '%s' at 'datastoreTypeVersion' failed to satisfy constraint: Member must satisfy enum value set: [R4]", safeName(*in.DatastoreTypeVersion))
	}
	if e := checkOptional("datastoreName", in.DatastoreName, 1, 256, namePattern); e != nil {
		return nil, e
	}
	if e := checkOptional("clientToken", in.ClientToken, 1, 64, clientTokenPattern); e != nil {
		return nil, e
	}
	if len(in.PreloadDataConfig) > 0 && string(in.PreloadDataConfig) != "null" {
		return nil, validation("PreloadDataConfig is not supported by fhirload serve: data stores are created empty; load them with an import job.")
	}
	if p := in.IdentityProviderConfiguration; p != nil && p.AuthorizationStrategy != "AWS_AUTH" {
		return nil, validation("Only the AWS_AUTH authorization strategy is supported by fhirload serve.")
	}
	token := ""
	if in.ClientToken != nil {
		token = *in.ClientToken
	}
	if d := s.reg.byToken(token); d != nil {
		status, _ := d.snapshot()
		return datastoreOut{d.id, s.datastoreARN(d.id), status, endpoint(r, d.id)}, nil
	}
	props := map[string]json.RawMessage{}
	if len(in.SseConfiguration) > 0 && string(in.SseConfiguration) != "null" {
		props["SseConfiguration"] = in.SseConfiguration
	}
	pb, _ := json.Marshal(props)
	name := ""
	if in.DatastoreName != nil {
		name = *in.DatastoreName
	}
	d, err := s.reg.create(ctx, name, token, string(pb), s.now())
	if err != nil {
		return nil, internal(err)
	}
	status, _ := d.snapshot()
	return datastoreOut{d.id, s.datastoreARN(d.id), status, endpoint(r, d.id)}, nil
}

type datastoreIDIn struct {
	DatastoreID *string `json:"DatastoreId"`
}

// lookupDatastore decodes a request naming a data store and finds it.
func (s *Server) lookupDatastore(id *string) (*datastore, *apiError) {
	if e := checkRequired("datastoreId", id); e != nil {
		return nil, e
	}
	if e := checkString("datastoreId", *id, 1, 32, namePattern); e != nil {
		return nil, e
	}
	d := s.reg.get(*id)
	if d == nil {
		return nil, notFound("Datastore %s does not exist.", safeName(*id))
	}
	return d, nil
}

func (s *Server) describeDatastore(_ context.Context, r *http.Request, body []byte) (any, *apiError) {
	var in datastoreIDIn
	if e := decodeRequest(body, &in); e != nil {
		return nil, e
	}
	d, e := s.lookupDatastore(in.DatastoreID)
	if e != nil {
		return nil, e
	}
	return map[string]any{"DatastoreProperties": s.datastoreProperties(r, d)}, nil
}

func (s *Server) listDatastores(_ context.Context, r *http.Request, body []byte) (any, *apiError) {
	var in struct {
		Filter *struct {
			DatastoreName   *string
			DatastoreStatus *string
			CreatedBefore   *epoch
			CreatedAfter    *epoch
		}
		NextToken  *string
		MaxResults *int
	}
	if e := decodeRequest(body, &in); e != nil {
		return nil, e
	}
	if e := checkMaxResults(in.MaxResults); e != nil {
		return nil, e
	}
	var list []map[string]any
	for _, d := range s.reg.all() {
		if f := in.Filter; f != nil {
			status, _ := d.snapshot()
			if (f.DatastoreName != nil && *f.DatastoreName != d.name) || (f.DatastoreStatus != nil && *f.DatastoreStatus != status) ||
				(f.CreatedBefore != nil && !d.created.Before(time.Time(*f.CreatedBefore))) ||
				(f.CreatedAfter != nil && !d.created.After(time.Time(*f.CreatedAfter))) {
				continue
			}
		}
		list = append(list, s.datastoreProperties(r, d))
	}
	from, to, next, e := page(len(list), in.NextToken, in.MaxResults)
	if e != nil {
		return nil, e
	}
	out := map[string]any{"DatastorePropertiesList": append([]map[string]any{}, list[from:to]...)}
	if next != nil {
		out["NextToken"] = *next
	}
	return out, nil
}

func (s *Server) deleteDatastore(ctx context.Context, r *http.Request, body []byte) (any, *apiError) {
	var in datastoreIDIn
	if e := decodeRequest(body, &in); e != nil {
		return nil, e
	}
	d, e := s.lookupDatastore(in.DatastoreID)
	if e != nil {
		return nil, e
	}
	if d.isDefault {
		return nil, validation("The default data store %s of fhirload serve cannot be deleted.", d.id)
	}
	busy, err := s.ctl.active(ctx, d.id)
	if err != nil {
		return nil, internal(err)
	}
	if busy {
		return nil, conflict("Datastore %s has an import job that has not finished.", d.id)
	}
	if err := s.reg.remove(ctx, d); err != nil {
		if errors.Is(err, errNotActive) {
			status, _ := d.snapshot()
			return nil, conflict("Datastore %s is %s.", d.id, status)
		}
		return nil, internal(err)
	}
	return datastoreOut{d.id, s.datastoreARN(d.id), dsDeleting, endpoint(r, d.id)}, nil
}

// --- import jobs ---

type startImportIn struct {
	JobName         *string
	InputDataConfig *struct {
		S3URI *string `json:"S3Uri"`
	}
	JobOutputDataConfig *struct {
		S3Configuration *struct {
			S3URI    *string `json:"S3Uri"`
			KmsKeyID *string `json:"KmsKeyId"`
		}
	}
	DatastoreID       *string `json:"DatastoreId"`
	DataAccessRoleArn *string
	ClientToken       *string
	ValidationLevel   *string
}

func (s *Server) startImportJob(ctx context.Context, _ *http.Request, body []byte) (any, *apiError) {
	var in startImportIn
	if e := decodeRequest(body, &in); e != nil {
		return nil, e
	}
	spec, e := checkImport(&in)
	if e != nil {
		return nil, e
	}
	d, e := s.lookupDatastore(in.DatastoreID)
	if e != nil {
		return nil, e
	}
	if status, _ := d.snapshot(); status != dsActive {
		return nil, notFound("Datastore %s is %s, not ACTIVE.", d.id, status)
	}
	spec.ChaosReject, spec.ChaosSeed = s.opts.ChaosImportReject, s.opts.ChaosSeed
	sb, _ := json.Marshal(spec)
	var b [16]byte
	_, _ = rand.Read(b[:])
	j := jobRecord{id: hex.EncodeToString(b[:]), kind: kindImport, datastore: d.id, status: jobSubmitted,
		submitted: s.now().UTC().Truncate(time.Millisecond), spec: string(sb)}
	if in.JobName != nil {
		j.name = *in.JobName
	}
	if in.ClientToken != nil {
		j.clientToken = *in.ClientToken
	}
	j, created, err := s.ctl.insertJob(ctx, j)
	if err != nil {
		return nil, internal(err)
	}
	if created {
		s.jobs.notify()
	}
	return map[string]string{"JobId": j.id, "JobStatus": j.status, "DatastoreId": j.datastore}, nil
}

// checkImport validates a StartFHIRImportJob request and returns its spec.
func checkImport(in *startImportIn) (jobSpec, *apiError) {
	var sp jobSpec
	if e := checkOptional("jobName", in.JobName, 1, 64, namePattern); e != nil {
		return sp, e
	}
	if e := checkOptional("clientToken", in.ClientToken, 1, 64, clientTokenPattern); e != nil {
		return sp, e
	}
	if in.InputDataConfig == nil {
		return sp, validation("1 validation error detected: Value null at 'inputDataConfig' failed to satisfy constraint: Member must not be null")
	}
	if in.JobOutputDataConfig == nil || in.JobOutputDataConfig.S3Configuration == nil {
		return sp, validation("1 validation error detected: Value null at 'jobOutputDataConfig' failed to satisfy constraint: Member must not be null")
	}
	out := in.JobOutputDataConfig.S3Configuration
	for _, c := range []struct {
		member string
		v      *string
	}{{"inputDataConfig.s3Uri", in.InputDataConfig.S3URI}, {"jobOutputDataConfig.s3Configuration.s3Uri", out.S3URI},
		{"jobOutputDataConfig.s3Configuration.kmsKeyId", out.KmsKeyID}, {"dataAccessRoleArn", in.DataAccessRoleArn}} {
		if e := checkRequired(c.member, c.v); e != nil {
			return sp, e
		}
	}
	for _, c := range []struct {
		member string
		v      string
	}{{"inputDataConfig.s3Uri", *in.InputDataConfig.S3URI}, {"jobOutputDataConfig.s3Configuration.s3Uri", *out.S3URI}} {
		if e := checkString(c.member, c.v, 0, 1024, s3URIPattern); e != nil {
			return sp, e
		}
	}
	if e := checkString("jobOutputDataConfig.s3Configuration.kmsKeyId", *out.KmsKeyID, 1, 400, kmsKeyPattern); e != nil {
		return sp, e
	}
	if e := checkString("dataAccessRoleArn", *in.DataAccessRoleArn, 20, 2048, roleARNPattern); e != nil {
		return sp, e
	}
	if v := in.ValidationLevel; v != nil && *v != "strict" && *v != "structure-only" && *v != "minimal" {
		return sp, validation("1 validation error detected: Value '%s' at 'validationLevel' failed to satisfy constraint: Member must satisfy enum value set: [strict, structure-only, minimal]", safeName(*v))
	}
	sp = jobSpec{Input: *in.InputDataConfig.S3URI, Output: *out.S3URI, KMSKeyID: *out.KmsKeyID, RoleARN: *in.DataAccessRoleArn}
	if in.ValidationLevel != nil {
		sp.ValidationLevel = *in.ValidationLevel
	}
	return sp, nil
}

type jobIDIn struct {
	DatastoreID *string `json:"DatastoreId"`
	JobID       *string `json:"JobId"`
}

func (s *Server) describeImportJob(ctx context.Context, _ *http.Request, body []byte) (any, *apiError) {
	var in jobIDIn
	if e := decodeRequest(body, &in); e != nil {
		return nil, e
	}
	d, e := s.lookupDatastore(in.DatastoreID)
	if e != nil {
		return nil, e
	}
	if e := checkRequired("jobId", in.JobID); e != nil {
		return nil, e
	}
	j, ok, err := s.ctl.job(ctx, kindImport, d.id, *in.JobID)
	if err != nil {
		return nil, internal(err)
	}
	if !ok {
		return nil, notFound("Import job %s does not exist in datastore %s.", safeName(*in.JobID), d.id)
	}
	p, err := s.importJobProperties(ctx, j)
	if err != nil {
		return nil, internal(err)
	}
	return map[string]any{"ImportJobProperties": p}, nil
}

func (s *Server) listImportJobs(ctx context.Context, _ *http.Request, body []byte) (any, *apiError) {
	var in struct {
		DatastoreID     *string `json:"DatastoreId"`
		NextToken       *string
		MaxResults      *int
		JobName         *string
		JobStatus       *string
		SubmittedBefore *epoch
		SubmittedAfter  *epoch
	}
	if e := decodeRequest(body, &in); e != nil {
		return nil, e
	}
	if e := checkMaxResults(in.MaxResults); e != nil {
		return nil, e
	}
	d, e := s.lookupDatastore(in.DatastoreID)
	if e != nil {
		return nil, e
	}
	jobs, err := s.ctl.jobs(ctx, kindImport, d.id)
	if err != nil {
		return nil, internal(err)
	}
	var match []jobRecord
	for _, j := range jobs {
		if (in.JobName != nil && *in.JobName != j.name) || (in.JobStatus != nil && *in.JobStatus != j.status) ||
			(in.SubmittedBefore != nil && !j.submitted.Before(time.Time(*in.SubmittedBefore))) ||
			(in.SubmittedAfter != nil && !j.submitted.After(time.Time(*in.SubmittedAfter))) {
			continue
		}
		match = append(match, j)
	}
	from, to, next, e := page(len(match), in.NextToken, in.MaxResults)
	if e != nil {
		return nil, e
	}
	list := []*importJobProperties{}
	for _, j := range match[from:to] {
		p, err := s.importJobProperties(ctx, j)
		if err != nil {
			return nil, internal(err)
		}
		list = append(list, p)
	}
	out := map[string]any{"ImportJobPropertiesList": list}
	if next != nil {
		out["NextToken"] = *next
	}
	return out, nil
}

// importJobProperties is ImportJobProperties.
type importJobProperties struct {
	JobID           string  `json:"JobId"`
	JobName         string  `json:"JobName,omitempty"`
	JobStatus       string  `json:"JobStatus"`
	SubmitTime      epoch   `json:"SubmitTime"`
	EndTime         *epoch  `json:"EndTime,omitempty"`
	DatastoreID     string  `json:"DatastoreId"`
	InputDataConfig s3URIIn `json:"InputDataConfig"`
	JobOutput       struct {
		S3Configuration struct {
			S3URI    string `json:"S3Uri"`
			KmsKeyID string `json:"KmsKeyId"`
		}
	} `json:"JobOutputDataConfig"`
	JobProgressReport progressReport `json:"JobProgressReport"`
	DataAccessRoleArn string         `json:"DataAccessRoleArn"`
	Message           string         `json:"Message,omitempty"`
	ValidationLevel   string         `json:"ValidationLevel,omitempty"`
}

type s3URIIn struct {
	S3URI string `json:"S3Uri"`
}

// progressReport is JobProgressReport.
type progressReport struct {
	ScannedFiles       int64   `json:"TotalNumberOfScannedFiles"`
	ScannedMB          float64 `json:"TotalSizeOfScannedFilesInMB"`
	ImportedFiles      int64   `json:"TotalNumberOfImportedFiles"`
	ResourcesScanned   int64   `json:"TotalNumberOfResourcesScanned"`
	ResourcesImported  int64   `json:"TotalNumberOfResourcesImported"`
	ResourcesWithError int64   `json:"TotalNumberOfResourcesWithCustomerError"`
	FilesWithError     int64   `json:"TotalNumberOfFilesReadWithCustomerError"`
	Throughput         float64 `json:"Throughput"`
}

func (s *Server) importJobProperties(ctx context.Context, j jobRecord) (*importJobProperties, error) {
	spec, err := decodeSpec(j.spec)
	if err != nil {
		return nil, err
	}
	p := &importJobProperties{JobID: j.id, JobName: j.name, JobStatus: j.status, SubmitTime: epoch(j.submitted),
		EndTime: epochPtr(j.ended), DatastoreID: j.datastore, InputDataConfig: s3URIIn{spec.Input},
		DataAccessRoleArn: spec.RoleARN, Message: j.message, ValidationLevel: spec.ValidationLevel}
	p.JobOutput.S3Configuration.S3URI, p.JobOutput.S3Configuration.KmsKeyID = spec.Output, spec.KMSKeyID
	files, err := s.ctl.files(ctx, j.id)
	if err != nil {
		return nil, err
	}
	live, running := s.jobs.progress(j.id)
	var scannedBytes int64
	var c fileCounts
	for _, f := range files {
		switch {
		case f.done:
			c.add(f.counts)
		case running && f.idx == live.idx:
			c.add(live.counts)
		default:
			continue
		}
		p.JobProgressReport.ScannedFiles++
		scannedBytes += f.size
		if f.done && !f.readError {
			p.JobProgressReport.ImportedFiles++
		}
		if f.readError {
			p.JobProgressReport.FilesWithError++
		}
	}
	r := &p.JobProgressReport
	r.ScannedMB = megabytes(scannedBytes)
	r.ResourcesScanned, r.ResourcesImported, r.ResourcesWithError = c.scanned, c.imported, c.failed
	if !j.started.IsZero() {
		end := j.ended
		if end.IsZero() {
			end = s.now()
		}
		if secs := end.Sub(j.started).Seconds(); secs > 0 {
			r.Throughput = math.Round(float64(c.imported)/secs*100) / 100
		}
	}
	return p, nil
}
