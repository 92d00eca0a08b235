package fhirstore

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadKeys(t *testing.T) {
	for _, c := range []struct {
		name, file, err string
		n               int
	}{
		{"two keys", `{"keys":[{"access_key_id":"A","secret_access_key":"s","scopes":["system/*.*"]},
			{"access_key_id":"B","secret_access_key":"t","scopes":["system/Patient.read","system/Observation.write","system/Patient.rs"]}]}`, "", 2},
		{"no keys", `{"keys":[]}`, "no keys", 0},
		{"unknown field", `{"keys":[{"access_key_id":"A","secret":"s"}]}`, "unknown field", 0},
		{"missing secret", `{"keys":[{"access_key_id":"A"}]}`, "required", 0},
		{"duplicate id", `{"keys":[{"access_key_id":"A","secret_access_key":"s"},{"access_key_id":"A","secret_access_key":"t"}]}`, "duplicate", 0},
		{"bad scope", `{"keys":[{"access_key_id":"A","secret_access_key":"s","scopes":["patient/*.read"]}]}`, "bad scope", 0},
		{"bad scope type", `{"keys":[{"access_key_id":"A","secret_access_key":"s","scopes":["system/Bogus.read"]}]}`, "bad scope", 0},
		{"not JSON", `keys: []`, "parse keys file", 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "keys.json")
			if err := os.WriteFile(path, []byte(c.file), 0o600); err != nil {
				t.Fatal(err)
			}
			keys, err := LoadKeys(path)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err = %v, want %q", err, c.err)
				}
				if strings.Contains(err.Error(), `"s"`) {
					t.Errorf("error shows a secret: %v", err)
				}
				return
			}
			if err != nil || len(keys) != c.n {
				t.Fatalf("keys = %v, err = %v", keys, err)
			}
		})
	}
	if _, err := LoadKeys(filepath.Join(t.TempDir(), "absent.json")); err == nil {
		t.Error("absent file loaded")
	}
}

func TestScopes(t *testing.T) {
	for _, c := range []struct {
		scopes []string
		typ    string
		perm   int
		want   bool
	}{
		{[]string{"system/*.*"}, "Patient", permDelete, true},
		{[]string{"system/*.read"}, "Observation", permSearch, true},
		{[]string{"system/*.read"}, "Observation", permCreate, false},
		{[]string{"system/Patient.write"}, "Patient", permUpdate, true},
		{[]string{"system/Patient.write"}, "Observation", permUpdate, false},
		{[]string{"system/Observation.cu"}, "Observation", permDelete, false},
		{[]string{"system/Observation.cud"}, "Observation", permDelete, true},
		{[]string{"system/Patient.s", "system/Patient.r"}, "Patient", permRead, true},
		{nil, "Patient", permRead, false},
	} {
		if got := newGrants(c.scopes).allows(c.typ, c.perm); got != c.want {
			t.Errorf("%v allows %s %s = %v, want %v", c.scopes, c.typ, permName(c.perm), got, c.want)
		}
	}
}
