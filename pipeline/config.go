// Package pipeline connects the stages: configuration (pipeline.yaml), the
// runner that moves lines from sources through transform and loader to an
// outcome, the run report, and metrics.
package pipeline

import (
	"bytes"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/fhirload/fhirload/ingest"
)

// Config is pipeline.yaml. Every key has a default (see Defaults and the
// annotated pipeline.yaml at the repository root).
type Config struct {
	Source     SourceConfig     `yaml:"source"`
	Transform  TransformConfig  `yaml:"transform"`
	Target     TargetConfig     `yaml:"target"`
	Retry      RetryConfig      `yaml:"retry"`
	AWS        AWSConfig        `yaml:"aws"`
	DeadLetter DeadLetterConfig `yaml:"deadletter"`
	Checkpoint CheckpointConfig `yaml:"checkpoint"`
	Log        LogConfig        `yaml:"log"`
	Metrics    MetricsConfig    `yaml:"metrics"`
}

// SourceConfig says where work comes from and how it is read.
type SourceConfig struct {
	Paths                []string      `yaml:"paths"`
	QueueURL             string        `yaml:"queue_url"`
	Format               string        `yaml:"format"`
	Suffixes             []string      `yaml:"suffixes"`
	MaxLineBytes         int           `yaml:"max_line_bytes"`
	MaxDecompressedBytes int64         `yaml:"max_decompressed_bytes"`
	Objects              int           `yaml:"objects"`
	VisibilityTimeout    time.Duration `yaml:"visibility_timeout"`
	WaitSeconds          int32         `yaml:"wait_seconds"`
}

// TransformConfig selects the validation profile, id strategy and mapping.
type TransformConfig struct {
	Profile string `yaml:"profile"`
	IDs     string `yaml:"ids"`
	Mapping string `yaml:"mapping"`
	// References is how urn:uuid references find their target's type:
	// "index" (a pre-pass over the sources records every id of the run) or
	// "off" (the reference's type element, else the element's first target).
	References string `yaml:"references"`
	// Extensions: "lenient" accepts (and counts) extensions whose definition
	// is unknown; "strict" dead-letters their lines.
	Extensions string `yaml:"extensions"`
	// Profiles are local FHIR package .tgz files (e.g. US Core) whose
	// profiles, extensions and value sets are added to the core package's.
	Profiles []string `yaml:"profiles"`
}

// TargetConfig is the FHIR server written to.
type TargetConfig struct {
	URL                 string  `yaml:"url"`
	Region              string  `yaml:"region"`
	Auth                string  `yaml:"auth"`
	Mode                string  `yaml:"mode"`
	BatchSize           int     `yaml:"batch_size"`
	BatchBytes          int     `yaml:"batch_bytes"`
	Concurrency         int     `yaml:"concurrency"`
	WriteUnitsPerSecond float64 `yaml:"write_units_per_second"`
	// ReadUnitsPerSecond paces verify's reads: one unit per resource read
	// back; 0 = no configured cap (the adaptive rate still applies).
	ReadUnitsPerSecond float64 `yaml:"read_units_per_second"`
	// ReadMethod is how verify reads: batch (Bundles of GETs) or search
	// (_id searches).
	ReadMethod string `yaml:"read_method"`
	Data       string `yaml:"data"`
	// Import configures mode "import": a HealthLake import job per run.
	Import ImportConfig `yaml:"import"`
}

