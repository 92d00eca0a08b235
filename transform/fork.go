package transform

// Fork returns a Stream that continues this one's object from another
// goroutine: the same object name and, for CSV, the same header (parsed
// once per fork, not per line). records is how many records of the object
// come before the first line the fork sees, so that mapping errors keep
// naming the record's number in the object.
func (s *Stream) Fork(records int) *Stream {
	f := s.t.NewStream(s.object)
	if s.flat.header != nil {
		f.flat.setHeader(s.t.mapping, s.flat.header)
	}
	f.flat.records = records
	return f
}

// ReplayStream returns a Stream for lines dead-lettered from objectName,
// whose CSV header (ignored for other formats) was recorded with them.
func (t *Transformer) ReplayStream(objectName string, header []byte) (*Stream, error) {
	s := t.NewStream(objectName)
	if t.format == FormatCSV {
		if header == nil {
			return nil, &Error{Reason: ReasonMapping, Location: s.flat.object, Message: "no CSV header recorded for the line"}
		}
		s.flat.setHeader(t.mapping, header)
	}
	return s, nil
}
