package transform

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"strconv"
	"strings"

	"github.com/fhirload/fhirload/internal/fhirpath"
)

// The narrative (Narrative.div) rules, txt-1 and txt-2, checked with encoding/xml.
//
// txt-1: the div is well-formed XML: one <div> element in the XHTML namespace, holding
// only the elements and attributes the specification lists (its XPath form in the R4
// package: the basic formatting elements of HTML 4.0 chapters 7–11 and 15, <a>, <img>,
// tables, lists), plus xml:lang. So no script, style element, form, iframe, object,
// link, meta or base, no event handler attribute, no DOCTYPE or processing
// instruction, and no entity but the five of XML (FHIR narratives are XML: &nbsp; is
// written &#160;). Beyond the element and attribute lists: an href may not use the
// javascript:, vbscript: or data: schemes; an img src must be a local reference
// ("#id", a contained Binary) or a data:image/ URI, never an external address; a style
// attribute may not load anything (url(…), @import, expression(…), behavior).
//
// txt-2: the narrative has some non-whitespace text, or an image with a src.
//
// Bounds: a div over maxNarrativeBytes or nested deeper than maxNarrativeDepth is
// rejected (txt-1) before or while it is parsed, so hostile input costs time and memory
// in proportion to its size only.
const (
	maxNarrativeBytes = 4 << 20
	maxNarrativeDepth = 64
	xhtmlNS           = "http://www.w3.org/1999/xhtml"
	xmlNS             = "http://www.w3.org/XML/1998/namespace"
)

// narrativeElements and narrativeAttrs are txt-1's lists (hl7.fhir.r4.core 4.0.1,
// StructureDefinition-Narrative, constraint txt-1, xpath).
var narrativeElements = setOf("a", "abbr", "acronym", "b", "big", "blockquote", "br", "caption", "cite", "code",
	"col", "colgroup", "dd", "dfn", "div", "dl", "dt", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img",
	"li", "ol", "p", "pre", "q", "samp", "small", "span", "strong", "sub", "sup", "table", "tbody", "td", "tfoot",
	"th", "thead", "tr", "tt", "ul", "var")

var narrativeAttrs = setOf("abbr", "accesskey", "align", "alt", "axis", "bgcolor", "border", "cellhalign",
	"cellpadding", "cellspacing", "cellvalign", "char", "charoff", "charset", "cite", "class", "colspan", "compact",
	"coords", "dir", "frame", "headers", "height", "href", "hreflang", "hspace", "id", "lang", "longdesc", "name",
	"nowrap", "rel", "rev", "rowspan", "rules", "scope", "shape", "span", "src", "start", "style", "summary",
	"tabindex", "title", "type", "valign", "value", "vspace", "width")

// namedHTML are names of HTML elements and attributes txt-1 forbids that an error
// message may show (they are vocabulary, not data); any other name is not echoed.
var namedHTML = setOf("script", "style", "form", "input", "button", "select", "textarea", "iframe", "frame",
	"frameset", "object", "embed", "applet", "link", "meta", "base", "head", "body", "html", "title", "svg",
	"math", "video", "audio", "source", "canvas", "template", "noscript", "marquee", "font", "center", "u", "s",
	"strike", "label", "fieldset", "legend", "option", "param", "map", "area", "ins", "del", "bdo", "kbd", "address",
	"xmlns", "srcdoc", "action", "formaction", "background", "dynsrc", "lowsrc", "poster", "data", "code",
	"codebase", "classid", "archive", "target", "download", "ping")

func setOf(names ...string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}

// narrative checks the value of a Narrative.div (decoded from JSON) just appended to
// the tree; a violation names txt-1 or txt-2 at the div.
func (v *validator) narrative(div []byte) bool {
	if v.off&checkNarrative != 0 {
		return true
	}
	rule, why := narrativeRules(div)
	if rule == "" {
		return true
	}
	return v.ruleFail(rule, fhirpath.NodeID(v.tree.Len()-1), rule+": "+v.s.inv.human[rule]+" ("+why+")")
}

