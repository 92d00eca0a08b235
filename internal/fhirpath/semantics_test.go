package fhirpath_test

import (
	"errors"
	"testing"
	"time"

	"github.com/fhirload/fhirload/internal/fhirpath"
)

const patientJSON = `{"resourceType":"Patient","id":"p1",
 "name":[{"use":"official","family":"Chalmers","given":["Peter","James"]},{"use":"usual","given":["Jim"]}],
 "telecom":[{"system":"phone","value":"555"}],
 "gender":"male","birthDate":"1974-12-25","_birthDate":{"extension":[{"url":"http://hl7.org/fhir/StructureDefinition/patient-birthTime","valueDateTime":"1974-12-25T14:35:45-05:00"}]},
 "active":true,"deceasedBoolean":false,"multipleBirthInteger":2,
 "contained":[{"resourceType":"Organization","id":"org1","name":"ACME"}],
 "managingOrganization":{"reference":"#org1"},
 "generalPractitioner":[{"reference":"Practitioner/pr1"},{"reference":"http://example.org/fhir/Organization/o2/_history/3"},{"reference":"urn:uuid:6b1d1a4e-0000-4000-8000-000000000001"}]}`

type evalCase struct {
	expr string
	want string // the result as show() writes it, or "error"
}

func runCases(t *testing.T, src string, env fhirpath.Env, cases []evalCase) {
	t.Helper()
	tr := build(t, src)
	ev := fhirpath.Evaluator{Env: env}
	for _, c := range cases {
		x, err := fhirpath.Compile(c.expr)
		if err != nil {
			if c.want != "error" {
				t.Errorf("%s: compile: %v", c.expr, err)
			}
			continue
		}
		got, err := ev.Eval(x, tr, 0)
		if err != nil {
			if c.want != "error" {
				t.Errorf("%s: %v", c.expr, err)
			}
			continue
		}
		if s := show(tr, got); s != c.want {
			t.Errorf("%s = %s, want %s", c.expr, s, c.want)
		}
	}
}

