package fhirstore

import (
	"bufio"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"net/http"
	"os"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// The bulk path of import jobs: lines are read from S3, parsed and checked
// as the data plane checks a PUT, and written straight into the data
// store's database in chunks — one store transaction per chunk, no HTTP —
// together with the chunk's output records and its place in the file.
const (
	// importChunkLines and importChunkBytes bound a chunk.
	importChunkLines = 5000
	importChunkBytes = 8 << 20
	// maxImportLine is the longest line imported; a longer one is a
	// failure record carrying its first maxRecordedLine bytes.
	maxImportLine   = 8 << 20
	maxRecordedLine = 64 << 10
	// readAttempts is how often a file is opened again after a read error
	// that is not in its content (a reset connection, say).
	readAttempts = 3
)

// chunkSchema is created in every data store's database: the committed
// chunks of the file an import job is reading (deleted once the file's
// outputs are written).
const chunkSchema = `
CREATE TABLE IF NOT EXISTS import_chunks (
	job            TEXT NOT NULL,
	file           INTEGER NOT NULL,
	next_line      INTEGER NOT NULL,
	scanned        INTEGER NOT NULL,
	imported       INTEGER NOT NULL,
	failed         INTEGER NOT NULL,
	imported_bytes INTEGER NOT NULL,
	read_error     INTEGER NOT NULL DEFAULT 0,
	success        BLOB,
	failure        BLOB,
	PRIMARY KEY (job, file, next_line)
);
`

// importer imports the files of one job.
type importer struct {
	jr   *jobRunner
	st   *store
	cli  S3API
	job  jobRecord
	spec jobSpec
	out  string // the job's output folder, s3://…/{ds}-FHIR_IMPORT-{job}/
}

// importLine is one non-blank input line on its way into the store.
type importLine struct {
	no        int64
	raw       []byte
	truncated bool
	p         *parsed
	id        string
	stamped   []byte // the body as version 1, stamped at the chunk's time
	err       *fhirError
	status    int
	version   int64
}

// resumePoint returns where file f of the job stands in the store: the
// next line to read (1 when nothing is committed) and the counts so far.
func (im *importer) resumePoint(ctx context.Context, f *jobFile) (int64, fileCounts, bool, error) {
	var next sql.NullInt64
	var c fileCounts
	var readErr bool
	err := im.st.r.QueryRowContext(ctx, `SELECT max(next_line), coalesce(sum(scanned), 0), coalesce(sum(imported), 0), coalesce(sum(failed), 0),
		coalesce(sum(imported_bytes), 0), coalesce(max(read_error), 0) FROM import_chunks WHERE job = ? AND file = ?`, im.job.id, f.idx).
		Scan(&next, &c.scanned, &c.imported, &c.failed, &c.importedBytes, &readErr)
	if err != nil {
		return 0, c, false, fmt.Errorf("read import checkpoint: %w", err)
	}
	if !next.Valid {
		return 1, c, false, nil
	}
	return next.Int64, c, readErr, nil
}

// file imports input file f from its resume point to its end, writes its
// outputs and records it done.
func (im *importer) file(ctx context.Context, f *jobFile) error {
	next, counts, readErr, err := im.resumePoint(ctx, f)
	if err != nil {
		return err
	}
	lf := &liveFile{idx: f.idx, counts: counts}
	im.jr.setLive(im.job.id, lf)
	defer im.jr.setLive(im.job.id, nil)
	for attempt := 1; !readErr; attempt++ {
		var rerr error
		next, rerr = im.read(ctx, f, next, lf)
		if rerr == nil {
			break
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var rf *readFailure
		if !errors.As(rerr, &rf) {
			return rerr // the store failed (the job fails), or an interruption
		}
		if !rf.retry || attempt == readAttempts {
			if err := im.recordReadFailure(ctx, f, next, rf.reason, lf); err != nil {
				return err
			}
			readErr = true
		}
	}
	if err := im.upload(ctx, f, "SUCCESS", "success"); err != nil {
		return err
	}
	if err := im.upload(ctx, f, "FAILURE", "failure"); err != nil {
		return err
	}
	f.done, f.readError, f.counts = true, readErr, lf.counts
	if err := im.jr.s.ctl.fileDone(ctx, im.job.id, *f); err != nil {
		return err
	}
	return dropChunks(ctx, im.st, im.job.id, f.idx)
}

// readFailure is why a file could not be read to its end: its reason names
// the S3 error or what is wrong with the file's format, never its content.
// retry is set when opening the file again may help (the S3 stream broke
// off before the object's end).
type readFailure struct {
	reason string
	retry  bool
}

func (e *readFailure) Error() string { return e.reason }

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// read reads f from line next on, committing chunks as they fill. It
// returns the next line to read when it stopped.
func (im *importer) read(ctx context.Context, f *jobFile, next int64, lf *liveFile) (int64, error) {
	bucket, _, _ := splitS3URI(im.spec.Input)
	obj, err := im.cli.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(f.key), IfMatch: nilIfEmpty(f.etag)})
	if err != nil {
		// The SDK has retried what can be retried.
		return next, &readFailure{reason: "the object could not be read: " + s3Reason(err)}
	}
	defer obj.Body.Close()
	raw := &countingReader{r: obj.Body}
	fail := func(err error) error {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return &readFailure{reason: readReason(err), retry: raw.n < aws.ToInt64(obj.ContentLength)}
	}
	src, err := decompress(raw)
	if err != nil {
		return next, fail(err)
	}
	return im.readFrom(ctx, f, src, next, lf, fail)
}

