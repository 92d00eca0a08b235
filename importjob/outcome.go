package importjob

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/fhirload/fhirload/deadletter"
	"github.com/fhirload/fhirload/pipeline"
)

// outputFolder is the folder HealthLake writes a job's output to:
// {output}/{datastoreId}-FHIR_IMPORT-{jobId}/.
func outputFolder(output, datastore, job string) string {
	if !strings.HasSuffix(output, "/") {
		output += "/"
	}
	return output + datastore + "-FHIR_IMPORT-" + job + "/"
}

// outputRecord is one line of a job's SUCCESS or FAILURE output.
type outputRecord struct {
	InputFile        string          `json:"inputFile"`
	LineNumber       int64           `json:"lineNumber"`
	ResourceType     string          `json:"resourceType"`
	ID               string          `json:"id"`
	Line             *string         `json:"line"`
	LineBase64       string          `json:"lineBase64"`
	Status           string          `json:"status"`
	OperationOutcome json.RawMessage `json:"operationOutcome"`
}

// lineLevel reports whether a failure record is about one line; one that
// names no resource and carries no line says the file could not be read
// from its lineNumber on.
func (r *outputRecord) lineLevel() bool {
	return r.Line != nil || r.LineBase64 != "" || r.ResourceType != "" || r.ID != ""
}

// httpStatus is the status code at the start of "503 Service Unavailable".
func httpStatus(s string) int {
	code, _, _ := strings.Cut(s, " ")
	n, err := strconv.Atoi(code)
	if err != nil {
		return 0
	}
	return n
}

// issueCode is the code of the first issue of an OperationOutcome ("" when
// it has none): a short word of the FHIR issue-type value set, no content.
func issueCode(oo json.RawMessage) string {
	var o struct {
		Issue []struct{ Code string } `json:"issue"`
	}
	if json.Unmarshal(oo, &o) != nil || len(o.Issue) == 0 {
		return ""
	}
	c := o.Issue[0].Code
	for _, r := range c {
		if !(r >= 'a' && r <= 'z' || r == '-') {
			return ""
		}
	}
	return c
}

// bitset is a set of line numbers.
type bitset []uint64

func (b *bitset) set(n uint32) {
	i := int(n / 64)
	if i >= len(*b) {
		*b = append(*b, make([]uint64, i+1-len(*b))...)
	}
	(*b)[i] |= 1 << (n % 64)
}

func (b bitset) has(n uint32) bool {
	i := int(n / 64)
	return i < len(b) && b[i]&(1<<(n%64)) != 0
}

// outcomes is what a finished job did to the lines of a batch, by the
// source and line each staged line came from. Memory: two bits per staged
// line, and an entry per failed line (its record is spilled to disk).
type outcomes struct {
	batch    *batchRecord
	job      *jobAttempt
	src      map[string]uint32 // source URI -> its number in the batch
	reported []bitset          // per batch source: lines the job reported on
	created  []bitset          // per batch source: lines the job created
	failed   map[uint64]spillRef

	spill   *os.File
	spillW  *bufio.Writer
	spillAt int64

	successRecords, failureRecords, unmatched int64
}

type spillRef struct {
	off int64
	n   int32
}

// spilled is a failure as spilled.
type spilled struct {
	Type    string          `json:"type,omitempty"`
	ID      string          `json:"id,omitempty"`
	Status  int             `json:"status"`
	Outcome json.RawMessage `json:"outcome,omitempty"`
	Message string          `json:"message"`
}

func key(src, line uint32) uint64 { return uint64(src)<<32 | uint64(line) }