func TestNavigation(t *testing.T) {
	runCases(t, patientJSON, fhirpath.Env{}, []evalCase{
		{"name.given", `["Peter", "James", "Jim"]`},
		{"Patient.name.given", `["Peter", "James", "Jim"]`},
		{"Resource.id", `["p1"]`},
		{"DomainResource.id", `["p1"]`},
		{"Observation.id", `[]`},
		{"name[1].given", `["Jim"]`},
		{"name[2]", `[]`},
		{"name.given[1]", `["James"]`},
		{"name.where(use = 'usual').given", `["Jim"]`},
		{"name.select(given.first())", `["Peter", "Jim"]`},
		{"name.given.where($index = 1)", `["James"]`},
		{"name.where($this.family.exists()).use", `["official"]`},
		{"birthDate", `["1974-12-25"]`},
		{"birthDate.extension.value", `["1974-12-25T14:35:45-05:00"]`},
		{"birthDate.hasValue()", `[true]`},
		{"name.hasValue()", `[false]`},
		{"deceased", `[false]`},
		{"deceased is boolean", `[true]`},
		{"deceased is Boolean", `[true]`},
		{"deceased is System.Boolean", `[true]`},
		{"deceased is FHIR.boolean", `[true]`},
		{"deceased is FHIR.string", `[false]`},
		{"multipleBirth is integer", `[true]`},
		{"multipleBirth.ofType(integer)", `[2]`},
		{"gender.ofType(code)", `["male"]`},
		{"gender.ofType(string)", `["male"]`},
		{"gender is uri", `[false]`},
		{"contained.ofType(Organization).name", `["ACME"]`},
		{"contained.ofType(Resource).count()", `[1]`},
		{"contained is DomainResource", `[true]`},
		{"`name`.`family`", `["Chalmers"]`},
		{"name.family.length()", `[8]`},
		{"%resource.id", `["p1"]`},
		{"%context.id", `["p1"]`},
		{"%rootResource.contained.id", `["org1"]`},
		{"%ucum", `['http://unitsofmeasure.org']`},
		{"%`vs-administrative-gender`", `['http://hl7.org/fhir/ValueSet/administrative-gender']`},
		{"%unknown", `error`},
		{"children().count()", `[14]`},
		{"telecom.children().count()", `[2]`},
		{"telecom.descendants().count()", `[2]`},
		{"name.given.count()", `[3]`},
		{"extension('http://hl7.org/fhir/StructureDefinition/patient-birthTime')", `[]`},
		{"birthDate.extension('http://hl7.org/fhir/StructureDefinition/patient-birthTime').value", `["1974-12-25T14:35:45-05:00"]`},
		{"birthDate.hasExtension('http://hl7.org/fhir/StructureDefinition/patient-birthTime')", `[true]`},
		{"managingOrganization.resolve().name", `["ACME"]`},
		{"managingOrganization.resolve() is Organization", `[true]`},
		{"generalPractitioner.resolve().count()", `[2]`},
		{"generalPractitioner.where(resolve() is Practitioner).reference", `["Practitioner/pr1"]`},
		{"generalPractitioner.where(resolve() is Organization).reference", `["http://example.org/fhir/Organization/o2/_history/3"]`},
		{"generalPractitioner.resolve().ofType(Practitioner).exists()", `[true]`},
		{"generalPractitioner.resolve().name", `error`},
		{"name.repeat(given).count()", `[3]`},
		{"conformsTo('http://hl7.org/fhir/StructureDefinition/Patient')", `[true]`},
		{"conformsTo('http://hl7.org/fhir/StructureDefinition/DomainResource')", `[true]`},
		{"conformsTo('http://hl7.org/fhir/StructureDefinition/Observation')", `[false]`},
		{"conformsTo('http://example.org/StructureDefinition/my-profile')", `error`},
		{"gender.memberOf('http://hl7.org/fhir/ValueSet/administrative-gender')", `error`},
		{"name.given.trace('g').count()", `[3]`},
		{"name.family.single()", `["Chalmers"]`},
		{"name.given.single()", `error`},
		{"name.given + 'x'", `error`},
		{"name.given = name.given", `[true]`},
		{"name.given | name.given", `["Peter", "James", "Jim"]`},
		{"name.given.combine(name.given).count()", `[6]`},
		{"name.given.distinct().count()", `[3]`},
		{"name.given.isDistinct()", `[true]`},
		{"name.given.combine('Jim').isDistinct()", `[false]`},
		{"name[0].given.subsetOf(%resource.name.given)", `[true]`},
		{"name.given.supersetOf(name[1].given)", `[true]`},
		{"name.given.intersect('Jim' | 'Bob')", `["Jim"]`},
		{"name.given.exclude('Jim')", `["Peter", "James"]`},
		{"name.given.first()", `["Peter"]`},
		{"name.given.last()", `["Jim"]`},
		{"name.given.tail()", `["James", "Jim"]`},
		{"name.given.skip(2)", `["Jim"]`},
		{"name.given.take(2)", `["Peter", "James"]`},
		{"name.given.take(0)", `[]`},
		{"name.exists(use = 'usual')", `[true]`},
		{"name.all(given.exists())", `[true]`},
		{"name.all(family.exists())", `[false]`},
		{"telecom.all(false)", `[false]`},
		{"identifier.all(false)", `[true]`},
		{"name.given.aggregate($total + $this.length(), 0)", `[13]`},
		{"active.not()", `[false]`},
		{"name.given.select($this.upper()).first()", `['PETER']`},
	})
}

func TestResolveURN(t *testing.T) {
	env := fhirpath.Env{ResolveURN: func(ref []byte) (string, bool) {
		if string(ref) == "urn:uuid:6b1d1a4e-0000-4000-8000-000000000001" {
			return "PractitionerRole", true
		}
		return "", false
	}}
	runCases(t, patientJSON, env, []evalCase{
		{"generalPractitioner.resolve().count()", `[3]`},
		{"generalPractitioner.where(resolve() is PractitionerRole).count()", `[1]`},
	})
}