// narrativeRules returns the rule a div breaks ("txt-1" or "txt-2") and why, in words
// that show no content of the div; "" when it is valid.
func narrativeRules(div []byte) (rule, why string) {
	if len(div) > maxNarrativeBytes {
		return "txt-1", "larger than " + strconv.Itoa(maxNarrativeBytes>>20) + " MiB"
	}
	d := xml.NewDecoder(bytes.NewReader(div))
	d.Strict = true // and no Entity map: only XML's own entities
	depth, roots := 0, 0
	content := false
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			var se *xml.SyntaxError
			if errors.As(err, &se) {
				return "txt-1", "not well-formed XML, line " + strconv.Itoa(se.Line) + " of the div"
			}
			return "txt-1", "not well-formed XML"
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if depth == 0 {
				roots++
				if roots > 1 || t.Name.Local != "div" {
					return "txt-1", "the narrative must be a single <div> element"
				}
			}
			depth++
			if depth > maxNarrativeDepth {
				return "txt-1", "elements nested deeper than " + strconv.Itoa(maxNarrativeDepth)
			}
			if t.Name.Space != xhtmlNS {
				return "txt-1", "an element outside the XHTML namespace"
			}
			if !narrativeElements[t.Name.Local] {
				return "txt-1", htmlName(t.Name.Local, "element")
			}
			for _, a := range t.Attr {
				if why := checkNarrativeAttr(a); why != "" {
					return "txt-1", why
				}
				if t.Name.Local == "img" && a.Name.Space == "" && a.Name.Local == "src" {
					content = true
				}
			}
		case xml.EndElement:
			depth--
		case xml.CharData:
			if depth == 0 {
				if len(bytes.TrimSpace(t)) > 0 {
					return "txt-1", "text outside the <div> element"
				}
				continue
			}
			if !content && len(bytes.TrimSpace(t)) > 0 {
				content = true
			}
		case xml.ProcInst:
			return "txt-1", "a processing instruction"
		case xml.Directive:
			return "txt-1", "a DOCTYPE or other directive"
		case xml.Comment:
		}
	}
	if roots == 0 {
		return "txt-1", "the narrative must be a single <div> element"
	}
	if !content {
		return "txt-2", "no text"
	}
	return "", ""
}

// checkNarrativeAttr checks one attribute of an allowed element.
func checkNarrativeAttr(a xml.Attr) string {
	switch {
	case a.Name.Space == "xmlns" || a.Name.Space == "" && a.Name.Local == "xmlns":
		return "" // a namespace declaration, not an attribute
	case a.Name.Space == xmlNS && a.Name.Local == "lang":
		return ""
	case a.Name.Space != "":
		return "an attribute outside the XHTML vocabulary"
	case len(a.Name.Local) > 2 && strings.EqualFold(a.Name.Local[:2], "on"):
		return "an event handler attribute"
	case !narrativeAttrs[a.Name.Local]:
		return htmlName(a.Name.Local, "attribute")
	}
	switch a.Name.Local {
	case "href":
		switch scheme(a.Value) {
		case "javascript", "vbscript", "data":
			return "an href with a script or data: URL"
		}
	case "src":
		if v := strings.TrimSpace(a.Value); !strings.HasPrefix(v, "#") && !hasPrefixFold(v, "data:image/") {
			return "an image source that is not a local reference (#id) or a data:image/ URI"
		}
	case "style":
		low := strings.ToLower(a.Value)
		for _, bad := range []string{"url(", "@import", "expression(", "behavior", "javascript:"} {
			if strings.Contains(low, bad) {
				return "a style attribute that loads or runs something"
			}
		}
	}
	return ""
}

// htmlName names a forbidden element or attribute in a message when it is a known
// HTML name ("<script> element"); any other name could be data and is not shown.
func htmlName(name, what string) string {
	if low := strings.ToLower(name); namedHTML[low] {
		if what == "element" {
			return "a <" + low + "> element"
		}
		return "a " + low + " attribute"
	}
	return "an " + what + " outside txt-1's list"
}

// scheme returns the lower-case URL scheme of v, ignoring the leading spaces and
// control characters browsers ignore, and the tabs and newlines they drop inside it.
func scheme(v string) string {
	var sb strings.Builder
	for i := 0; i < len(v) && sb.Len() < 16; i++ {
		c := v[i]
		switch {
		case c <= ' ' && sb.Len() == 0, c == '\t' || c == '\n' || c == '\r':
		case c >= 'A' && c <= 'Z':
			sb.WriteByte(c + 'a' - 'A')
		case c >= 'a' && c <= 'z' || sb.Len() > 0 && (c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.'):
			sb.WriteByte(c)
		case c == ':':
			return sb.String()
		default:
			return ""
		}
	}
	return ""
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}