// ImportConfig configures target.mode: import. The lines that pass
// transform are staged to S3 as NDJSON objects, one HealthLake import job
// (StartFHIRImportJob) loads them, and its output settles every line
// (package importjob).
type ImportConfig struct {
	// StagingURL is the s3://bucket/prefix the staged objects go under
	// (each run in a folder of its own). Required.
	StagingURL string `yaml:"staging_url"`
	// OutputURL is the s3://bucket/prefix the job writes its output to.
	// Required.
	OutputURL string `yaml:"output_url"`
	// RoleARN is the job's DataAccessRoleArn. Required.
	RoleARN string `yaml:"role_arn"`
	// KMSKeyID encrypts the job's output (HealthLake requires one). Required.
	KMSKeyID string `yaml:"kms_key_id"`
	// DatastoreID is the data store; empty means the {id} of target.url's
	// /datastore/{id}/r4/ ("local" for the embedded target).
	DatastoreID string `yaml:"datastore_id"`
	// EndpointURL is the HealthLake control plane; empty means target.url's
	// scheme and host, or the SDK's regional endpoint when that host is
	// AWS's (*.amazonaws.com).
	EndpointURL string `yaml:"endpoint_url"`
	// ObjectBytes is the size a staged object is cut at.
	ObjectBytes int64 `yaml:"object_bytes"`
	// PollInterval is the first wait between DescribeFHIRImportJob calls; it
	// doubles up to PollMax.
	PollInterval time.Duration `yaml:"poll_interval"`
	PollMax      time.Duration `yaml:"poll_max"`
	// JobNamePrefix starts the job's name.
	JobNamePrefix string `yaml:"job_name_prefix"`
	// StateDir holds the staging index and the job checkpoint; empty means
	// ImportStateDir's default.
	StateDir string `yaml:"state_dir"`
	// KeepStaged keeps the staged objects after the job's outcome is known.
	KeepStaged bool `yaml:"keep_staged"`
	// StateRetention is how long a batch stays in StateDir: a rerun of the
	// same lines within it resumes or reuses the batch's job, later it
	// imports them again.
	StateRetention time.Duration `yaml:"state_retention"`
}

// RetryConfig is the loader's exponential backoff.
type RetryConfig struct {
	Initial    time.Duration `yaml:"initial"`
	Max        time.Duration `yaml:"max"`
	MaxElapsed time.Duration `yaml:"max_elapsed"`
}

// AWSConfig configures the S3 and SQS clients.
type AWSConfig struct {
	Region      string `yaml:"region"`
	EndpointURL string `yaml:"endpoint_url"`
	S3PathStyle bool   `yaml:"s3_path_style"`
}

// DeadLetterConfig is where lines that cannot be loaded go.
type DeadLetterConfig struct {
	URL      string `yaml:"url"`
	SSE      string `yaml:"sse"`
	KMSKeyID string `yaml:"kms_key_id"`
}

// CheckpointConfig is where `watch` records finished objects; empty means
// next to the dead letters.
type CheckpointConfig struct {
	URL string `yaml:"url"`
}

// LogConfig configures zap.
type LogConfig struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// MetricsConfig configures the Prometheus listener.
type MetricsConfig struct {
	Addr string `yaml:"addr"`
}

// EmbeddedTarget is the target URL that means "start the local store in-process".
const EmbeddedTarget = "embedded"

// Defaults returns the built-in configuration.
func Defaults() Config {
	return Config{
		Source: SourceConfig{
			Format:               "fhir",
			MaxLineBytes:         8 << 20,
			MaxDecompressedBytes: 64 << 30,
			Objects:              2,
			VisibilityTimeout:    5 * time.Minute,
			WaitSeconds:          20,
		},
		Transform: TransformConfig{Profile: "seed", IDs: "keep", References: "index", Extensions: "lenient"},
		Target: TargetConfig{
			URL: EmbeddedTarget, Region: "us-east-1", Auth: "sigv4", Mode: "batch",
			BatchSize: 100, BatchBytes: 4 << 20, Concurrency: 16, WriteUnitsPerSecond: 0,
			ReadUnitsPerSecond: 0, ReadMethod: "batch", Data: ".fhirload",
			Import: ImportConfig{ObjectBytes: 128 << 20, PollInterval: 5 * time.Second, PollMax: time.Minute,
				JobNamePrefix: "fhirload", StateRetention: 7 * 24 * time.Hour},
		},
		Retry:      RetryConfig{Initial: 200 * time.Millisecond, Max: 30 * time.Second, MaxElapsed: 10 * time.Minute},
		AWS:        AWSConfig{Region: "us-east-1"},
		DeadLetter: DeadLetterConfig{URL: "file://.fhirload/deadletter", SSE: "AES256"},
		Log:        LogConfig{Level: "info", Format: "console"},
	}
}