// TestOperators covers the operator semantics of N1 §6 with literals.
func TestOperators(t *testing.T) {
	runCases(t, patientJSON, fhirpath.Env{}, []evalCase{
		// Precedence.
		{"1 + 2 * 3", `[7]`},
		{"(1 + 2) * 3", `[9]`},
		{"-2 + 3", `[1]`},
		{"10 - 2 - 3", `[5]`},
		{"2 * 3 = 6 and 1 < 2", `[true]`},
		{"1 | 2 = 1 | 2", `[true]`},
		{"true or false and false", `[true]`},
		{"false implies false or true", `[true]`},
		{"5 is Integer", `[true]`},
		{"5 is Decimal", `[false]`},
		{"1 + 1 is Integer", `[true]`},
		{"(1 | 2) is Integer", `error`},
		// Arithmetic.
		{"7 div 2", `[3]`},
		{"7 mod 2", `[1]`},
		{"-7 div 2", `[-3]`},
		{"7.5 div 2", `[3]`},
		{"7.5 mod 2", `[1.5]`},
		{"7 / 2", `[3.5]`},
		{"1 / 3", `[0.33333333]`},
		{"5 / 0", `[]`},
		{"5 div 0", `[]`},
		{"5 mod 0", `[]`},
		{"1.5 + 1", `[2.5]`},
		{"0.1 + 0.2 = 0.3", `[true]`},
		{"1.10 * 2", `[2.2]`},
		{"9223372036854775807 + 1", `[]`},
		{"'a' + 'b'", `['ab']`},
		{"'a' & {}", `['a']`},
		{"{} & 'b'", `['b']`},
		{"'a' + {}", `[]`},
		{"{} + 1", `[]`},
		{"'a' + 1", `error`},
		{"-(5)", `[-5]`},
		{"-'a'", `error`},
		{"2 'mg' * 3", `[6 'mg']`},
		{"4 'mg' + 1 'mg'", `[5 'mg']`},
		// Equality.
		{"1 = 1", `[true]`},
		{"1 = 1.0", `[true]`},
		{"1.0 = 1.00", `[true]`},
		{"'a' = 'A'", `[false]`},
		{"'a' ~ 'A'", `[true]`},
		{"'a  b' ~ 'A b'", `[true]`},
		{"1.01 ~ 1.0", `[true]`},
		{"1.1 ~ 1.2", `[false]`},
		{"{} = {}", `[]`},
		{"{} = 1", `[]`},
		{"{} ~ {}", `[true]`},
		{"{} ~ 1", `[false]`},
		{"1 != 2", `[true]`},
		{"{} != 1", `[]`},
		{"(1 | 2) = (1 | 2)", `[true]`},
		{"(1 | 2) = (2 | 1)", `[false]`},
		{"(1 | 2) ~ (2 | 1)", `[true]`},
		{"(1 | 2) = 1", `[false]`},
		{"'1' = 1", `[false]`},
		{"true = true", `[true]`},
		{"name[0] = name[0]", `[true]`},
		{"name[0] = name[1]", `[false]`},
		{"name[0] !~ name[1]", `[true]`},
		// Dates and times.
		{"@2020 < @2020-01", `[]`},
		{"@2020 = @2020-01", `[]`},
		{"@2019 < @2020-01", `[true]`},
		{"@2020-01-01 = @2020-01-01", `[true]`},
		{"@2020-01-01 ~ @2020-01", `[false]`},
		{"@2020-01-01 < @2020-01-02", `[true]`},
		{"@2020-01-01T10:00:00Z = @2020-01-01T05:00:00-05:00", `[true]`},
		{"@2020-01-01T10:00:00.000Z = @2020-01-01T10:00:00Z", `[true]`},
		{"@2020-01-01T10:00:00.5Z > @2020-01-01T10:00:00Z", `[true]`},
		{"@2020-01-01T10:00 < @2020-01-01T10:00:01", `[]`},
		{"@2020-01-01T23:30:00-02:00 > @2020-01-02T00:00:00Z", `[true]`},
		{"@T10:00 < @T11:00", `[true]`},
		{"@T10:00 < @T10:00:30", `[]`},
		{"@2020-01-01 < @2020-01-01T10:00:00Z", `[]`},
		{"@2019-12-31 < @2020-01-01T10:00:00Z", `[true]`},
		{"birthDate < @1975", `[true]`},
		{"birthDate > @1974-12", `[]`},
		{"birthDate = @1974-12-25", `[true]`},
		{"@2020-01-31 + 1 month", `[@2020-03-02]`},
		{"@2020-01-01 + 1 day", `[@2020-01-02]`},
		{"@2020-01-01 - 1 'd'", `[@2019-12-31]`},
		{"@2020-01-01T10:00:00Z + 90 minutes", `[@2020-01-01T11:30:00Z]`},
		{"@2020-02-30", `error`},
		{"@2020-13", `error`},
		// Quantities.
		{"4 'mg' = 4 'mg'", `[true]`},
		{"4 'g' = 4000 'mg'", `[true]`},
		{"4 'g' > 3999 'mg'", `[true]`},
		{"1 'h' = 60 'min'", `[true]`},
		{"7 days = 1 week", `[true]`},
		{"1 day = 1 'd'", `[true]`},
		{"1 year = 1 'a'", `[]`},
		{"1 year ~ 1 'a'", `[true]`},
		{"1 year = 12 months", `[true]`},
		{"4 'mg' < 4 'cm'", `[]`},
		{"4 'mg' = 4 'cm'", `[]`},
		{"4 'mg' = 4", `[false]`},
		{"2 'kg' > 1500 'g'", `[true]`},
		// Three-valued logic.
		{"true and {}", `[]`},
		{"false and {}", `[false]`},
		{"{} and false", `[false]`},
		{"true or {}", `[true]`},
		{"false or {}", `[]`},
		{"{} or true", `[true]`},
		{"true xor true", `[false]`},
		{"true xor false", `[true]`},
		{"{} xor true", `[]`},
		{"false implies {}", `[true]`},
		{"true implies {}", `[]`},
		{"{} implies true", `[true]`},
		{"{} implies false", `[]`},
		{"{}.not()", `[]`},
		{"(1 | 2).not()", `error`},
		{"'x' and true", `[true]`},
		// Membership.
		{"1 in (1 | 2)", `[true]`},
		{"3 in (1 | 2)", `[false]`},
		{"{} in (1 | 2)", `[]`},
		{"1 in {}", `[false]`},
		{"(1 | 2) contains 2", `[true]`},
		{"(1 | 2) contains {}", `[]`},
		{"(1 | 2) in (1 | 2)", `error`},
		{"'male' in ('male' | 'female')", `[true]`},
		{"gender in ('male' | 'female')", `[true]`},
		// Comparisons.
		{"'abc' < 'abd'", `[true]`},
		{"1 < 1.5", `[true]`},
		{"1 < 'a'", `error`},
		{"{} < 1", `[]`},
		{"(1 | 2) < 3", `error`},
		// Indexer and literals.
		{"(1 | 2 | 3)[1]", `[2]`},
		{"{}[0]", `[]`},
		{"'it''s'", `error`},
		{"'it\\'s'", `['it's']`},
		{"'\\u0041\\t'.length()", `[2]`},
		{"@2020-01-01T", `[@2020-01-01T]`},
		{"true.not()", `[false]`},
		{"1.50", `[1.50]`},
	})
}

