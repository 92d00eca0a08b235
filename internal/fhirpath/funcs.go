package fhirpath

// fnID identifies a function.
type fnID uint8

const (
	fnEmpty fnID = iota + 1
	fnExists
	fnAll
	fnAllTrue
	fnAnyTrue
	fnAllFalse
	fnAnyFalse
	fnSubsetOf
	fnSupersetOf
	fnCount
	fnDistinct
	fnIsDistinct
	fnWhere
	fnSelect
	fnRepeat
	fnOfType
	fnAs
	fnIs
	fnFirst
	fnLast
	fnTail
	fnSkip
	fnTake
	fnSingle
	fnIntersect
	fnExclude
	fnUnion
	fnCombine
	fnIif
	fnNot
	fnHasValue
	fnGetValue
	fnMatches
	fnReplaceMatches
	fnContains
	fnStartsWith
	fnEndsWith
	fnLength
	fnSubstring
	fnUpper
	fnLower
	fnIndexOf
	fnReplace
	fnToChars
	fnTrace
	fnChildren
	fnDescendants
	fnExtension
	fnHasExtension
	fnConformsTo
	fnMemberOf
	fnResolve
	fnHTMLChecks
	fnToInteger
	fnToDecimal
	fnToString
	fnToBoolean
	fnToQuantity
	fnToDate
	fnToDateTime
	fnToTime
	fnConvertsToInteger
	fnConvertsToDecimal
	fnConvertsToString
	fnConvertsToBoolean
	fnConvertsToQuantity
	fnConvertsToDate
	fnConvertsToDateTime
	fnConvertsToTime
	fnNow
	fnToday
	fnTimeOfDay
	fnAggregate
	fnAbs
	fnCeiling
	fnFloor
	fnRound
	fnTruncate
	fnSqrt
	fnExp
	fnLn
	fnLog
	fnPower
)

// argKind says how a function's arguments are evaluated.
type argKind uint8

const (
	argValue  argKind = iota // evaluated once, with the focus of the invocation
	argLambda                // evaluated per input item ($this, $index)
	argType                  // a type name
	argInput                 // evaluated once with the input collection as focus (iif)
)

// funcDef describes a function.
type funcDef struct {
	id       fnID
	name     string
	min, max int
	args     argKind
	class    Class
}

// funcs is the function table, by name.
var funcs = buildFuncs()

