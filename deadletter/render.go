package deadletter

import (
	"bufio"
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// listView is an Entry without its line: `deadletter ls --json` must not
// print record contents, only `show` does.
type listView struct {
	Entry
	Line       *struct{} `json:"line,omitempty"`
	LineBase64 *struct{} `json:"line_base64,omitempty"`
}

// maxMessage bounds the MESSAGE column of WriteList.
const maxMessage = 100

// WriteList renders entries for `deadletter ls`. As text: the count per
// reason (most frequent first) and the total, then one row per entry with
// ID, REASON, SOURCE:LINE, RESOURCE, STATUS and MESSAGE, never the line
// itself. As JSON: one object per entry and line, every field except line
// and line_base64.
func WriteList(w io.Writer, entries []Entry, asJSON bool) error {
	bw := bufio.NewWriter(w)
	if asJSON {
		enc := newEncoder(bw)
		for _, e := range entries {
			if err := enc.Encode(listView{Entry: e}); err != nil {
				return fmt.Errorf("dead-letter render: %w", err)
			}
		}
		return bw.Flush()
	}
	counts := map[string]int{}
	for _, e := range entries {
		counts[string(e.Reason)]++
	}
	reasons := slices.SortedFunc(maps.Keys(counts), func(a, b string) int {
		return cmp.Or(cmp.Compare(counts[b], counts[a]), strings.Compare(a, b))
	})
	tw := tabwriter.NewWriter(bw, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REASON\tCOUNT")
	for _, r := range reasons {
		fmt.Fprintf(tw, "%s\t%d\n", r, counts[r])
	}
	fmt.Fprintf(tw, "total\t%d\n", len(entries))
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("dead-letter render: %w", err)
	}
	if len(entries) > 0 {
		fmt.Fprintln(bw)
		tw = tabwriter.NewWriter(bw, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tREASON\tSOURCE:LINE\tRESOURCE\tSTATUS\tMESSAGE")
		for _, e := range entries {
			fmt.Fprintf(tw, "%s\t%s\t%s:%d\t%s\t%s\t%s\n", e.ID, e.Reason, e.Source.URI, e.Source.Line,
				resource(e), status(e.HTTPStatus), oneLine(e.Message, maxMessage))
		}
		if err := tw.Flush(); err != nil {
			return fmt.Errorf("dead-letter render: %w", err)
		}
	}
	return bw.Flush()
}

func resource(e Entry) string {
	switch {
	case e.ResourceType == "" && e.ResourceID == "":
		return "-"
	case e.ResourceID == "":
		return e.ResourceType
	}
	return e.ResourceType + "/" + e.ResourceID
}

func status(code int) string {
	if code == 0 {
		return "-"
	}
	return strconv.Itoa(code)
}

// oneLine folds whitespace runs (newlines, tabs) to one space and cuts s to
// n runes, so a message cannot break the table.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if s == "" {
		return "-"
	}
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

// outcome is the part of a FHIR OperationOutcome that WriteEntry shows.
type outcome struct {
	ResourceType string `json:"resourceType"`
	Issue        []struct {
		Severity    string `json:"severity"`
		Code        string `json:"code"`
		Diagnostics string `json:"diagnostics"`
		Details     struct {
			Text   string `json:"text"`
			Coding []struct {
				System string `json:"system"`
				Code   string `json:"code"`
			} `json:"coding"`
		} `json:"details"`
		Expression []string `json:"expression"`
		Location   []string `json:"location"`
	} `json:"issue"`
}

// WriteEntry renders one entry for `deadletter show ID`: every field, the
// OperationOutcome as one block per issue, and then the verbatim line (the
// operator asked for this entry explicitly).
func WriteEntry(w io.Writer, e Entry) error {
	bw := bufio.NewWriter(w)
	tw := tabwriter.NewWriter(bw, 0, 4, 2, ' ', 0)
	row := func(k, v string) {
		if v != "" {
			// Tabs and newlines would break the alignment.
			fmt.Fprintf(tw, "%s\t%s\n", k, strings.Join(strings.Fields(v), " "))
		}
	}
	row("ID", e.ID)
	row("Run", e.RunID)
	row("Reason", string(e.Reason))
	row("Stage", string(e.Stage))
	row("Message", e.Message)
	src := fmt.Sprintf("%s line %d (byte offset %d)", e.Source.URI, e.Source.Line, e.Source.Offset)
	if e.Source.ETag != "" {
		src += " etag " + e.Source.ETag
	}
	row("Source", src)
	row("CSV header", e.Source.Header)
	row("Resource", resource(e))
	row("HTTP status", status(e.HTTPStatus))
	row("Attempts", strconv.Itoa(e.Attempts))
	row("First failed", timeString(e.FirstFailed))
	row("Last failed", timeString(e.LastFailed))
	t := e.Transform
	var tf []string
	for _, kv := range [][2]string{{"format", t.Format}, {"profile", t.Profile}, {"ids", t.IDs},
		{"mapping", t.Mapping}, {"mapping_hash", t.MappingHash}} {
		if kv[1] != "" {
			tf = append(tf, kv[0]+"="+kv[1])
		}
	}
	row("Transform", strings.Join(tf, " "))
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("dead-letter render: %w", err)
	}
	if len(e.OperationOutcome) > 0 {
		fmt.Fprintln(bw, "\nOperationOutcome:")
		writeOutcome(bw, e.OperationOutcome)
	}
	line := e.Bytes()
	note := ""
	if e.LineTruncated {
		note = ", truncated"
	}
	if e.LineBase64 != "" {
		fmt.Fprintf(bw, "\nLine (%d bytes%s, not valid UTF-8, base64):\n%s\n", len(line), note, e.LineBase64)
	} else {
		fmt.Fprintf(bw, "\nLine (%d bytes%s, verbatim):\n%s\n", len(line), note, e.Line)
	}
	return bw.Flush()
}

func writeOutcome(w io.Writer, raw json.RawMessage) {
	var oo outcome
	if err := json.Unmarshal(raw, &oo); err != nil || len(oo.Issue) == 0 {
		// Not an OperationOutcome (a proxy's error page, kept as a string).
		var s string
		if json.Unmarshal(raw, &s) == nil {
			fmt.Fprintf(w, "  (not an OperationOutcome) %s\n", s)
		} else {
			fmt.Fprintf(w, "  (not an OperationOutcome) %s\n", raw)
		}
		return
	}
	for i, is := range oo.Issue {
		fmt.Fprintf(w, "  %d. %s %s\n", i+1, cmp.Or(is.Severity, "?"), cmp.Or(is.Code, "?"))
		if is.Diagnostics != "" {
			fmt.Fprintf(w, "     diagnostics: %s\n", is.Diagnostics)
		}
		if is.Details.Text != "" {
			fmt.Fprintf(w, "     details:     %s\n", is.Details.Text)
		}
		for _, c := range is.Details.Coding {
			fmt.Fprintf(w, "     coding:      %s|%s\n", c.System, c.Code)
		}
		if len(is.Expression) > 0 {
			fmt.Fprintf(w, "     expression:  %s\n", strings.Join(is.Expression, ", "))
		}
		if len(is.Location) > 0 {
			fmt.Fprintf(w, "     location:    %s\n", strings.Join(is.Location, ", "))
		}
	}
}

func timeString(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}
