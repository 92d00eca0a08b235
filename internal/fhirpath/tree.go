package fhirpath

import "unsafe"

// NodeID is the index of a node in a Tree; -1 is no node.
type NodeID int32

// ValueKind is how a primitive element's value is written in the source.
type ValueKind uint8

// Value kinds of nodes.
const (
	NoValue     ValueKind = iota // a complex element, a resource, or a primitive with only id/extension
	JSONString                   // a JSON string without escapes; the span excludes the quotes
	JSONEscaped                  // a JSON string with backslash escapes; the span excludes the quotes
	JSONNumber                   // a JSON number
	JSONBool                     // true or false
)

// Node is one element or resource of a Tree. Producers fill the exported fields; the
// links are kept by Tree.Add.
type Node struct {
	Name     string    // element name as FHIRPath navigates it: "value" for valueQuantity; for a root resource ""
	Type     string    // FHIR type name: "Quantity", "string", "Observation", "BackboneElement"
	Path     string    // element definition path: "Observation.value[x]", "Quantity.code"; for a resource its type
	Resource bool      // a resource (the root, contained, Bundle.entry.resource, …)
	Choice   bool      // a choice element (value[x]); its Type is the one chosen
	Kind     ValueKind // how the primitive value is written; NoValue for none
	Start    int32     // value span in Tree.Src
	End      int32

	parent, first, last, next NodeID
}

// Tree is a FHIR resource as FHIRPath sees it: an arena of nodes with parent, first-child
// and next-sibling links, whose primitive values are spans of the source bytes. A Tree is
// reused line after line without allocating once its arena has grown (Reset). It is not
// safe for concurrent mutation; evaluating one Tree from several goroutines, each with
// its own Evaluator, is safe.
//
// Node 0 is the root resource. The source bytes must not change while the tree or values
// taken from it are in use.
type Tree struct {
	Src   []byte
	nodes []Node
}

// Reset empties the tree for a new source, keeping its memory.
func (t *Tree) Reset(src []byte) {
	t.Src = src
	t.nodes = t.nodes[:0]
}

// Len returns the number of nodes.
func (t *Tree) Len() int { return len(t.nodes) }

// Node returns node i. The pointer is valid until the next Add or Reset.
func (t *Tree) Node(i NodeID) *Node { return &t.nodes[i] }

// Add appends n as the last child of parent (-1: n is the root) and returns its id.
func (t *Tree) Add(parent NodeID, n Node) NodeID {
	id := NodeID(len(t.nodes))
	t.nodes = append(t.nodes, n)
	nn := &t.nodes[id]
	nn.parent, nn.first, nn.last, nn.next = parent, -1, -1, -1
	if parent >= 0 {
		p := &t.nodes[parent]
		if p.last >= 0 {
			t.nodes[p.last].next = id
		} else {
			p.first = id
		}
		p.last = id
	}
	return id
}

// SetValue sets a node's primitive value span.
func (t *Tree) SetValue(i NodeID, k ValueKind, start, end int) {
	n := &t.nodes[i]
	n.Kind, n.Start, n.End = k, int32(start), int32(end)
}

// Parent returns a node's parent, -1 for the root.
func (t *Tree) Parent(i NodeID) NodeID { return t.nodes[i].parent }

// FirstChild returns a node's first child, -1 if none.
func (t *Tree) FirstChild(i NodeID) NodeID { return t.nodes[i].first }

// NextSibling returns the node after i under the same parent, -1 if none.
func (t *Tree) NextSibling(i NodeID) NodeID { return t.nodes[i].next }

// Child returns the index-th child of parent named name (0-based), or -1.
func (t *Tree) Child(parent NodeID, name string, index int) NodeID {
	for c := t.nodes[parent].first; c >= 0; c = t.nodes[c].next {
		if t.nodes[c].Name == name {
			if index == 0 {
				return c
			}
			index--
		}
	}
	return -1
}

// Raw returns the source bytes of a node's value (a JSON string's content still escaped).
func (t *Tree) Raw(i NodeID) []byte {
	n := &t.nodes[i]
	return t.Src[n.Start:n.End]
}

// raw returns the value bytes as a string sharing the source's memory.
func (t *Tree) raw(n *Node) string {
	if n.End <= n.Start {
		return ""
	}
	return unsafe.String(&t.Src[n.Start], int(n.End-n.Start))
}

// resourceOf returns the nearest resource at or above i.
func (t *Tree) resourceOf(i NodeID) NodeID {
	for i >= 0 && !t.nodes[i].Resource {
		i = t.nodes[i].parent
	}
	return i
}

// rootResourceOf returns %rootResource for a node: the container of a contained resource,
// else the resource itself.
func (t *Tree) rootResourceOf(i NodeID) NodeID {
	r := t.resourceOf(i)
	if r > 0 && t.nodes[r].Name == "contained" {
		if c := t.resourceOf(t.nodes[r].parent); c >= 0 {
			return c
		}
	}
	return r
}