func buildFuncs() map[string]*funcDef {
	funcs := map[string]*funcDef{}
	def := func(id fnID, name string, min, max int, args argKind) {
		funcs[name] = &funcDef{id: id, name: name, min: min, max: max, args: args}
	}
	def(fnEmpty, "empty", 0, 0, argValue)
	def(fnExists, "exists", 0, 1, argLambda)
	def(fnAll, "all", 1, 1, argLambda)
	def(fnAllTrue, "allTrue", 0, 0, argValue)
	def(fnAnyTrue, "anyTrue", 0, 0, argValue)
	def(fnAllFalse, "allFalse", 0, 0, argValue)
	def(fnAnyFalse, "anyFalse", 0, 0, argValue)
	def(fnSubsetOf, "subsetOf", 1, 1, argValue)
	def(fnSupersetOf, "supersetOf", 1, 1, argValue)
	def(fnCount, "count", 0, 0, argValue)
	def(fnDistinct, "distinct", 0, 0, argValue)
	def(fnIsDistinct, "isDistinct", 0, 0, argValue)
	def(fnWhere, "where", 1, 1, argLambda)
	def(fnSelect, "select", 1, 1, argLambda)
	def(fnRepeat, "repeat", 1, 1, argLambda)
	def(fnOfType, "ofType", 1, 1, argType)
	def(fnAs, "as", 1, 1, argType)
	def(fnIs, "is", 1, 1, argType)
	def(fnFirst, "first", 0, 0, argValue)
	def(fnLast, "last", 0, 0, argValue)
	def(fnTail, "tail", 0, 0, argValue)
	def(fnSkip, "skip", 1, 1, argValue)
	def(fnTake, "take", 1, 1, argValue)
	def(fnSingle, "single", 0, 0, argValue)
	def(fnIntersect, "intersect", 1, 1, argValue)
	def(fnExclude, "exclude", 1, 1, argValue)
	def(fnUnion, "union", 1, 1, argValue)
	def(fnCombine, "combine", 1, 1, argValue)
	def(fnIif, "iif", 2, 3, argInput)
	def(fnNot, "not", 0, 0, argValue)
	def(fnHasValue, "hasValue", 0, 0, argValue)
	def(fnGetValue, "getValue", 0, 0, argValue)
	def(fnMatches, "matches", 1, 1, argValue)
	def(fnReplaceMatches, "replaceMatches", 2, 2, argValue)
	def(fnContains, "contains", 1, 1, argValue)
	def(fnStartsWith, "startsWith", 1, 1, argValue)
	def(fnEndsWith, "endsWith", 1, 1, argValue)
	def(fnLength, "length", 0, 0, argValue)
	def(fnSubstring, "substring", 1, 2, argValue)
	def(fnUpper, "upper", 0, 0, argValue)
	def(fnLower, "lower", 0, 0, argValue)
	def(fnIndexOf, "indexOf", 1, 1, argValue)
	def(fnReplace, "replace", 2, 2, argValue)
	def(fnToChars, "toChars", 0, 0, argValue)
	def(fnTrace, "trace", 1, 2, argValue)
	def(fnChildren, "children", 0, 0, argValue)
	def(fnDescendants, "descendants", 0, 0, argValue)
	def(fnExtension, "extension", 1, 1, argValue)
	def(fnHasExtension, "hasExtension", 1, 1, argValue)
	def(fnConformsTo, "conformsTo", 1, 1, argValue)
	def(fnMemberOf, "memberOf", 1, 1, argValue)
	def(fnResolve, "resolve", 0, 0, argValue)
	def(fnHTMLChecks, "htmlChecks", 0, 0, argValue)
	def(fnToInteger, "toInteger", 0, 0, argValue)
	def(fnToDecimal, "toDecimal", 0, 0, argValue)
	def(fnToString, "toString", 0, 0, argValue)
	def(fnToBoolean, "toBoolean", 0, 0, argValue)
	def(fnToQuantity, "toQuantity", 0, 1, argValue)
	def(fnToDate, "toDate", 0, 0, argValue)
	def(fnToDateTime, "toDateTime", 0, 0, argValue)
	def(fnToTime, "toTime", 0, 0, argValue)
	def(fnConvertsToInteger, "convertsToInteger", 0, 0, argValue)
	def(fnConvertsToDecimal, "convertsToDecimal", 0, 0, argValue)
	def(fnConvertsToString, "convertsToString", 0, 0, argValue)
	def(fnConvertsToBoolean, "convertsToBoolean", 0, 0, argValue)
	def(fnConvertsToQuantity, "convertsToQuantity", 0, 1, argValue)
	def(fnConvertsToDate, "convertsToDate", 0, 0, argValue)
	def(fnConvertsToDateTime, "convertsToDateTime", 0, 0, argValue)
	def(fnConvertsToTime, "convertsToTime", 0, 0, argValue)
	def(fnNow, "now", 0, 0, argValue)
	def(fnToday, "today", 0, 0, argValue)
	def(fnTimeOfDay, "timeOfDay", 0, 0, argValue)
	def(fnAggregate, "aggregate", 1, 2, argLambda)
	def(fnAbs, "abs", 0, 0, argValue)
	def(fnCeiling, "ceiling", 0, 0, argValue)
	def(fnFloor, "floor", 0, 0, argValue)
	def(fnRound, "round", 0, 1, argValue)
	def(fnTruncate, "truncate", 0, 0, argValue)
	def(fnSqrt, "sqrt", 0, 0, argValue)
	def(fnExp, "exp", 0, 0, argValue)
	def(fnLn, "ln", 0, 0, argValue)
	def(fnLog, "log", 1, 1, argValue)
	def(fnPower, "power", 1, 1, argValue)
	funcs["memberOf"].class = NeedsTerminology
	funcs["htmlChecks"].class = NeedsNarrative
	funcs["resolve"].class = NeedsResolution
	return funcs
}