// readOutcomes reads the output of job j of batch b: its manifest (which
// must be there: it is how a job's output is known to be complete), then
// every SUCCESS and FAILURE record.
func (s *Sink) readOutcomes(ctx context.Context, b *batchRecord, j *jobAttempt, tmpDir string) (*outcomes, error) {
	o := &outcomes{batch: b, job: j, src: make(map[string]uint32, len(b.Sources)), failed: map[uint64]spillRef{},
		reported: make([]bitset, len(b.Sources)), created: make([]bitset, len(b.Sources))}
	for i, u := range b.Sources {
		o.src[u] = uint32(i)
	}
	f, err := os.CreateTemp(tmpDir, "outcomes-*.ndjson")
	if err != nil {
		return nil, fmt.Errorf("import outcomes: %w", err)
	}
	_ = os.Remove(f.Name()) // unlinked: gone whatever happens
	o.spill, o.spillW = f, bufio.NewWriterSize(f, 256<<10)

	folder := outputFolder(b.OutputURL, b.Datastore, j.JobID)
	bucket, prefix, _ := strings.Cut(strings.TrimPrefix(folder, "s3://"), "/")
	m, err := s.opts.S3.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(prefix + "manifest.json")})
	if err == nil {
		m.Body.Close()
	} else {
		o.close()
		var nk *s3types.NoSuchKey
		if errors.As(err, &nk) {
			return nil, fmt.Errorf("the output of import job %s is not in %s (no manifest.json): which lines it rejected cannot be known", j.JobID, folder)
		}
		return nil, fmt.Errorf("read the output of import job %s: %w", j.JobID, err)
	}
	parts := make(map[string]int, len(b.Parts))
	for i, p := range b.Parts {
		parts[b.Prefix+p.Name] = i
	}
	idx := &partIndex{dir: s.state.batchDir(b.Key), parts: b.Parts, n: -1}
	for _, kind := range []string{"SUCCESS/", "FAILURE/"} {
		p := s3.NewListObjectsV2Paginator(s.opts.S3, &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String(prefix + kind)})
		for p.HasMorePages() {
			page, err := p.NextPage(ctx)
			if err != nil {
				o.close()
				return nil, fmt.Errorf("list the output of import job %s: %w", j.JobID, err)
			}
			for _, obj := range page.Contents {
				if err := o.readObject(ctx, s.opts.S3, bucket, aws.ToString(obj.Key), kind == "FAILURE/", parts, idx); err != nil {
					o.close()
					return nil, err
				}
			}
		}
	}
	if err := o.spillW.Flush(); err != nil {
		o.close()
		return nil, fmt.Errorf("import outcomes: %w", err)
	}
	return o, nil
}

func (o *outcomes) close() {
	if o.spill != nil {
		o.spill.Close()
		o.spill = nil
	}
}

// readObject reads one output object's records into o.
func (o *outcomes) readObject(ctx context.Context, c S3, bucket, key string, failure bool, parts map[string]int, idx *partIndex) error {
	obj, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		return fmt.Errorf("read import output s3://%s/%s: %w", bucket, key, err)
	}
	defer obj.Body.Close()
	br := bufio.NewReaderSize(obj.Body, 256<<10)
	for n := 1; ; n++ {
		line, err := readLine(br)
		if len(bytes.TrimSpace(line)) > 0 {
			var rec outputRecord
			if jerr := json.Unmarshal(line, &rec); jerr != nil {
				return fmt.Errorf("import output s3://%s/%s line %d: not a record: %v", bucket, key, n, jerr)
			}
			if rerr := o.record(&rec, failure, parts, idx); rerr != nil {
				return rerr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read import output s3://%s/%s: %w", bucket, key, err)
		}
	}
}

// readLine returns the next line of br without its newline, whatever its
// length (a failure record carries the line it failed).
func readLine(br *bufio.Reader) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		long := bytes.Clone(line)
		for err == bufio.ErrBufferFull {
			line, err = br.ReadSlice('\n')
			long = append(long, line...)
		}
		line = long
	}
	return bytes.TrimRight(line, "\r\n"), err
}

// record applies one output record.
func (o *outcomes) record(r *outputRecord, failure bool, parts map[string]int, idx *partIndex) error {
	pn, ok := parts[r.InputFile]
	if !ok || r.LineNumber < 1 {
		o.unmatched++
		return nil
	}
	recs, err := idx.load(pn)
	if err != nil {
		return err
	}
	lines := int64(len(recs) / idxRecord)
	at := func(n int64) (src, line uint32) {
		rec := recs[(n-1)*idxRecord:]
		return binary.LittleEndian.Uint32(rec[12:16]), binary.LittleEndian.Uint32(rec[8:12])
	}
	if !failure {
		if r.LineNumber > lines {
			o.unmatched++
			return nil
		}
		o.successRecords++
		src, line := at(r.LineNumber)
		o.reported[src].set(line)
		if strings.HasPrefix(r.Status, "201") {
			o.created[src].set(line)
		}
		return nil
	}
	o.failureRecords++
	status := httpStatus(r.Status)
	code := issueCode(r.OperationOutcome)
	if r.LineNumber > lines {
		o.unmatched++
		return nil
	}
	if r.lineLevel() {
		if r.ResourceType == "" && r.Line != nil {
			// Rejected before it was parsed: name the resource from the line.
			var res struct {
				ResourceType string `json:"resourceType"`
				ID           string `json:"id"`
			}
			if json.Unmarshal([]byte(*r.Line), &res) == nil {
				r.ResourceType, r.ID = res.ResourceType, res.ID
			}
		}
		msg := fmt.Sprintf("import job %s rejected the line (HTTP %d", o.job.JobID, status)
		if code != "" {
			msg += ", issue " + code
		}
		src, line := at(r.LineNumber)
		return o.fail(src, line, spilled{Type: r.ResourceType, ID: r.ID, Status: status, Outcome: r.OperationOutcome, Message: msg + ")"})
	}
	// The job could not read the staged object from this line on: every
	// line from there that it did not report imported failed.
	msg := fmt.Sprintf("import job %s could not read the staged object %s from line %d on", o.job.JobID, r.InputFile, r.LineNumber)
	for n := r.LineNumber; n <= lines; n++ {
		src, line := at(n)
		if o.reported[src].has(line) {
			continue
		}
		if err := o.fail(src, line, spilled{Status: status, Outcome: r.OperationOutcome, Message: msg}); err != nil {
			return err
		}
	}
	return nil
}

