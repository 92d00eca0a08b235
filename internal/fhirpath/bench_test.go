package fhirpath_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/fhirload/fhirload/internal/fhirpath"
	"github.com/fhirload/fhirload/internal/fhirpath/internal/r4"
	"github.com/fhirload/fhirload/internal/testlines"
)

// syntheaLines returns the sample lines of one resource type.
func syntheaLines(t testing.TB, resourceType string) [][]byte {
	t.Helper()
	var out [][]byte
	testlines.Each(t, "testdata/synthea-all-types.ndjson.gz", func(line []byte) bool {
		if bytes.HasPrefix(line, []byte(`{"resourceType":"`+resourceType+`"`)) {
			out = append(out, bytes.Clone(line))
		}
		return true
	})
	if len(out) == 0 {
		t.Fatalf("no %s lines", resourceType)
	}
	return out
}

// vitalSign is a Synthea body-height Observation (the commonest shape of the data).
func vitalSign(t testing.TB) []byte {
	for _, l := range syntheaLines(t, "Observation") {
		if strings.Contains(string(l), `"valueQuantity"`) {
			return l
		}
	}
	t.Fatal("no valueQuantity Observation")
	return nil
}

var simpleInvariants = []struct{ key, expr string }{
	{"obs-6", "dataAbsentReason.empty() or value.empty()"},
	{"ele-1", "hasValue() or (children().count() > id.count())"},
	{"ref-1", "reference.startsWith('#').not() or (reference.substring(1).trace('url') in %rootResource.contained.id.trace('ids'))"},
	{"per-1", "start.hasValue().not() or end.hasValue().not() or (start <= end)"},
	{"ext-1", "extension.exists() != value.exists()"},
	{"dom-3", "contained.where((('#'+id in (%resource.descendants().reference | %resource.descendants().as(canonical) | %resource.descendants().as(uri) | %resource.descendants().as(url))) or descendants().where(reference = '#').exists() or descendants().where(as(canonical) = '#').exists() or descendants().where(as(canonical) = '#').exists()).not()).trace('unmatched', id).empty()"},
	{"obs-7", "value.empty() or component.code.where(coding.intersect(%resource.code.coding).exists()).empty()"},
}

// focusFor returns the node a simple invariant is evaluated on in the vital sign tree.
func focusFor(tr *fhirpath.Tree, key string) fhirpath.NodeID {
	want := map[string]string{"ele-1": "Quantity", "ref-1": "Reference", "per-1": "Period", "ext-1": "Extension"}[key]
	if want == "" {
		return 0
	}
	for i := 0; i < tr.Len(); i++ {
		if tr.Node(fhirpath.NodeID(i)).Type == want {
			return fhirpath.NodeID(i)
		}
	}
	return 0
}

// TestSimpleInvariantsDoNotAllocate: once the evaluator is warm, evaluating the simple
// invariants on a tree allocates nothing.
func TestSimpleInvariantsDoNotAllocate(t *testing.T) {
	var tr fhirpath.Tree
	line := vitalSign(t)
	if err := tr.Build(line, r4.New()); err != nil {
		t.Fatal(err)
	}
	var ev fhirpath.Evaluator
	for _, c := range simpleInvariants {
		x := fhirpath.MustCompile(c.expr)
		focus := focusFor(&tr, c.key)
		res, err := ev.Test(x, &tr, focus)
		if err != nil || res != fhirpath.True {
			t.Fatalf("%s: %v %v", c.key, res, err)
		}
		if n := testing.AllocsPerRun(100, func() { _, _ = ev.Test(x, &tr, focus) }); n != 0 {
			t.Errorf("%s: %.1f allocations per evaluation", c.key, n)
		}
	}
	// Rebuilding the tree for the next line reuses its memory.
	if n := testing.AllocsPerRun(100, func() { _ = tr.Build(line, r4.New()) }); n != 0 {
		t.Errorf("Build: %.1f allocations per line", n)
	}
	// And a whole check of the base invariants finds nothing without allocating.
	set := baseInvariants(t)
	dst := make([]fhirpath.Violation, 0, 16)
	if v := set.Check(&ev, &tr, dst); len(v) != 0 {
		t.Fatalf("violations on a valid line: %d", len(v))
	}
	if n := testing.AllocsPerRun(100, func() { _ = set.Check(&ev, &tr, dst) }); n != 0 {
		t.Errorf("Set.Check: %.1f allocations per line", n)
	}
}

