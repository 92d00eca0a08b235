package transform

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/fhirload/fhirload/internal/fhirpath"
	"github.com/fhirload/fhirload/registry"
)

// renderTree writes a tree as text, children sorted by name (stable, so repeated
// elements keep their order): the walker appends a "_name" companion's nodes where it
// meets them, Tree.Build after the object's other members.
func renderTree(t *fhirpath.Tree) string {
	var sb strings.Builder
	var walk func(id fhirpath.NodeID, depth int)
	walk = func(id fhirpath.NodeID, depth int) {
		n := t.Node(id)
		fmt.Fprintf(&sb, "%s%s %s %s r=%v c=%v k=%d %q\n", strings.Repeat(" ", depth), n.Name, n.Type, n.Path, n.Resource, n.Choice, n.Kind, t.Raw(id))
		var kids []fhirpath.NodeID
		for c := t.FirstChild(id); c >= 0; c = t.NextSibling(c) {
			kids = append(kids, c)
		}
		slices.SortStableFunc(kids, func(a, b fhirpath.NodeID) int { return strings.Compare(t.Node(a).Name, t.Node(b).Name) })
		for _, c := range kids {
			walk(c, depth+1)
		}
	}
	walk(0, 0)
	return sb.String()
}

// TestTreeMatchesTyper: the tree the validator appends while it walks a line is the one
// fhirpath's Tree.Build makes from the line with registry.Typer, on the shared data and
// on lines with "_name" companions, nulls and nested resources.
func TestTreeMatchesTyper(t *testing.T) {
	tr := mustNew(t, Options{Profile: ProfileBase})
	v := &validator{s: tr.schema}
	ty := registry.R4().Typer()
	var built fhirpath.Tree
	check := func(label string, line []byte) {
		t.Helper()
		v.reset(line)
		if !v.resource() {
			t.Fatalf("%s: %v", label, v.err)
		}
		if err := built.Build(line, ty); err != nil {
			t.Fatalf("%s: Build: %v", label, err)
		}
		if got, want := renderTree(&v.tree), renderTree(&built); got != want {
			t.Fatalf("%s: walker tree\n%s\nBuild tree\n%s", label, got, want)
		}
	}
	for _, c := range []string{
		obsHead + `,"_status":{"id":"s1"}}`,
		`{"_status":{"id":"s1"},"resourceType":"Observation","status":"final","code":{"text":"x"}}`,
		patHead + `,"_birthDate":{"extension":[{"url":"http://example.org/x","valueCode":"unknown"}]}}`,
		`{"resourceType":"Patient","name":[{"given":["A",null,"C"],"_given":[null,{"id":"g2"},{"id":"g3"}]}]}`,
		`{"resourceType":"Patient","name":[{"_given":[{"id":"g1"},{"id":"g2"}],"given":["A","B"]}]}`,
		`{"resourceType":"Patient","name":[{"_given":[null,{"id":"g2"}],"given":["A",null]}]}`,
		obsHead + `,"valueString":"a\"b","_valueString":{"id":"v"}}`,
		`{"resourceType":"Bundle","type":"collection","entry":[{"resource":` + obsHead + `,"contained":[{"resourceType":"Specimen","id":"s1"}],"specimen":{"reference":"#s1"}}}]}`,
		`{"resourceType":"Questionnaire","status":"draft","item":[{"linkId":"1","type":"group","item":[{"linkId":"1.1","type":"string"}]}]}`,
	} {
		check(c, []byte(c))
	}
	for name, c := range examples(t) {
		check(name, c)
	}
	for name, lines := range allLines(t) {
		for i, l := range lines {
			if n := map[bool]int{false: 5, true: 50}[testing.Short() || raceEnabled]; i%n != 0 {
				continue
			}
			check(fmt.Sprintf("%s:%d", name, i+1), l)
		}
	}
}

// TestLongCompanionArraysMergeInOrder: a primitive array and its "_" companion (in either
// order) are merged item by item, each item found after the previous one, so the work
// is linear in the array's length (looking each item up from the first would be
// quadratic: 1.25 billion steps for these 50,000 names).
func TestLongCompanionArraysMergeInOrder(t *testing.T) {
	const n = 50000
	var vals, exts strings.Builder
	for i := 0; i < n; i++ {
		if i > 0 {
			vals.WriteByte(',')
			exts.WriteByte(',')
		}
		fmt.Fprintf(&vals, `"g%d"`, i)
		if i%2 == 0 {
			exts.WriteString(`null`)
		} else {
			fmt.Fprintf(&exts, `{"id":"x%d"}`, i)
		}
	}
	tr := mustNew(t, Options{Profile: ProfileBase})
	v := tr.newValidator()
	for _, line := range []string{
		`{"resourceType":"Patient","name":[{"_given":[` + exts.String() + `],"given":[` + vals.String() + `]}]}`,
		`{"resourceType":"Patient","name":[{"given":[` + vals.String() + `],"_given":[` + exts.String() + `]}]}`,
	} {
		v.mergeSteps = 0
		if e := v.validate([]byte(line), false, false); e != nil {
			t.Fatal(e)
		}
		if v.mergeSteps > 2*n {
			t.Fatalf("%d steps to merge %d items", v.mergeSteps, n)
		}
		name := v.tree.Child(0, "name", 0)
		last := v.tree.Child(name, "given", n-1)
		if last < 0 || string(v.tree.Raw(last)) != fmt.Sprintf("g%d", n-1) || string(v.tree.Raw(v.tree.Child(last, "id", 0))) != fmt.Sprintf("x%d", n-1) {
			t.Fatalf("the last name and its id are not merged")
		}
		if v.tree.Child(name, "given", n) >= 0 {
			t.Fatal("more given nodes than items")
		}
	}
}