// SourceSuffixes returns source.suffixes, or the defaults of source.format.
func (c *Config) SourceSuffixes() []string {
	if len(c.Source.Suffixes) > 0 {
		return c.Source.Suffixes
	}
	return DefaultSuffixes(c.Source.Format)
}

// DefaultSuffixes returns the file suffixes taken from folders and prefixes
// for a source format.
func DefaultSuffixes(format string) []string {
	switch format {
	case "csv":
		return []string{".csv", ".csv.gz"}
	case "bundle":
		return []string{".json", ".json.gz"}
	default: // NDJSON, and Bundle documents told apart by their content
		return ingest.DefaultSuffixes()
	}
}

var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// LoadConfig reads a pipeline.yaml over the defaults. ${ENV} references are
// expanded; unknown keys are errors naming the key and line.
func LoadConfig(path string) (Config, error) {
	cfg := Defaults()
	b, err := os.ReadFile(path)
	if err != nil {
		return cfg, fmt.Errorf("config: %w", err)
	}
	if err := ParseConfig(path, b, &cfg); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// ParseConfig decodes YAML bytes into cfg (which holds the defaults).
func ParseConfig(name string, b []byte, cfg *Config) error {
	b, missing := expandEnv(b)
	if len(missing) > 0 {
		return fmt.Errorf("%s: environment variable %s is not set", name, strings.Join(missing, ", "))
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, errEOF(err)) {
		return fmt.Errorf("%s: %s", name, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("%s: %s", name, withLines(b, err))
	}
	return nil
}

// withLines prefixes each "key: problem" line of a validation error with the
// line of the file that sets the key, when the file sets it.
func withLines(b []byte, err error) string {
	var root yaml.Node
	lines := map[string]int{}
	if yaml.Unmarshal(b, &root) == nil && len(root.Content) == 1 {
		var walk func(prefix string, n *yaml.Node)
		walk = func(prefix string, n *yaml.Node) {
			if n.Kind != yaml.MappingNode {
				return
			}
			for i := 0; i+1 < len(n.Content); i += 2 {
				key := prefix + n.Content[i].Value
				lines[key] = n.Content[i].Line
				walk(key+".", n.Content[i+1])
			}
		}
		walk("", root.Content[0])
	}
	msgs := strings.Split(err.Error(), "\n")
	for i, m := range msgs {
		key, _, ok := strings.Cut(m, ":")
		if line, found := lines[key]; ok && found {
			msgs[i] = fmt.Sprintf("line %d: %s", line, m)
		}
	}
	return strings.Join(msgs, "; ")
}

// expandEnv replaces ${VAR} outside comments, line by line (so that YAML
// errors keep the file's line numbers), and lists unset variables.
func expandEnv(b []byte) ([]byte, []string) {
	var missing []string
	lines := bytes.Split(b, []byte("\n"))
	for i, line := range lines {
		code, comment := line, []byte(nil)
		if j := commentStart(line); j >= 0 {
			code, comment = line[:j], line[j:]
		}
		code = envRef.ReplaceAllFunc(code, func(m []byte) []byte {
			k := string(envRef.FindSubmatch(m)[1])
			v, ok := os.LookupEnv(k)
			if !ok {
				missing = append(missing, k)
			}
			return []byte(v)
		})
		lines[i] = append(append([]byte(nil), code...), comment...)
	}
	return bytes.Join(lines, []byte("\n")), missing
}

// commentStart finds a YAML comment: '#' at the start or after a blank,
// outside quotes.
func commentStart(line []byte) int {
	var quote byte
	for i, c := range line {
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'':
			quote = c
		case c == '#' && (i == 0 || line[i-1] == ' ' || line[i-1] == '\t'):
			return i
		}
	}
	return -1
}

// errEOF lets an empty file decode to the defaults.
func errEOF(err error) error {
	if err != nil && err.Error() == "EOF" {
		return err
	}
	return errors.New("not eof")
}

// Validate checks values that YAML types cannot.
func (c *Config) Validate() error {
	oneOf := func(key, v string, allowed ...string) error {
		for _, a := range allowed {
			if v == a {
				return nil
			}
		}
		return fmt.Errorf("%s: %q is not one of %s", key, v, strings.Join(allowed, ", "))
	}
	checks := []error{
		oneOf("source.format", c.Source.Format, "fhir", "bundle", "csv", "flat"),
		oneOf("transform.references", c.Transform.References, "index", "off"),
		oneOf("transform.extensions", c.Transform.Extensions, "lenient", "strict"),
		oneOf("transform.profile", c.Transform.Profile, "seed", "base"),
		oneOf("transform.ids", c.Transform.IDs, "keep", "derive"),
		oneOf("target.auth", c.Target.Auth, "sigv4", "none"),
		oneOf("target.mode", c.Target.Mode, "batch", "single", "import"),
		oneOf("target.read_method", c.Target.ReadMethod, "batch", "search"),
		oneOf("log.format", c.Log.Format, "console", "json"),
		oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error"),
		oneOf("deadletter.sse", c.DeadLetter.SSE, "AES256", "aws:kms"),
	}
	if err := errors.Join(checks...); err != nil {
		return err
	}
	switch {
	case (c.Source.Format == "csv" || c.Source.Format == "flat") && c.Transform.Mapping == "":
		return fmt.Errorf("transform.mapping: required when source.format is %s", c.Source.Format)
	case c.Target.BatchSize < 1 || c.Target.BatchSize > 500:
		return fmt.Errorf("target.batch_size: %d is outside 1..500", c.Target.BatchSize)
	case c.Target.Concurrency < 1:
		return fmt.Errorf("target.concurrency: must be at least 1")
	case c.Target.WriteUnitsPerSecond < 0 || c.Target.ReadUnitsPerSecond < 0:
		return fmt.Errorf("target.write_units_per_second, target.read_units_per_second: must not be negative")
	case c.Source.MaxLineBytes < 1024:
		return fmt.Errorf("source.max_line_bytes: must be at least 1024")
	case c.Source.Objects < 1:
		return fmt.Errorf("source.objects: must be at least 1")
	case c.Retry.Initial <= 0 || c.Retry.Max < c.Retry.Initial || c.Retry.MaxElapsed <= 0:
		return fmt.Errorf("retry: need 0 < initial <= max and max_elapsed > 0")
	}
	if c.Target.URL != EmbeddedTarget {
		u, err := url.Parse(c.Target.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("target.url: %q is not %q or an http(s) URL", c.Target.URL, EmbeddedTarget)
		}
	}
	if c.Target.Mode == "import" {
		return c.validateImport()
	}
	return nil
}

var (
	roleARNPattern   = regexp.MustCompile(`^arn:aws(-[^:]+)?:iam::[0-9]{12}:role/.+$`)
	jobNamePattern   = regexp.MustCompile(`^[\p{L}\p{Z}\p{N}_.:/=+\-%@]{1,30}$`)
	datastorePattern = regexp.MustCompile(`/datastore/([^/]+)/r4/?$`)
)

// validateImport checks the keys of target.import (mode import).
func (c *Config) validateImport() error {
	im := c.Target.Import
	var errs []error
	for _, u := range []struct{ key, v string }{{"target.import.staging_url", im.StagingURL}, {"target.import.output_url", im.OutputURL}} {
		if _, _, err := ingest.ParseS3URI(u.v); err != nil {
			errs = append(errs, fmt.Errorf("%s: required in target.mode import: an s3://bucket/prefix (got %q)", u.key, u.v))
		}
	}
	if !roleARNPattern.MatchString(im.RoleARN) {
		errs = append(errs, fmt.Errorf("target.import.role_arn: required in target.mode import: the job's data access role, arn:aws:iam::ACCOUNT:role/NAME (got %q)", im.RoleARN))
	}
	if im.KMSKeyID == "" {
		errs = append(errs, fmt.Errorf("target.import.kms_key_id: required in target.mode import: HealthLake encrypts the job's output with it"))
	}
	if c.ImportDatastoreID() == "" {
		errs = append(errs, fmt.Errorf("target.import.datastore_id: target.url %q has no /datastore/{id}/r4/: name the data store", c.Target.URL))
	}
	if im.EndpointURL != "" {
		if u, err := url.Parse(im.EndpointURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("target.import.endpoint_url: %q is not an http(s) URL", im.EndpointURL))
		}
	}
	if im.ObjectBytes < 64<<10 || im.ObjectBytes > 5<<30 {
		errs = append(errs, fmt.Errorf("target.import.object_bytes: %d is outside 65536..5368709120 (S3's single PUT)", im.ObjectBytes))
	}
	if im.PollInterval <= 0 || im.PollMax < im.PollInterval {
		errs = append(errs, fmt.Errorf("target.import.poll_interval, target.import.poll_max: need 0 < poll_interval <= poll_max"))
	}
	if im.StateRetention < time.Hour {
		errs = append(errs, fmt.Errorf("target.import.state_retention: %v is under 1h", im.StateRetention))
	}
	if !jobNamePattern.MatchString(im.JobNamePrefix) {
		errs = append(errs, fmt.Errorf("target.import.job_name_prefix: %q: 1 to 30 letters, digits, spaces or _.:/=+-%%@", im.JobNamePrefix))
	}
	return errors.Join(errs...)
}