// TestFunctions covers the functions of N1 §5 and FHIR's additions.
func TestFunctions(t *testing.T) {
	now := time.Date(2024, 3, 5, 10, 20, 30, 0, time.UTC)
	runCases(t, patientJSON, fhirpath.Env{Now: func() time.Time { return now }}, []evalCase{
		{"{}.empty()", `[true]`},
		{"1.empty()", `[false]`},
		{"{}.exists()", `[false]`},
		{"(1 | 2 | 3).exists($this > 2)", `[true]`},
		{"(1 | 2 | 3).all($this > 0)", `[true]`},
		{"(true | false).allTrue()", `[false]`},
		{"(true | false).anyTrue()", `[true]`},
		{"{}.allTrue()", `[true]`},
		{"{}.anyTrue()", `[false]`},
		{"false.combine(false).allFalse()", `[true]`},
		{"(false | true).allFalse()", `[false]`},
		{"(true | false).anyFalse()", `[true]`},
		{"(1 | 2).allTrue()", `error`},
		{"(1 | 2 | 3).where($this > 1)", `[2, 3]`},
		{"(1 | 2 | 3).select($this * 2)", `[2, 4, 6]`},
		{"(1 | 2).select({})", `[]`},
		{"(1 | 2 | 3).count()", `[3]`},
		{"(1 | 1.0 | 2).distinct().count()", `[2]`},
		{"iif(true, 'a', 'b')", `['a']`},
		{"iif(false, 'a', 'b')", `['b']`},
		{"iif({}, 'a', 'b')", `['b']`},
		{"iif(false, 'a')", `[]`},
		{"name.iif(true, 1, 2)", `error`},
		{"'abc'.matches('b')", `[true]`},
		{"'abc'.matches('^b$')", `[false]`},
		{"'a\nb'.matches('a.b')", `[true]`},
		{"'abc'.replaceMatches('[ac]', 'x')", `['xbx']`},
		{"'abc'.matches('^' + 'ab')", `[true]`},
		{"'abc'.matches('(' + 'a')", `error`},
		{"'abc'.matches('(')", `error`},
		{"'abc'.contains('bc')", `[true]`},
		{"'abc'.startsWith('ab')", `[true]`},
		{"'abc'.endsWith('bc')", `[true]`},
		{"'abc'.indexOf('c')", `[2]`},
		{"'abc'.indexOf('x')", `[-1]`},
		{"'abc'.substring(1, 1)", `['b']`},
		{"'abc'.substring(5)", `[]`},
		{"'héllo'.substring(1, 2)", `['él']`},
		{"'héllo'.length()", `[5]`},
		{"'abc'.upper()", `['ABC']`},
		{"'ABC'.lower()", `['abc']`},
		{"'a.b.c'.replace('.', '/')", `['a/b/c']`},
		{"'abc'.toChars()", `['a', 'b', 'c']`},
		{"{}.length()", `[]`},
		{"('a' | 'b').length()", `error`},
		{"'12'.toInteger()", `[12]`},
		{"'1.5'.toInteger()", `[]`},
		{"'1.5'.toDecimal()", `[1.5]`},
		{"true.toInteger()", `[1]`},
		{"12.toString()", `['12']`},
		{"1.50.toString()", `['1.50']`},
		{"(5 'mg').toString()", `['5 'mg'']`},
		{"'yes'.toBoolean()", `[true]`},
		{"'maybe'.convertsToBoolean()", `[false]`},
		{"'2020-01-01'.toDate()", `[@2020-01-01]`},
		{"'2020-01-01'.convertsToDateTime()", `[true]`},
		{"'nope'.convertsToDate()", `[false]`},
		{"'10:00'.toTime()", `[@T10:00]`},
		{"'4 \\'mg\\''.toQuantity()", `[4 'mg']`},
		{"'4 days'.toQuantity() = 4 days", `[true]`},
		{"1.convertsToQuantity()", `[true]`},
		{"'x'.convertsToInteger()", `[false]`},
		{"birthDate.toString()", `['1974-12-25']`},
		{"birthDate.toString().length() >= 8", `[true]`},
		{"now()", `[@2024-03-05T10:20:30.000Z]`},
		{"today()", `[@2024-03-05]`},
		{"timeOfDay()", `[@T10:20:30.000]`},
		{"now() > @2024", `[]`},
		{"today() > @2024-01-01", `[true]`},
		{"(-5).abs()", `[5]`},
		{"1.5.ceiling()", `[2]`},
		{"(-1.5).floor()", `[-2]`},
		{"1.2345.round(2)", `[1.23]`},
		{"1.5.round()", `[2]`},
		{"1.9.truncate()", `[1]`},
		{"16.sqrt()", `[4]`},
		{"2.power(10)", `[1024]`},
		{"100.log(10)", `[2]`},
		{"(-1).sqrt()", `[]`},
		{"'a'.abs()", `error`},
		{"name.given.getValue()", `[]`},
		{"birthDate.getValue()", `[@1974-12-25]`},
		{"(1 | 2 | 3).aggregate($this + $total, 0)", `[6]`},
		{"(1 | 2 | 3).aggregate(iif($total.empty(), $this, iif($this > $total, $this, $total)))", `[3]`},
		{"nothing()", `error`},
		{"count(1)", `error`},
		{"ofType('x')", `error`},
	})
}

