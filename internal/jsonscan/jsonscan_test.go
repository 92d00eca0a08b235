package jsonscan

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestAppendMembers(t *testing.T) {
	cases := []struct {
		in   string
		keys string // keys=values joined by ;
		ok   bool
	}{
		{`{}`, "", true},
		{` { "a" : 1 , "b":[1, {"c":"}"}], "d\"":"x\\"} `, `a=1;b=[1, {"c":"}"}];d\"="x\\"`, true},
		{`{"a":{"b":{"c":[]}}}`, `a={"b":{"c":[]}}`, true},
		{`{"a":1,}`, "", false},
		{`{"a" 1}`, "", false},
		{`{"a":1} x`, "", false},
		{`{"a":"unterminated}`, "", false},
		{`[1]`, "", false},
		{`{"a":[1,2}`, "", false},
	}
	for _, c := range cases {
		ms, ok := AppendMembers(nil, []byte(c.in))
		if ok != c.ok {
			t.Errorf("%s: ok %v", c.in, ok)
			continue
		}
		if !ok {
			continue
		}
		var parts []string
		for _, m := range ms {
			parts = append(parts, string(m.Key)+"="+string(m.Value))
		}
		if got := strings.Join(parts, ";"); got != c.keys {
			t.Errorf("%s: %s, want %s", c.in, got, c.keys)
		}
	}
}

func TestAppendElementsAndField(t *testing.T) {
	es, ok := AppendElements(nil, []byte(` [ 1 , "a,b" , {"x":[2]} , null ] `))
	if !ok || len(es) != 4 || string(es[1]) != `"a,b"` || string(es[2]) != `{"x":[2]}` {
		t.Fatalf("%q %v", es, ok)
	}
	if _, ok := AppendElements(nil, []byte(`[1 2]`)); ok {
		t.Fatal("[1 2] accepted")
	}
	v, ok := Field([]byte(`{"resourceType":"Bundle","type":"batch-response"}`), "type")
	if s, sok := Str(v); !ok || !sok || s != "batch-response" {
		t.Fatalf("field type: %q %v", v, ok)
	}
	if s, ok := Str([]byte(`"caf\u00e9 \ud83d\ude00 \ud800"`)); !ok || s != "café 😀 \uFFFD" {
		t.Fatalf("Str: %q", s)
	}
}

func TestValueEndDepth(t *testing.T) {
	deep := strings.Repeat("[", MaxDepth+2) + strings.Repeat("]", MaxDepth+2)
	if _, ok := ValueEnd([]byte(deep), 0); ok {
		t.Fatal("nesting beyond MaxDepth accepted")
	}
}

// FuzzScan: on any input the scanner terminates without panicking, and on
// an object encoding/json accepts, it finds the same members.
func FuzzScan(f *testing.F) {
	f.Add([]byte(`{"a":1,"b":[true,null,{"c":"\u00e9"}]}`))
	f.Add([]byte(`{"a":"\"}"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ms, ok := AppendMembers(nil, b)
		var m map[string]json.RawMessage
		if !utf8.Valid(b) || json.Unmarshal(b, &m) != nil {
			return // (encoding/json turns invalid UTF-8 into U+FFFD; the scanner keeps bytes)
		}
		if !ok {
			t.Fatalf("valid object %q not scanned", b)
		}
		for _, x := range ms {
			k, kok := Unescape(nil, x.Key)
			if !kok {
				t.Fatalf("key %q", x.Key)
			}
			if _, found := m[string(k)]; !found {
				t.Fatalf("member %q is not in %q", k, b)
			}
		}
	})
}
