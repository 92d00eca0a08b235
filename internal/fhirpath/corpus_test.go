package fhirpath_test

import (
	"bytes"
	"os"
	"testing"

	"github.com/fhirload/fhirload/internal/fhirpath"
	"github.com/fhirload/fhirload/internal/fhirpath/internal/corpus"
)

// TestCorpusParses compiles every invariant and every search parameter expression of the
// R4 core package.
func TestCorpusParses(t *testing.T) {
	invs, err := corpus.Invariants(".")
	if err != nil {
		t.Fatal(err)
	}
	if len(invs) < 9000 {
		t.Fatalf("%d invariants: corpus truncated?", len(invs))
	}
	seen := map[string]bool{}
	for _, inv := range invs {
		if inv.Expression == "" || seen[inv.Expression] {
			continue
		}
		seen[inv.Expression] = true
		if _, err := fhirpath.Compile(inv.Expression); err != nil {
			t.Errorf("%s (%s): %v", inv.Key, inv.Context, err)
		}
	}
	sps, err := corpus.SearchParams(".")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, sp := range sps {
		if sp.Expression == "" {
			continue
		}
		n++
		if _, err := fhirpath.Compile(sp.Expression); err != nil {
			t.Errorf("search parameter %s: %v", sp.ID, err)
		}
	}
	t.Logf("%d distinct invariant expressions, %d search parameter expressions compile", len(seen), n)
}

// TestCorpusClassified classifies every error-severity invariant and requires at least
// 95% of them (distinct key and context) to be evaluable over one resource.
func TestCorpusClassified(t *testing.T) {
	invs, err := corpus.Invariants(".")
	if err != nil {
		t.Fatal(err)
	}
	type kc struct{ key, ctx string }
	classes := map[kc]fhirpath.Classification{}
	for _, inv := range invs {
		if inv.Severity != "error" {
			continue
		}
		c := fhirpath.Classify(inv.Expression)
		if inv.Expression == "" {
			c = fhirpath.Classification{Class: fhirpath.Invalid, Reason: "no expression"}
		}
		k := kc{inv.Key, inv.Context}
		if old, ok := classes[k]; !ok || c.Class > old.Class {
			classes[k] = c
		}
	}
	count := map[fhirpath.Class]int{}
	for k, c := range classes {
		count[c.Class]++
		if c.Class != fhirpath.Evaluable {
			t.Logf("%s at %s: %s %s", k.key, k.ctx, c.Class, c.Function)
		}
	}
	evaluable := count[fhirpath.Evaluable]
	share := float64(evaluable) / float64(len(classes))
	t.Logf("%d error invariants (distinct key+context): %v; evaluable %.2f%%", len(classes), count, 100*share)
	if count[fhirpath.Invalid] > 0 || count[fhirpath.Unsupported] > 0 {
		t.Errorf("invalid or unsupported invariants: %v", count)
	}
	if share < 0.95 {
		t.Errorf("evaluable share %.2f%% < 95%%", 100*share)
	}
}

// TestInvariantTableIsCurrent: INVARIANTS.md is what go generate writes today.
func TestInvariantTableIsCurrent(t *testing.T) {
	invs, err := corpus.Invariants(".")
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("INVARIANTS.md")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, corpus.Table(invs)) {
		t.Error("INVARIANTS.md is stale: run go generate ./internal/fhirpath")
	}
}