// TestErrorsAreSentinels checks that evaluation errors name what was needed.
func TestErrorsAreSentinels(t *testing.T) {
	tr := build(t, patientJSON)
	var ev fhirpath.Evaluator
	for _, c := range []struct {
		expr string
		want error
	}{
		{"gender.memberOf('http://hl7.org/fhir/ValueSet/administrative-gender')", fhirpath.ErrNeedsTerminology},
		{"generalPractitioner.resolve().name", fhirpath.ErrNeedsResolution},
		{"text.div.htmlChecks()", fhirpath.ErrNeedsNarrative},
		{"conformsTo('http://example.org/p')", fhirpath.ErrUnsupported},
	} {
		_, err := ev.Eval(fhirpath.MustCompile(c.expr), tr, 0)
		if c.expr == "text.div.htmlChecks()" {
			// No text: the hook is still required to say anything.
			tr2 := build(t, `{"resourceType":"Patient","text":{"status":"generated","div":"<div xmlns=\"http://www.w3.org/1999/xhtml\">x</div>"}}`)
			_, err = ev.Eval(fhirpath.MustCompile(c.expr), tr2, 0)
		}
		if !errors.Is(err, c.want) {
			t.Errorf("%s: error %v, want %v", c.expr, err, c.want)
		}
	}
}

