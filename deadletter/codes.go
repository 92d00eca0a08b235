package deadletter

// Reason says why a line (or an object) was dead-lettered. The codes are part
// of the entry format (DESIGN.md "Dead-letter entry"); operators filter on them
// (`fhirload replay --reason`) and reports count by them.
type Reason string

// The reason codes.
const (
	ReasonParse            Reason = "parse"             // not JSON, not a record, or a line too long to hold
	ReasonInvalid          Reason = "invalid"           // JSON, but not a valid resource for the profile
	ReasonMapping          Reason = "mapping"           // a flat record the mapping cannot map
	ReasonDuplicate        Reason = "duplicate"         // the server refused a duplicate identifier (422)
	ReasonRejected         Reason = "rejected"          // the server refused the resource (4xx)
	ReasonRetriesExhausted Reason = "retries-exhausted" // retryable failures until the retry budget ran out
	ReasonMissingObject    Reason = "missing-object"    // a notification named an object that does not exist
	ReasonUnreadableObject Reason = "unreadable-object" // an object that cannot be opened or read to its end
	ReasonImportRejected   Reason = "import-rejected"   // a HealthLake import job rejected the line
	ReasonReceive          Reason = "receive"           // a queue message that is not (or not wholly) an S3 event
)

// Reasons lists every reason code, in the order reports print them.
func Reasons() []Reason {
	return []Reason{ReasonParse, ReasonInvalid, ReasonMapping, ReasonDuplicate, ReasonRejected,
		ReasonRetriesExhausted, ReasonMissingObject, ReasonUnreadableObject, ReasonImportRejected, ReasonReceive}
}

// KnownReason reports whether r is one of Reasons().
func KnownReason(r Reason) bool {
	for _, k := range Reasons() {
		if k == r {
			return true
		}
	}
	return false
}

// Stage says where in the flow a line failed.
type Stage string

// The stage codes.
const (
	StageReceive   Stage = "receive"   // taking a message off the queue
	StageRead      Stage = "read"      // opening or reading the object
	StageTransform Stage = "transform" // parse, validate, map
	StageLoad      Stage = "load"      // writing to the target
	StageImport    Stage = "import"    // a HealthLake import job
)