// readFrom reads the lines of f from src, importing those from line next
// on; fail classifies a read error. It returns the next line to read when
// it stopped. Two goroutines share the work: this one commits chunks while
// scan reads and prepares the next one.
func (im *importer) readFrom(ctx context.Context, f *jobFile, src io.Reader, next int64, lf *liveFile, fail func(error) error) (int64, error) {
	sctx, cancel := context.WithCancel(ctx)
	chunks := make(chan preparedChunk, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(chunks)
		im.scan(sctx, f, src, next, fail, chunks)
	}()
	defer func() {
		cancel()
		for range chunks { // let scan see the cancellation and end
		}
		<-done
	}()
	for pc := range chunks {
		if len(pc.lines) > 0 {
			c, err := im.commit(ctx, f, pc.lines, pc.upTo, pc.now)
			if err != nil {
				return next, err
			}
			lf.counts.add(c)
			im.jr.setLive(im.job.id, lf)
			next = pc.upTo
			if h := im.jr.s.opts.afterChunk; h != nil && h(im.job.id, f.idx, next) {
				return next, errInterrupted
			}
		}
		if pc.err != nil {
			return next, pc.err
		}
		if err := ctx.Err(); err != nil {
			return next, err
		}
	}
	return next, nil
}

// preparedChunk is a chunk of lines checked and ready to commit (the lines
// before upTo), and the read error that ended the file after them, if any.
type preparedChunk struct {
	lines []importLine
	upTo  int64
	now   time.Time // the time its resources are stamped with
	err   error
}

// scan reads the lines of src from line next on into chunks, prepares each
// and sends it to out, until the end of src, a read error, or ctx is done.
func (im *importer) scan(ctx context.Context, f *jobFile, src io.Reader, next int64, fail func(error) error, out chan<- preparedChunk) {
	lr := newLineReader(src, maxImportLine)
	chunkLines := importChunkLines
	if n := im.jr.s.opts.importChunkLines; n > 0 {
		chunkLines = n
	}
	send := func(pc preparedChunk) bool {
		pc.now = im.jr.s.now().Truncate(time.Millisecond)
		im.prepare(f, pc.lines, pc.now)
		select {
		case out <- pc:
			return true
		case <-ctx.Done():
			return false
		}
	}
	var chunk []importLine
	var size int
	for {
		line, no, truncated, err := lr.next()
		if err != nil {
			pc := preparedChunk{lines: chunk, upTo: lr.no + 1}
			if err != io.EOF {
				pc.err = fail(err)
			}
			send(pc)
			return
		}
		if no < next || len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		chunk = append(chunk, importLine{no: no, raw: bytes.Clone(line), truncated: truncated})
		size += len(line)
		if len(chunk) >= chunkLines || size >= importChunkBytes {
			if !send(preparedChunk{lines: chunk, upTo: no + 1}) {
				return
			}
			chunk, size = nil, 0
		}
	}
}

func nilIfEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// decompress returns r, gunzipped when it starts with the gzip magic bytes.
func decompress(r io.Reader) (io.Reader, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	magic, err := br.Peek(2)
	if err != nil || magic[0] != 0x1f || magic[1] != 0x8b {
		return br, nil // an empty or one-byte file is read as it is
	}
	zr, err := gzip.NewReader(br)
	if err != nil {
		return nil, err
	}
	return zr, nil
}

// prepare checks each line of chunk as the data plane checks a PUT body,
// and stamps it as a version 1 written at now, outside the store's write
// lock.
func (im *importer) prepare(f *jobFile, chunk []importLine, now time.Time) {
	at := lastUpdated(now)
	for i := range chunk {
		l := &chunk[i]
		switch {
		case chaosReject(im.spec.ChaosReject, im.spec.ChaosSeed, f.key, l.no):
			l.err = errf(http.StatusServiceUnavailable, "transient", "Rejected by --chaos-import-reject (an injected failure): import the line again.")
			continue
		case l.truncated:
			l.err = badRequest("The line is longer than %d bytes.", maxImportLine)
			continue
		}
		// Validate without copying, and compact only a line that needs it
		// (NDJSON lines seldom do).
		body := bytes.TrimSpace(l.raw)
		if !json.Valid(body) {
			l.err = badRequest("Malformed JSON: the request body is not valid JSON.")
			continue
		}
		p, e := parseResource(compactValid(body), true)
		if e != nil {
			l.err = e
			continue
		}
		l.p, l.id = p, p.id
		if l.id == "" {
			l.id = derivedID(im.job.id, f.key, l.no)
		}
		l.stamped = stampResource(nil, p.body, p.ms, l.id, "1", at)
	}
}