func BenchmarkInvariant(b *testing.B) {
	var tr fhirpath.Tree
	if err := tr.Build(vitalSign(b), r4.New()); err != nil {
		b.Fatal(err)
	}
	for _, c := range simpleInvariants {
		x := fhirpath.MustCompile(c.expr)
		focus := focusFor(&tr, c.key)
		b.Run(c.key, func(b *testing.B) {
			var ev fhirpath.Evaluator
			b.ReportAllocs()
			for b.Loop() {
				if r, err := ev.Test(x, &tr, focus); err != nil || r != fhirpath.True {
					b.Fatal(r, err)
				}
			}
		})
	}
}

// BenchmarkBuild measures Tree.Build (JSON to typed tree) on a Synthea vital sign.
func BenchmarkBuild(b *testing.B) {
	line := vitalSign(b)
	ty := r4.New()
	var tr fhirpath.Tree
	b.ReportAllocs()
	b.SetBytes(int64(len(line)))
	for b.Loop() {
		if err := tr.Build(line, ty); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(tr.Len()), "nodes")
}

// BenchmarkObservationInvariants builds the tree of a Synthea Observation and checks every
// base invariant that applies to it: the cost per line the validator will pay.
func BenchmarkObservationInvariants(b *testing.B) {
	for _, c := range []struct {
		name string
		line []byte
	}{
		{"vital-sign", vitalSign(b)},
		{"blood-pressure", func() []byte {
			for _, l := range syntheaLines(b, "Observation") {
				if strings.Contains(string(l), `"component"`) {
					return l
				}
			}
			b.Fatal("no component Observation")
			return nil
		}()},
	} {
		b.Run(c.name, func(b *testing.B) {
			set := baseInvariants(b)
			ty := r4.New()
			var tr fhirpath.Tree
			var ev fhirpath.Evaluator
			dst := make([]fhirpath.Violation, 0, 16)
			b.ReportAllocs()
			for b.Loop() {
				if err := tr.Build(c.line, ty); err != nil {
					b.Fatal(err)
				}
				if v := set.Check(&ev, &tr, dst); len(v) != 0 {
					b.Fatal(len(v), v[0].Invariant.Key, v[0].Err)
				}
			}
			b.ReportMetric(float64(tr.Len()), "nodes")
			b.ReportMetric(float64(countApplied(set, &tr)), "invariants")
		})
	}
}

// countApplied counts the invariant evaluations a Check makes on tr.
func countApplied(set *fhirpath.Set, tr *fhirpath.Tree) int {
	n := 0
	for i := 0; i < tr.Len(); i++ {
		n += set.Applies(tr, fhirpath.NodeID(i))
	}
	return n
}

// BenchmarkObservationProducer is the validator's path: the tree is appended node by node
// (Tree.Add, as a walker that already parsed the JSON does) and the base invariants are
// checked.
func BenchmarkObservationProducer(b *testing.B) {
	for _, name := range []string{"vital-sign", "blood-pressure"} {
		b.Run(name, func(b *testing.B) {
			line := vitalSign(b)
			if name == "blood-pressure" {
				for _, l := range syntheaLines(b, "Observation") {
					if strings.Contains(string(l), `"component"`) {
						line = l
					}
				}
			}
			var src fhirpath.Tree
			if err := src.Build(line, r4.New()); err != nil {
				b.Fatal(err)
			}
			nodes := make([]fhirpath.Node, src.Len())
			parents := make([]fhirpath.NodeID, src.Len())
			for i := range nodes {
				nodes[i] = *src.Node(fhirpath.NodeID(i))
				parents[i] = src.Parent(fhirpath.NodeID(i))
			}
			set := baseInvariants(b)
			var tr fhirpath.Tree
			var ev fhirpath.Evaluator
			dst := make([]fhirpath.Violation, 0, 16)
			b.ReportAllocs()
			for b.Loop() {
				tr.Reset(line)
				for i := range nodes {
					tr.Add(parents[i], nodes[i])
				}
				if v := set.Check(&ev, &tr, dst); len(v) != 0 {
					b.Fatal(len(v))
				}
			}
			b.ReportMetric(float64(tr.Len()), "nodes")
		})
	}
}
