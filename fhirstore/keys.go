package fhirstore

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
)

// Key is an access key accepted by SigV4 verification, with the SMART-style
// scopes it grants (for example "system/Patient.read",
// "system/Observation.write", "system/*.*", "system/*.read"). SMART v2 scopes
// such as "system/Patient.rs" or "system/*.cruds" are understood too.
type Key struct {
	AccessKeyID     string   `json:"access_key_id"`
	SecretAccessKey string   `json:"secret_access_key"`
	Scopes          []string `json:"scopes"`
}

// LoadKeys reads a keys file. The format is JSON:
//
//	{"keys": [
//	  {"access_key_id": "AKIDLOADER", "secret_access_key": "…", "scopes": ["system/*.write"]},
//	  {"access_key_id": "AKIDREADER", "secret_access_key": "…", "scopes": ["system/Patient.read", "system/Observation.read"]}
//	]}
//
// Scopes are "system/{Type|*}.{read|write|*}" (SMART v1) or
// "system/{Type|*}.{c,r,u,d,s letters}" (SMART v2); unrecognised scopes are an
// error. The file holds secrets: keep it mode 0600.
func LoadKeys(path string) ([]Key, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read keys file: %w", err)
	}
	var f struct {
		Keys []Key `json:"keys"`
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("parse keys file %s: %w", path, err)
	}
	if len(f.Keys) == 0 {
		return nil, fmt.Errorf("keys file %s: no keys", path)
	}
	seen := map[string]bool{}
	for i, k := range f.Keys {
		if k.AccessKeyID == "" || k.SecretAccessKey == "" {
			return nil, fmt.Errorf("keys file %s: key %d: access_key_id and secret_access_key are required", path, i)
		}
		if seen[k.AccessKeyID] {
			return nil, fmt.Errorf("keys file %s: key %d: duplicate access_key_id", path, i)
		}
		seen[k.AccessKeyID] = true
		for _, s := range k.Scopes {
			if _, err := parseScope(s); err != nil {
				return nil, fmt.Errorf("keys file %s: key %d: %w", path, i, err)
			}
		}
	}
	return f.Keys, nil
}

// Interactions a scope can grant.
const (
	permCreate = 1 << iota
	permRead
	permUpdate
	permDelete
	permSearch
	permAll = permCreate | permRead | permUpdate | permDelete | permSearch
)

// scope is one parsed SMART scope.
type scope struct {
	typ   string // resource type or "*"
	perms int
}

var errBadScope = errors.New("bad scope")

func parseScope(s string) (scope, error) {
	rest, ok := strings.CutPrefix(s, "system/")
	if !ok {
		return scope{}, fmt.Errorf("%w %q: only system/ scopes are supported", errBadScope, s)
	}
	typ, act, ok := strings.Cut(rest, ".")
	if !ok || typ == "" || (typ != "*" && !knownType(typ)) {
		return scope{}, fmt.Errorf("%w %q", errBadScope, s)
	}
	switch act {
	case "*":
		return scope{typ, permAll}, nil
	case "read":
		return scope{typ, permRead | permSearch}, nil
	case "write":
		return scope{typ, permCreate | permUpdate | permDelete}, nil
	}
	var p int
	for _, c := range act {
		switch c {
		case 'c':
			p |= permCreate
		case 'r':
			p |= permRead
		case 'u':
			p |= permUpdate
		case 'd':
			p |= permDelete
		case 's':
			p |= permSearch
		default:
			return scope{}, fmt.Errorf("%w %q", errBadScope, s)
		}
	}
	if p == 0 {
		return scope{}, fmt.Errorf("%w %q", errBadScope, s)
	}
	return scope{typ, p}, nil
}

// grants holds the parsed scopes of one key.
type grants []scope

func newGrants(scopes []string) grants {
	g := make(grants, 0, len(scopes))
	for _, s := range scopes {
		if sc, err := parseScope(s); err == nil {
			g = append(g, sc)
		}
	}
	return g
}

// allows reports whether the grants cover interaction perm on typ.
func (g grants) allows(typ string, perm int) bool {
	for _, s := range g {
		if (s.typ == "*" || s.typ == typ) && s.perms&perm == perm {
			return true
		}
	}
	return false
}