// ImportDatastoreID is the data store of target.mode import:
// target.import.datastore_id, else the {id} of target.url's
// /datastore/{id}/r4/ ("local" for the embedded target), else "".
func (c *Config) ImportDatastoreID() string {
	if c.Target.Import.DatastoreID != "" {
		return c.Target.Import.DatastoreID
	}
	if c.Target.URL == EmbeddedTarget {
		return "local"
	}
	if u, err := url.Parse(c.Target.URL); err == nil {
		if m := datastorePattern.FindStringSubmatch(u.Path); m != nil {
			return m[1]
		}
	}
	return ""
}

// ImportStateDir is the folder of target.mode import's checkpoints (the
// staging index and the job of each batch): target.import.state_dir, else
// "import" next to a local dead-letter folder, else .fhirload/import.
func (c *Config) ImportStateDir() string {
	if c.Target.Import.StateDir != "" {
		return c.Target.Import.StateDir
	}
	if dl, ok := strings.CutPrefix(c.DeadLetter.URL, "file://"); ok {
		return filepath.Join(filepath.Dir(filepath.Clean(dl)), "import")
	}
	return filepath.Join(".fhirload", "import")
}

// CheckpointURL is where checkpoints live: checkpoint.url, else next to the
// dead letters.
func (c *Config) CheckpointURL() string {
	if c.Checkpoint.URL != "" {
		return c.Checkpoint.URL
	}
	u := strings.TrimSuffix(c.DeadLetter.URL, "/")
	if i := strings.LastIndex(u, "/"); i > len("s3://") || (i > 0 && !strings.HasPrefix(u, "s3://")) {
		return u[:i] + "/checkpoints"
	}
	return u + "/checkpoints"
}

// Effective renders the configuration as YAML (there are no secrets in it:
// credentials only come from the AWS chain; query strings of URLs are masked).
func (c Config) Effective() string {
	cp := c
	cp.Source.QueueURL = maskURL(cp.Source.QueueURL)
	cp.Target.URL = maskURL(cp.Target.URL)
	cp.AWS.EndpointURL = maskURL(cp.AWS.EndpointURL)
	b, _ := yaml.Marshal(cp)
	return string(b)
}

func maskURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || (u.User == nil && u.RawQuery == "") {
		return s
	}
	if u.User != nil {
		u.User = url.User("****")
	}
	if u.RawQuery != "" {
		u.RawQuery = "****"
	}
	return u.String()
}