// TestHoistedAndLargeCollections: subexpressions of a where() criterion that do not
// depend on the item are evaluated once per evaluation (hoist), and collections past 16
// items are de-duplicated through a hash set; the results are those of the plain
// evaluation: strings equal only to strings, numbers by value, order kept.
func TestHoistedAndLargeCollections(t *testing.T) {
	many := "(1 | 2 | 3 | 4 | 5 | 6 | 7 | 8 | 9 | 10 | 'a' | 'b' | 'c' | 'd' | 'e' | 'f' | 'g' | 'h')"
	runCases(t, patientJSON, fhirpath.Env{}, []evalCase{
		// Per item, the criterion combines the item with a hoisted %resource union.
		{"name.given.where($this in (%resource.name.given | %resource.name.family))", `["Peter", "James", "Jim"]`},
		{"name.where(given.first() in (%resource.name.given.first() | 'Jim')).use", `["official", "usual"]`},
		{"name.where(%resource.telecom.value.exists() and use = 'usual').given", `["Jim"]`},
		{"name.select(%resource.gender & use)", `['maleofficial', 'maleusual']`},
		{"name.where(given.count() = %resource.name.given.count() - 1).use", `["official"]`},
		{"contained.where(('#' + id) in %resource.descendants().reference).id", `["org1"]`},
		{"(" + many + " | " + many + ").count()", `[18]`},
		{"(" + many + " | 1.0 | 'a' | 'z').count()", `[19]`},
		{"(" + many + " | 'z' | 1.0).last()", `['z']`},
		{many + ".combine(" + many + ").distinct().count()", `[18]`},
		{many + ".isDistinct()", `[true]`},
		{many + ".combine(2.0).isDistinct()", `[false]`},
		{many + ".combine('h').isDistinct()", `[false]`},
		{"(" + many + ".combine(" + many + ") | name.given | name.given).count()", `[21]`},
	})
}

// TestValuelessPrimitive: a primitive that has only extensions (a data-absent-reason)
// has no value: string functions see an empty input, not an error (ref-1 on a
// Reference whose reference is absent but explained must hold); a complex element is
// still not a string.
func TestValuelessPrimitive(t *testing.T) {
	src := `{"resourceType":"Observation","status":"final","code":{"text":"c"},
	 "subject":{"_reference":{"extension":[{"url":"http://hl7.org/fhir/StructureDefinition/data-absent-reason","valueCode":"unknown"}]}}}`
	runCases(t, src, fhirpath.Env{}, []evalCase{
		{"subject.reference.startsWith('#')", `[]`},
		{"subject.reference.startsWith('#').not() or (subject.reference.substring(1) in %rootResource.contained.id)", `[]`},
		{"subject.reference.length()", `[]`},
		{"subject.reference.exists()", `[true]`},
		{"subject.reference.hasValue()", `[false]`},
		{"subject.startsWith('#')", "error"},
	})
}
