package transform

import "unicode/utf8"

// The checkers below implement the regexes published in the R4 primitive
// StructureDefinitions (see primitiveRegexes in zz_generated.go; primitive_test.go checks
// them against the regexes) without backtracking, plus what a regex cannot say: real
// calendar dates (no February 30) and the 32-bit range of integers. Each returns "" when
// the value is valid, else a reason that never quotes the value.

const maxStringBytes = 1 << 20 // string.value maxLength

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// checkString: [ \r\n\t\S]+ — non-empty; the only character \s matches that the
// class leaves out is form feed.
func checkString(v []byte) string {
	if len(v) == 0 {
		return "empty string"
	}
	if len(v) > maxStringBytes {
		return "string longer than 1 MiB"
	}
	for _, c := range v {
		if c == '\f' {
			return "string contains a form feed"
		}
	}
	return ""
}

// checkCode: [^\s]+(\s[^\s]+)* — no leading, trailing or double whitespace.
func checkCode(v []byte) string {
	if len(v) == 0 {
		return "empty code"
	}
	prevSpace := true
	for i := 0; i < len(v); {
		r, n := rune(v[i]), 1
		if r >= utf8.RuneSelf {
			r, n = utf8.DecodeRune(v[i:])
		}
		space := isRegexSpace(r)
		if space && prevSpace {
			return "invalid code (leading or repeated whitespace)"
		}
		prevSpace = space
		i += n
	}
	if prevSpace {
		return "invalid code (trailing whitespace)"
	}
	return ""
}

// isRegexSpace is the \s class of the spec regexes (RE2/Perl: ASCII space, \t \n \f \r).
func isRegexSpace(r rune) bool {
	return r == ' ' || r == '\t' || r == '\n' || r == '\r' || r == '\f'
}

// checkURI: \S* (uri, url, canonical). An empty value is rejected like every empty primitive.
func checkURI(v []byte) string {
	if len(v) == 0 {
		return "empty uri"
	}
	for i := 0; i < len(v); {
		r, n := rune(v[i]), 1
		if r >= utf8.RuneSelf {
			r, n = utf8.DecodeRune(v[i:])
		}
		if isRegexSpace(r) {
			return "uri contains whitespace"
		}
		i += n
	}
	return ""
}

// checkID: [A-Za-z0-9\-\.]{1,64}.
func checkID(v []byte) string {
	if len(v) == 0 || len(v) > 64 {
		return "id must be 1 to 64 characters"
	}
	for _, c := range v {
		if !(isDigit(c) || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '-' || c == '.') {
			return "id may contain only A-Z a-z 0-9 - ."
		}
	}
	return ""
}

// checkOID: urn:oid:[0-2](\.(0|[1-9][0-9]*))+.
func checkOID(v []byte) string {
	const p = "urn:oid:"
	if len(v) < len(p)+3 || string(v[:len(p)]) != p || v[len(p)] < '0' || v[len(p)] > '2' {
		return "invalid oid"
	}
	rest := v[len(p)+1:]
	if len(rest) == 0 {
		return "invalid oid"
	}
	for len(rest) > 0 {
		if rest[0] != '.' || len(rest) < 2 || !isDigit(rest[1]) {
			return "invalid oid"
		}
		j := 2
		for j < len(rest) && isDigit(rest[j]) {
			j++
		}
		if rest[1] == '0' && j > 2 {
			return "invalid oid"
		}
		rest = rest[j:]
	}
	return ""
}

// checkUUID: urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}.
func checkUUID(v []byte) string {
	const p = "urn:uuid:"
	if len(v) != len(p)+36 || string(v[:len(p)]) != p || !isUUID(v[len(p):], false) {
		return "invalid uuid"
	}
	return ""
}

// isUUID reports whether u is the 36-character hex form; upper case hex only when upper.
func isUUID(u []byte, upper bool) bool {
	if len(u) != 36 {
		return false
	}
	for i, c := range u {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !(isDigit(c) || c >= 'a' && c <= 'f' || upper && c >= 'A' && c <= 'F') {
				return false
			}
		}
	}
	return true
}

// checkBase64: (\s*([0-9a-zA-Z\+/=]){4}\s*)+ — groups of four, whitespace between groups.
func checkBase64(v []byte) string {
	n := 0
	for _, c := range v {
		switch {
		case isDigit(c) || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '+' || c == '/' || c == '=':
			n++
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f':
			if n%4 != 0 {
				return "invalid base64Binary"
			}
		default:
			return "invalid base64Binary"
		}
	}
	if n == 0 || n%4 != 0 {
		return "invalid base64Binary"
	}
	return ""
}

// number checks JSON numbers as FHIR decimals: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?.
// The JSON grammar is the same, so the scanner already enforces it; integer kinds add
// their own patterns and the 32-bit range.
func checkInteger(v []byte, k kind) string {
	neg := len(v) > 0 && v[0] == '-'
	digits := v
	if neg {
		digits = v[1:]
	}
	if len(digits) == 0 {
		return "invalid integer"
	}
	for _, c := range digits {
		if !isDigit(c) {
			return "integer must not have a fraction or exponent"
		}
	}
	if len(digits) > 1 && digits[0] == '0' {
		return "invalid integer"
	}
	if len(digits) > 10 {
		return "integer out of 32-bit range"
	}
	var n int64
	for _, c := range digits {
		n = n*10 + int64(c-'0')
	}
	if neg {
		n = -n
	}
	if n > 2147483647 || n < -2147483648 {
		return "integer out of 32-bit range"
	}
	switch k {
	case kindPositiveInt:
		if n < 1 || neg {
			return "positiveInt must be at least 1"
		}
	case kindUnsignedInt:
		if n < 0 || neg {
			return "unsignedInt must not be negative"
		}
	}
	return ""
}

