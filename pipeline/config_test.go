package pipeline

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestRootPipelineYAMLIsTheDefaults(t *testing.T) {
	cfg, err := LoadConfig(filepath.Join("..", "pipeline.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	want := Defaults()
	want.Source.Paths = []string{"testdata/sample"}
	want.Source.Suffixes = []string{}
	want.Transform.Profiles = []string{}
	if !reflect.DeepEqual(cfg, want) {
		t.Fatalf("pipeline.yaml differs from Defaults():\n got %+v\nwant %+v", cfg, want)
	}
}

func TestConfigErrors(t *testing.T) {
	t.Setenv("FHIRLOAD_TEST_URL", "https://example.org/r4/")
	cases := []struct {
		name, yaml, want string
	}{
		{"unknown key names key and line", "source:\n  format: fhir\n  colour: red\n", "line 3: field colour not found"},
		{"bad enum names key and line", "transform:\n  profile: strict\n", "line 2: transform.profile"},
		{"batch too large", "target:\n  url: embedded\n  batch_size: 501\n", "line 3: target.batch_size"},
		{"csv needs mapping", "source:\n  format: csv\n", "transform.mapping"},
		{"missing env", "target:\n  url: ${FHIRLOAD_NOPE}\n", "FHIRLOAD_NOPE"},
		{"bad duration", "retry:\n  initial: soon\n", "line 2"},
		{"bad url", "target:\n  url: ftp://x\n", "target.url"},
		{"bad read method", "target:\n  read_method: graphql\n", "line 2: target.read_method"},
		{"negative read units", "target:\n  read_units_per_second: -1\n", "target.read_units_per_second"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := Defaults()
			err := ParseConfig("p.yaml", []byte(c.yaml), &cfg)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want containing %q", err, c.want)
			}
		})
	}
	cfg := Defaults()
	if err := ParseConfig("p.yaml", []byte("target:\n  url: ${FHIRLOAD_TEST_URL}\nretry:\n  initial: 1s\n"), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Target.URL != "https://example.org/r4/" || cfg.Retry.Initial != time.Second {
		t.Fatalf("got %+v", cfg.Target)
	}
	cfg = Defaults()
	if err := ParseConfig("empty.yaml", nil, &cfg); err != nil {
		t.Fatalf("empty file: %v", err)
	}
}

func TestCheckpointURL(t *testing.T) {
	for in, want := range map[string]string{
		"file://.fhirload/deadletter": "file://.fhirload/checkpoints",
		"s3://b/fhirload/dead":        "s3://b/fhirload/checkpoints",
		"s3://b":                      "s3://b/checkpoints",
		"/var/lib/fhirload/dl":        "/var/lib/fhirload/checkpoints",
	} {
		c := Config{DeadLetter: DeadLetterConfig{URL: in}}
		if got := c.CheckpointURL(); got != want {
			t.Errorf("%s: got %s want %s", in, got, want)
		}
	}
	_ = os.Getenv
}

func TestEnvNotExpandedInComments(t *testing.T) {
	cfg := Defaults()
	if err := ParseConfig("p.yaml", []byte("# uses ${NOT_SET_ANYWHERE}\nlog: {level: debug} # ${ALSO_NOT}\n"), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Log.Level != "debug" {
		t.Fatal(cfg.Log.Level)
	}
}

// importYAML is a complete target.mode import section over target.
func importYAML(target, extra string) string {
	return "target:\n  url: " + target + "\n  mode: import\n  import:\n    staging_url: s3://stage/in\n    output_url: s3://out/\n" +
		"    role_arn: arn:aws:iam::123456789012:role/HealthLakeImport\n    kms_key_id: alias/aws/s3\n" + extra
}

func TestImportConfig(t *testing.T) {
	cases := []struct {
		name, yaml string
		want       string // error text; "" = valid
		datastore  string
	}{
		{"complete, datastore from the URL", importYAML("https://healthlake.us-east-1.amazonaws.com/datastore/0123abcd/r4/", ""), "", "0123abcd"},
		{"embedded is the local data store", importYAML("embedded", ""), "", "local"},
		{"datastore_id wins", importYAML("http://127.0.0.1:8080/fhir/", "    datastore_id: other\n"), "", "other"},
		{"no datastore anywhere", importYAML("http://127.0.0.1:8080/fhir/", ""), "target.import.datastore_id: target.url", ""},
		{"keys missing", "target:\n  mode: import\n", "target.import.staging_url", ""},
		{"role missing", "target:\n  mode: import\n", "target.import.role_arn", ""},
		{"kms missing", "target:\n  mode: import\n", "target.import.kms_key_id", ""},
		{"staging not s3", strings.Replace(importYAML("embedded", ""), "s3://stage/in", "/tmp/x", 1), "line 5: target.import.staging_url", ""},
		{"tiny objects", importYAML("embedded", "    object_bytes: 1000\n"), "target.import.object_bytes", ""},
		{"poll max below interval", importYAML("embedded", "    poll_interval: 10s\n    poll_max: 1s\n"), "target.import.poll_interval", ""},
		{"job name prefix", importYAML("embedded", "    job_name_prefix: \"a*b\"\n"), "target.import.job_name_prefix", ""},
		{"retention too short", importYAML("embedded", "    state_retention: 10m\n"), "target.import.state_retention", ""},
		{"import keys are ignored in batch mode", "target:\n  mode: batch\n  import: {staging_url: nope}\n", "", "local"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := Defaults()
			err := ParseConfig("p.yaml", []byte(c.yaml), &cfg)
			if c.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if got := cfg.ImportDatastoreID(); got != c.datastore {
					t.Errorf("datastore %q, want %q", got, c.datastore)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want containing %q", err, c.want)
			}
		})
	}
}

func TestImportStateDir(t *testing.T) {
	cases := []struct{ deadletters, stateDir, want string }{
		{"file://.fhirload/deadletter", "", filepath.Join(".fhirload", "import")},
		{"file:///var/lib/fhirload/dl/", "", "/var/lib/fhirload/import"},
		{"s3://bucket/dl", "", filepath.Join(".fhirload", "import")},
		{"s3://bucket/dl", "/data/import", "/data/import"},
	}
	for _, c := range cases {
		cfg := Defaults()
		cfg.DeadLetter.URL, cfg.Target.Import.StateDir = c.deadletters, c.stateDir
		if got := cfg.ImportStateDir(); got != c.want {
			t.Errorf("%s, %q: %q, want %q", c.deadletters, c.stateDir, got, c.want)
		}
	}
}
