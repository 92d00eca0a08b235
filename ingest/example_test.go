package ingest_test

import (
	"fmt"
	"io"
	"strings"

	"github.com/fhirload/fhirload/ingest"
)

func ExampleNewLineReader() {
	src := strings.NewReader("{\"id\":\"a\"}\r\n\n{\"id\":\"" + strings.Repeat("x", 40) + "\"}\n{\"id\":\"b\"}")
	lr, err := ingest.NewLineReader(src, ingest.LineOptions{MaxLineBytes: 32, KeepTooLong: 8})
	if err != nil {
		panic(err)
	}
	for {
		l, err := lr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			panic(err)
		}
		fmt.Printf("line %d at %d: %q too_long=%v length=%d\n", l.No, l.Offset, l.Bytes, l.TooLong, l.Length)
	}
	// Output:
	// line 1 at 0: "{\"id\":\"a\"}" too_long=false length=10
	// line 2 at 12: "" too_long=false length=0
	// line 3 at 13: "{\"id\":\"x" too_long=true length=49
	// line 4 at 63: "{\"id\":\"b\"}" too_long=false length=10
}