// checkDateTime validates date (level 0: date only), dateTime (1) and instant (2).
func checkDateTime(v []byte, level int) string {
	bad := [...]string{"invalid date", "invalid dateTime", "invalid instant"}[level]
	notDay := [...]string{"date is not a calendar day", "dateTime is not a calendar day", "instant is not a calendar day"}[level]
	if len(v) < 4 || !isDigit(v[0]) || !isDigit(v[1]) || !isDigit(v[2]) || !isDigit(v[3]) {
		return bad
	}
	year := int(v[0]-'0')*1000 + int(v[1]-'0')*100 + int(v[2]-'0')*10 + int(v[3]-'0')
	if year == 0 {
		return bad
	}
	rest := v[4:]
	if len(rest) == 0 {
		if level == 2 {
			return bad
		}
		return ""
	}
	month, ok := twoDigits(rest, '-')
	if !ok || month < 1 || month > 12 {
		return bad
	}
	rest = rest[3:]
	if len(rest) == 0 {
		if level == 2 {
			return bad
		}
		return ""
	}
	day, ok := twoDigits(rest, '-')
	if !ok || day < 1 || day > daysIn(year, month) {
		if ok && day >= 1 && day <= 31 {
			return notDay
		}
		return bad
	}
	rest = rest[3:]
	if len(rest) == 0 {
		if level == 2 {
			return bad
		}
		return ""
	}
	if level == 0 || rest[0] != 'T' {
		return bad
	}
	if msg := checkTimeOfDay(rest[1:], true); msg != "" {
		return bad
	}
	return ""
}

// checkTimeOfDay checks hh:mm:ss(.f+)? and, when zone, the mandatory Z or ±hh:mm suffix.
func checkTimeOfDay(v []byte, zone bool) string {
	if len(v) < 8 || !isDigit(v[0]) || !isDigit(v[1]) || v[2] != ':' || !isDigit(v[3]) || !isDigit(v[4]) ||
		v[5] != ':' || !isDigit(v[6]) || !isDigit(v[7]) {
		return "invalid time"
	}
	h := int(v[0]-'0')*10 + int(v[1]-'0')
	m := int(v[3]-'0')*10 + int(v[4]-'0')
	s := int(v[6]-'0')*10 + int(v[7]-'0')
	if h > 23 || m > 59 || s > 60 {
		return "invalid time"
	}
	rest := v[8:]
	if len(rest) > 0 && rest[0] == '.' {
		j := 1
		for j < len(rest) && isDigit(rest[j]) {
			j++
		}
		if j == 1 {
			return "invalid time"
		}
		rest = rest[j:]
	}
	if !zone {
		if len(rest) != 0 {
			return "invalid time"
		}
		return ""
	}
	if len(rest) == 1 && rest[0] == 'Z' {
		return ""
	}
	if len(rest) != 6 || (rest[0] != '+' && rest[0] != '-') || !isDigit(rest[1]) || !isDigit(rest[2]) ||
		rest[3] != ':' || !isDigit(rest[4]) || !isDigit(rest[5]) {
		return "invalid time zone"
	}
	zh := int(rest[1]-'0')*10 + int(rest[2]-'0')
	zm := int(rest[4]-'0')*10 + int(rest[5]-'0')
	if zm > 59 || zh > 14 || zh == 14 && zm != 0 {
		return "invalid time zone"
	}
	return ""
}

// twoDigits parses sep followed by two digits at the start of b.
func twoDigits(b []byte, sep byte) (int, bool) {
	if len(b) < 3 || b[0] != sep || !isDigit(b[1]) || !isDigit(b[2]) {
		return 0, false
	}
	return int(b[1]-'0')*10 + int(b[2]-'0'), true
}

func daysIn(year, month int) int {
	switch month {
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

// checkPrimitive checks the decoded content of a JSON string against a string-typed kind.
func checkPrimitive(k kind, v []byte) string {
	switch k {
	case kindString, kindMarkdown:
		return checkString(v)
	case kindCode:
		return checkCode(v)
	case kindID:
		return checkID(v)
	case kindURI, kindURL, kindCanonical:
		return checkURI(v)
	case kindOID:
		return checkOID(v)
	case kindUUID:
		return checkUUID(v)
	case kindDate:
		return checkDateTime(v, 0)
	case kindDateTime:
		return checkDateTime(v, 1)
	case kindInstant:
		return checkDateTime(v, 2)
	case kindTime:
		return checkTimeOfDay(v, false)
	case kindBase64Binary:
		return checkBase64(v)
	case kindXHTML:
		return "" // txt-1 and txt-2 (narrative.go)
	}
	return "unexpected string"
}
