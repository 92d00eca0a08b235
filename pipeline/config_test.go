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