// commit writes chunk (prepared lines of f before line upTo) into the store
// with its output records and checkpoint, in one transaction, and returns
// its counts.
func (im *importer) commit(ctx context.Context, f *jobFile, chunk []importLine, upTo int64, now time.Time) (fileCounts, error) {
	quri, _ := json.Marshal("s3://" + mustBucket(im.spec.Input) + "/" + f.key)
	var c fileCounts
	err := im.st.write(ctx, func(t *wtx) error {
		c = fileCounts{}
		var ok, bad bytes.Buffer
		for i := range chunk {
			l := &chunk[i]
			if l.err == nil {
				v, created, err := t.put(l.p, l.id, putOptions{dupCheck: true, stamped: l.stamped}, now, nil)
				var fe *fhirError
				switch {
				case errors.As(err, &fe):
					l.err = fe
				case err != nil:
					return err
				default:
					l.status, l.version = http.StatusOK, v.version
					if created {
						l.status = http.StatusCreated
					}
				}
			}
			c.scanned++
			if l.err != nil {
				c.failed++
				failureRecord(&bad, quri, l)
				continue
			}
			c.imported++
			c.importedBytes += int64(len(l.raw))
			successRecord(&ok, quri, l)
		}
		_, err := t.tx.ExecContext(t.ctx, `INSERT INTO import_chunks (job, file, next_line, scanned, imported, failed, imported_bytes, success, failure)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, im.job.id, f.idx, upTo, c.scanned, c.imported, c.failed, c.importedBytes, ok.Bytes(), bad.Bytes())
		if err != nil {
			return fmt.Errorf("save import checkpoint: %w", err)
		}
		return nil
	})
	if err != nil {
		return fileCounts{}, err
	}
	return c, nil
}

// recordReadFailure records that f could not be read from line next on: a
// failure record without a line, and the file marked as read with an error.
func (im *importer) recordReadFailure(ctx context.Context, f *jobFile, next int64, reason string, lf *liveFile) error {
	uri := "s3://" + mustBucket(im.spec.Input) + "/" + f.key
	var b bytes.Buffer
	b.WriteString(`{"inputFile":`)
	writeJSONString(&b, uri)
	b.WriteString(`,"lineNumber":` + strconv.FormatInt(next, 10) + `,"operationOutcome":`)
	b.Write(outcome("error", "exception", fmt.Sprintf("The file could not be read from line %d on: %s.", next, reason)))
	b.WriteString("}\n")
	err := im.st.write(ctx, func(t *wtx) error {
		_, err := t.tx.ExecContext(t.ctx, `INSERT INTO import_chunks (job, file, next_line, scanned, imported, failed, imported_bytes, read_error, failure)
			VALUES (?, ?, ?, 0, 0, 0, 0, 1, ?) ON CONFLICT (job, file, next_line) DO UPDATE SET read_error = 1, failure = coalesce(failure, x'') || excluded.failure`,
			im.job.id, f.idx, next, b.Bytes())
		return err
	})
	if err != nil {
		return fmt.Errorf("save import checkpoint: %w", err)
	}
	im.jr.setLive(im.job.id, lf)
	return nil
}

// readReason names a read error without content: gzip and S3 errors say
// what is wrong with the file, not what is in it.
func readReason(err error) string {
	var ce flate.CorruptInputError
	switch {
	case errors.Is(err, gzip.ErrHeader):
		return "invalid gzip header"
	case errors.Is(err, gzip.ErrChecksum):
		return "gzip checksum mismatch"
	case errors.As(err, &ce):
		return "corrupt gzip data"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "the compressed data ends early"
	}
	return err.Error()
}

func mustBucket(uri string) string {
	b, _, _ := splitS3URI(uri)
	return b
}

// successRecord appends the SUCCESS output record of l; quri is the input
// file's URI as a JSON string. Types and ids need no escaping (they are
// checked to be letters, digits, '-' and '.').
func successRecord(b *bytes.Buffer, quri []byte, l *importLine) {
	b.WriteString(`{"inputFile":`)
	b.Write(quri)
	b.WriteString(`,"lineNumber":`)
	b.WriteString(strconv.FormatInt(l.no, 10))
	b.WriteString(`,"resourceType":"`)
	b.WriteString(l.p.typ)
	b.WriteString(`","id":"`)
	b.WriteString(l.id)
	b.WriteString(`","versionId":"`)
	b.WriteString(strconv.FormatInt(l.version, 10))
	b.WriteString(`","status":"`)
	b.WriteString(statusLine(l.status))
	b.WriteString("\"}\n")
}

// failureRecord appends the FAILURE output record of l: the line as sent
// and the OperationOutcome of its refusal.
func failureRecord(b *bytes.Buffer, quri []byte, l *importLine) {
	b.WriteString(`{"inputFile":`)
	b.Write(quri)
	b.WriteString(`,"lineNumber":` + strconv.FormatInt(l.no, 10))
	if l.p != nil {
		b.WriteString(`,"resourceType":`)
		writeJSONString(b, l.p.typ)
		b.WriteString(`,"id":`)
		writeJSONString(b, l.id)
	}
	raw := l.raw
	if l.truncated {
		raw = raw[:min(len(raw), maxRecordedLine)]
		b.WriteString(`,"lineTruncated":true`)
	}
	if utf8.Valid(raw) {
		b.WriteString(`,"line":`)
		writeJSONString(b, string(raw))
	} else {
		b.WriteString(`,"lineBase64":"` + base64.StdEncoding.EncodeToString(raw) + `"`)
	}
	b.WriteString(`,"status":"` + statusLine(l.err.status) + `","operationOutcome":`)
	b.Write(outcome("error", l.err.code, l.err.text))
	b.WriteString("}\n")
}

// derivedID is the id given to a line without one: the same for the same
// job, file and line, so a resumed job writes the same resource again
// rather than a second one.
func derivedID(job, key string, line int64) string {
	h := sha256.New()
	h.Write([]byte(job))
	h.Write([]byte{0})
	h.Write([]byte(key))
	h.Write([]byte{0})
	h.Write(strconv.AppendInt(nil, line, 10))
	var b [16]byte
	copy(b[:], h.Sum(nil))
	b[6] = b[6]&0x0f | 0x50
	b[8] = b[8]&0x3f | 0x80
	x := hex.EncodeToString(b[:])
	return x[0:8] + "-" + x[8:12] + "-" + x[12:16] + "-" + x[16:20] + "-" + x[20:]
}

// chaosReject decides, the same way every time for the same seed, file and
// line, whether --chaos-import-reject rejects a line.
func chaosReject(p float64, seed uint64, key string, line int64) bool {
	if p <= 0 {
		return false
	}
	h := fnv.New64a()
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], seed)
	h.Write(b[:])
	h.Write([]byte(key))
	binary.LittleEndian.PutUint64(b[:], uint64(line))
	h.Write(b[:])
	// splitmix64's finaliser spreads FNV's bits evenly.
	x := h.Sum64()
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return float64(x>>11)/(1<<53) < p
}

// upload writes the output records of kind ("success" or "failure") of f
// to the job's folder, {out}{folder}/{f.output}, when there are any.
func (im *importer) upload(ctx context.Context, f *jobFile, folder, column string) error {
	tmp, err := os.CreateTemp(im.jr.s.opts.Dir, "import-output-*")
	if err != nil {
		return fmt.Errorf("stage output: %w", err)
	}
	defer func() {
		tmp.Close()
		_ = os.Remove(tmp.Name())
	}()
	rows, err := im.st.r.QueryContext(ctx, `SELECT `+column+` FROM import_chunks WHERE job = ? AND file = ? ORDER BY next_line`, im.job.id, f.idx)
	if err != nil {
		return fmt.Errorf("read output records: %w", err)
	}
	var n int64
	for rows.Next() {
		var b []byte
		if err := rows.Scan(&b); err != nil {
			rows.Close()
			return fmt.Errorf("read output records: %w", err)
		}
		k, err := tmp.Write(b)
		n += int64(k)
		if err != nil {
			rows.Close()
			return fmt.Errorf("stage output: %w", err)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read output records: %w", err)
	}
	if n == 0 {
		return nil
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("stage output: %w", err)
	}
	return im.put(ctx, folder+"/"+f.output, tmp, n, "application/x-ndjson")
}

// put writes body (of n bytes, seekable: plain-HTTP endpoints need that)
// under the job's output folder, encrypted with the job's KMS key.
func (im *importer) put(ctx context.Context, name string, body io.ReadSeeker, n int64, contentType string) error {
	bucket, prefix, _ := splitS3URI(im.out)
	in := &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(prefix + name), Body: body,
		ContentLength: aws.Int64(n), ContentType: aws.String(contentType)}
	if im.spec.KMSKeyID != "" {
		in.ServerSideEncryption = types.ServerSideEncryptionAwsKms
		in.SSEKMSKeyId = aws.String(im.spec.KMSKeyID)
	}
	if _, err := im.cli.PutObject(ctx, in); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return failJob("The output %s%s could not be written: %s.", im.out, name, s3Reason(err))
	}
	return nil
}

// manifestFile is one input file in manifest.json (a fhirload addition to
// HealthLake's manifest, which has the totals only).
type manifestFile struct {
	InputFile              string `json:"inputFile"`
	SuccessOutputS3URI     string `json:"successOutputS3Uri,omitempty"`
	FailureOutputS3URI     string `json:"failureOutputS3Uri,omitempty"`
	ReadError              bool   `json:"readError,omitempty"`
	ResourcesScanned       int64  `json:"numberOfResourcesScanned"`
	ResourcesImported      int64  `json:"numberOfResourcesImportedSuccessfully"`
	ResourcesCustomerError int64  `json:"numberOfResourcesWithCustomerError"`
}

// manifest writes the job's manifest.json: HealthLake's fields, and the
// files.
func (im *importer) manifest(ctx context.Context, files []jobFile) error {
	type uri struct {
		S3URI         string `json:"s3Uri"`
		EncryptionKey string `json:"encryptionKeyID,omitempty"`
	}
	m := struct {
		InputDataConfig     uri               `json:"inputDataConfig"`
		OutputDataConfig    uri               `json:"outputDataConfig"`
		SuccessOutput       map[string]string `json:"successOutput"`
		FailureOutput       map[string]string `json:"failureOutput"`
		ScannedFiles        int               `json:"numberOfScannedFiles"`
		FilesImported       int               `json:"numberOfFilesImported"`
		ScannedMB           float64           `json:"sizeOfScannedFilesInMB"`
		ImportedMB          float64           `json:"sizeOfDataImportedSuccessfullyInMB"`
		Scanned             int64             `json:"numberOfResourcesScanned"`
		Imported            int64             `json:"numberOfResourcesImportedSuccessfully"`
		CustomerError       int64             `json:"numberOfResourcesWithCustomerError"`
		ServerError         int64             `json:"numberOfResourcesWithServerError"`
		FilesReadWithErrors int               `json:"numberOfFilesReadWithCustomerError"`
		Files               []manifestFile    `json:"files"`
	}{
		InputDataConfig:  uri{S3URI: im.spec.Input},
		OutputDataConfig: uri{S3URI: im.out, EncryptionKey: im.spec.KMSKeyID},
		SuccessOutput:    map[string]string{"successOutputS3Uri": im.out + "SUCCESS/"},
		FailureOutput:    map[string]string{"failureOutputS3Uri": im.out + "FAILURE/"},
		Files:            []manifestFile{},
	}
	var scannedBytes, importedBytes int64
	for _, f := range files {
		m.ScannedFiles++
		scannedBytes += f.size
		importedBytes += f.counts.importedBytes
		m.Scanned += f.counts.scanned
		m.Imported += f.counts.imported
		m.CustomerError += f.counts.failed
		mf := manifestFile{InputFile: "s3://" + mustBucket(im.spec.Input) + "/" + f.key, ReadError: f.readError,
			ResourcesScanned: f.counts.scanned, ResourcesImported: f.counts.imported, ResourcesCustomerError: f.counts.failed}
		if f.counts.imported > 0 {
			mf.SuccessOutputS3URI = im.out + "SUCCESS/" + f.output
		}
		if f.counts.failed > 0 || f.readError {
			mf.FailureOutputS3URI = im.out + "FAILURE/" + f.output
		}
		if f.readError {
			m.FilesReadWithErrors++
		} else {
			m.FilesImported++
		}
		m.Files = append(m.Files, mf)
	}
	m.ScannedMB, m.ImportedMB = megabytes(scannedBytes), megabytes(importedBytes)
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return im.put(ctx, "manifest.json", bytes.NewReader(b), int64(len(b)), "application/json")
}

// megabytes is n bytes in MB (10^6), to six decimals as HealthLake writes.
func megabytes(n int64) float64 { return math.Round(float64(n)) / 1e6 }

// lineReader splits a stream into lines (\n or \r\n), numbering them from
// 1, without holding more than max bytes of one line.
type lineReader struct {
	br  *bufio.Reader
	max int
	no  int64
	buf []byte
}

func newLineReader(r io.Reader, max int) *lineReader {
	return &lineReader{br: bufio.NewReaderSize(r, 64<<10), max: max}
}

// next returns the next line (valid until the next call), its number, and
// whether it was cut at max bytes. A UTF-8 byte-order mark before the first
// line is dropped. At the end it returns io.EOF.
func (lr *lineReader) next() (line []byte, no int64, truncated bool, err error) {
	lr.buf = lr.buf[:0]
	for {
		frag, err := lr.br.ReadSlice('\n')
		if len(lr.buf)+len(frag) <= lr.max {
			lr.buf = append(lr.buf, frag...)
		} else {
			if room := lr.max - len(lr.buf); room > 0 {
				lr.buf = append(lr.buf, frag[:room]...)
			}
			truncated = true
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil && (err != io.EOF || len(lr.buf) == 0) {
			return nil, lr.no, false, err
		}
		break
	}
	lr.no++
	line = bytes.TrimSuffix(lr.buf, []byte("\n"))
	line = bytes.TrimSuffix(line, []byte("\r"))
	if lr.no == 1 {
		line = bytes.TrimPrefix(line, []byte("\xef\xbb\xbf"))
	}
	return line, lr.no, truncated, nil
}

// dropChunks deletes the committed chunks of a job's file (all files when
// file is -1), once they are written out.
func dropChunks(ctx context.Context, st *store, job string, file int) error {
	err := st.write(ctx, func(t *wtx) error {
		_, err := t.tx.ExecContext(t.ctx, `DELETE FROM import_chunks WHERE job = ? AND (file = ? OR ? = -1)`, job, file, file)
		return err
	})
	if err != nil {
		return fmt.Errorf("drop import chunks: %w", err)
	}
	return nil
}
