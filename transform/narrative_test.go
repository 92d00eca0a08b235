package transform

import (
	"encoding/json"
	"regexp"
	"runtime"
	"strings"
	"testing"
)

// narrativeLine is an Observation whose text.div is div.
func narrativeLine(div string) string {
	q, _ := json.Marshal(div)
	return obsHead + `,"valueString":"Secret1","text":{"status":"generated","div":` + string(q) + `}}`
}

const xdiv = `<div xmlns="http://www.w3.org/1999/xhtml">`

// TestNarrative: txt-1 (only the specification's XHTML elements and attributes, no
// scripts, handlers, forms, external images or script URLs, well-formed, XML entities
// only) and txt-2 (some text or an image), each named at the div.
func TestNarrative(t *testing.T) {
	const loc = "Observation.text.div"
	deep := xdiv + strings.Repeat("<span>", 70) + "x" + strings.Repeat("</span>", 70) + "</div>"
	var cases []ruleCase
	for _, c := range []struct {
		name, div, rule string
	}{
		{"valid text", xdiv + "Secret2</div>", ""},
		{"valid formatting, table, list, link, image", xdiv + `<p class="c" style="color:red">A <b>b</b> <i>i</i><br/></p><table border="1"><tr><th scope="col">h</th><td colspan="2">d</td></tr></table><ul><li>x</li></ul><a href="https://example.org/x" title="t">link</a><img src="#b1" alt="a"/></div>`, ""},
		{"valid xml:lang, numeric and XML entities, comment", xdiv + `<p xml:lang="en" lang="en">a&#160;b &amp; &lt;c&gt; &quot;</p><!-- note --></div>`, ""},
		{"valid data: image", xdiv + `<img src="data:image/png;base64,iVBORw0KGgo="/></div>`, ""},
		{"valid image only (txt-2 counts it)", xdiv + `<img src="#b1"/></div>`, ""},
		{"valid prefixed xhtml namespace", `<h:div xmlns:h="http://www.w3.org/1999/xhtml"><h:p>x</h:p></h:div>`, ""},
		{"valid leading and trailing whitespace", "  " + xdiv + "x</div>\n", ""},

		{"script element", xdiv + `<script>alert(1)</script>x</div>`, "txt-1"},
		{"style element", xdiv + `<style>p{}</style>x</div>`, "txt-1"},
		{"form and input", xdiv + `<form action="https://example.org"><input name="n"/></form></div>`, "txt-1"},
		{"iframe", xdiv + `<iframe src="https://example.org"></iframe>x</div>`, "txt-1"},
		{"object", xdiv + `<object data="x.swf"></object>x</div>`, "txt-1"},
		{"event handler", xdiv + `<p onclick="alert(1)">x</p></div>`, "txt-1"},
		{"event handler, upper case", xdiv + `<p ONMOUSEOVER="alert(1)">x</p></div>`, "txt-1"},
		{"javascript: href", xdiv + `<a href="javascript:alert(1)">x</a></div>`, "txt-1"},
		{"javascript: href with spaces and case", xdiv + `<a href=" JavaScript:alert(1)">x</a></div>`, "txt-1"},
		{"data: href", xdiv + `<a href="data:text/html,x">x</a></div>`, "txt-1"},
		{"external image", xdiv + `<img src="https://example.org/pixel.gif"/>x</div>`, "txt-1"},
		{"relative image", xdiv + `<img src="Binary/1"/>x</div>`, "txt-1"},
		{"style that loads", xdiv + `<p style="background:url(https://example.org/x)">x</p></div>`, "txt-1"},
		{"attribute outside the list", xdiv + `<p data-x="1">x</p></div>`, "txt-1"},
		{"attribute in another namespace", xdiv + `<a xmlns:xl="http://www.w3.org/1999/xlink" xl:href="https://example.org">x</a></div>`, "txt-1"},
		{"HTML entity", xdiv + `a&nbsp;b</div>`, "txt-1"},
		{"DOCTYPE", `<!DOCTYPE html>` + xdiv + `x</div>`, "txt-1"},
		{"processing instruction", `<?xml version="1.0"?>` + xdiv + `x</div>`, "txt-1"},
		{"no namespace", `<div>x</div>`, "txt-1"},
		{"another namespace", `<div xmlns="http://example.org/ns">x</div>`, "txt-1"},
		{"not a div at the top", `<p xmlns="http://www.w3.org/1999/xhtml">x</p>`, "txt-1"},
		{"two elements at the top", xdiv + `x</div>` + xdiv + `y</div>`, "txt-1"},
		{"text after the div", xdiv + `x</div>tail`, "txt-1"},
		{"unclosed element", xdiv + `<p>x</div>`, "txt-1"},
		{"mismatched end", xdiv + `<b><i>x</b></i></div>`, "txt-1"},
		{"nested too deep", deep, "txt-1"},
		{"larger than the bound", xdiv + strings.Repeat("x", maxNarrativeBytes) + "</div>", "txt-1"},

		{"txt-2 empty", xdiv + `</div>`, "txt-2"},
		{"txt-2 whitespace and empty elements", xdiv + " <p> </p>\n<br/></div>", "txt-2"},
		{"txt-2 image without src", xdiv + `<img alt="a"/></div>`, "txt-2"},
	} {
		loc := loc
		if c.rule == "" {
			loc = ""
		}
		cases = append(cases, ruleCase{c.name, narrativeLine(c.div), c.rule, loc})
	}
	checkRules(t, Options{}, cases, "Secret1", "Secret2", "alert", "example.org", "pixel", "data-x", "nbsp", "tail")
}