func (o *outcomes) fail(src, line uint32, sp spilled) error {
	b, err := json.Marshal(sp)
	if err != nil {
		return err
	}
	o.failed[key(src, line)] = spillRef{off: o.spillAt, n: int32(len(b))}
	o.reported[src].set(line)
	if _, err := o.spillW.Write(b); err != nil {
		return fmt.Errorf("import outcomes: %w", err)
	}
	o.spillAt += int64(len(b))
	return nil
}

// trustCounts reports whether lines without a record may count as
// imported: the job wrote no SUCCESS records at all, and its counters say
// it imported every line it did not reject.
func (o *outcomes) trustCounts() bool {
	j := o.job
	return o.successRecords == 0 && j.Imported > 0 && j.Imported+j.Failed == o.batch.Lines && j.Failed == int64(len(o.failed))
}

// outcome is the outcome of the line (source, line) of the batch.
func (o *outcomes) outcome(source string, line uint32) (pipeline.Outcome, error) {
	src, ok := o.src[source]
	if !ok {
		return pipeline.Outcome{Status: pipeline.Failed, Reason: deadletter.ReasonImportRejected,
			Message: fmt.Sprintf("import job %s: the line is not part of its batch", o.job.JobID)}, nil
	}
	if ref, ok := o.failed[key(src, line)]; ok {
		b := make([]byte, ref.n)
		if _, err := o.spill.ReadAt(b, ref.off); err != nil {
			return pipeline.Outcome{}, fmt.Errorf("import outcomes: %w", err)
		}
		var sp spilled
		if err := json.Unmarshal(b, &sp); err != nil {
			return pipeline.Outcome{}, fmt.Errorf("import outcomes: %w", err)
		}
		return pipeline.Outcome{Status: pipeline.Failed, Reason: deadletter.ReasonImportRejected, HTTPStatus: sp.Status,
			OperationOutcome: sp.Outcome, Message: sp.Message, Attempts: 1, ResourceType: sp.Type, ResourceID: sp.ID}, nil
	}
	if o.reported[src].has(line) || o.trustCounts() {
		return pipeline.Outcome{Status: pipeline.Loaded, Created: o.created[src].has(line)}, nil
	}
	return pipeline.Outcome{Status: pipeline.Failed, Reason: deadletter.ReasonImportRejected, Attempts: 1,
		Message: fmt.Sprintf("import job %s reported no outcome for the line (it may or may not be loaded: replay loads it)", o.job.JobID)}, nil
}

// partIndex reads the index of a batch's parts, one part at a time (the
// output of a job comes file by file).
type partIndex struct {
	dir   string
	parts []partRecord
	n     int
	recs  []byte
}

func (p *partIndex) load(n int) ([]byte, error) {
	if n == p.n {
		return p.recs, nil
	}
	b, err := os.ReadFile(filepath.Join(p.dir, idxName(p.parts[n].Name)))
	if err != nil {
		return nil, fmt.Errorf("import state: %w", err)
	}
	if int64(len(b)) != p.parts[n].Lines*idxRecord {
		return nil, fmt.Errorf("import state: %s holds %d records, want %d", idxName(p.parts[n].Name), len(b)/idxRecord, p.parts[n].Lines)
	}
	p.n, p.recs = n, b
	return b, nil
}