// knownWhy matches the reasons narrativeRules gives: fixed words, known HTML names and
// line numbers, never text of the div.
var knownWhy = regexp.MustCompile(`^(a <[a-z]+> element|a [a-z]+ attribute|an (element|attribute) outside txt-1's list|not well-formed XML(, line [0-9]+ of the div)?|[a-zA-Z0-9 :(),<>/'#.-]+)$`)

var namedInWhy = regexp.MustCompile(`^a <?([a-z]+)>? (element|attribute)$`)

// FuzzNarrative: any div is judged without a panic, the same way twice, with a reason
// that shows nothing of the div beyond the vocabulary the rules name.
func FuzzNarrative(f *testing.F) {
	for _, s := range []string{xdiv + "x</div>", xdiv + "<script>x</script></div>", xdiv + `<a href="javascript:x">y</a></div>`,
		xdiv + "&nbsp;</div>", "<div>", "<?x?>", xdiv + "<p><b>x</p></b></div>", xdiv + `<img src="#a"/></div>`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, div []byte) {
		rule, why := narrativeRules(div)
		rule2, why2 := narrativeRules(div)
		if rule != rule2 || why != why2 {
			t.Fatalf("not deterministic: %q %q / %q %q", rule, why, rule2, why2)
		}
		switch rule {
		case "":
			if why != "" {
				t.Fatalf("valid with a reason %q", why)
			}
		case "txt-1", "txt-2":
			if !knownWhy.MatchString(why) || len(why) > 100 {
				t.Fatalf("reason %q", why)
			}
			if m := namedInWhy.FindStringSubmatch(why); m != nil && !namedHTML[m[1]] && m[1] != "div" {
				t.Fatalf("reason %q names %q", why, m[1])
			}
		default:
			t.Fatalf("rule %q", rule)
		}
	})
}

// TestNarrativeHostileMemory: hostile divs cost memory in proportion to their size
// (bounded nesting, no entity expansion), and are rejected.
func TestNarrativeHostileMemory(t *testing.T) {
	const n = 200_000
	for _, c := range []struct{ name, div string }{
		{"deep nesting", xdiv + strings.Repeat("<b>", n) + strings.Repeat("</b>", n) + "</div>"},
		{"many attributes", xdiv + "<p" + strings.Repeat(` title="t"`, n/10) + ` onclick="x">y</p></div>`},
		{"many undefined entities", xdiv + strings.Repeat("&e;", n) + "</div>"},
		{"many elements then a script", xdiv + strings.Repeat("<b>x</b>", n/4) + "<script/></div>"},
		{"long names", xdiv + "<" + strings.Repeat("a", n) + "/></div>"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			rule, _ := narrativeRules([]byte(c.div))
			runtime.ReadMemStats(&after)
			if rule != "txt-1" {
				t.Errorf("rule %q, want txt-1", rule)
			}
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 64*uint64(len(c.div))+1<<20 {
				t.Errorf("%d bytes allocated for a %d-byte div", alloc, len(c.div))
			}
		})
	}
}
