package fhirstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"
)

func TestCompactValidMatchesCompact(t *testing.T) {
	cases := []string{
		`{}`,
		`{"a":1}`,
		`{ "a" : [ 1 , 2.50 , -3e2 ] ,"b":{ } }`,
		"{\n\t\"s\": \"keep  inner \\\" spaces\\\\ \",\r\n \"t\":true , \"n\" : null }",
		`{"u":"\u00e9 \u2028 <&>","e":"a\\"}`,
		`  {"lead":"and trailing"}  `,
		`[ ]`,
		`"just a string with  spaces"`,
	}
	for _, line := range readNDJSON(t, "Patient.ndjson.gz")[:5] {
		var pretty bytes.Buffer
		if err := json.Indent(&pretty, line, "", "  "); err != nil {
			t.Fatal(err)
		}
		cases = append(cases, string(line), pretty.String())
	}
	for _, c := range cases {
		var want bytes.Buffer
		if err := json.Compact(&want, []byte(c)); err != nil {
			t.Fatalf("test case is not valid JSON: %.60s", c)
		}
		if got := compactValid([]byte(c)); !bytes.Equal(got, want.Bytes()) {
			t.Errorf("compactValid(%.60q) = %.80s, want %.80s", c, got, want.Bytes())
		}
	}
	in := []byte(`{"a":1}`)
	if got := compactValid(in); &got[0] != &in[0] {
		t.Error("compactValid copied an already compact value")
	}
}

// TestGroupCommitIsolatesFailures runs several writes as one group: each is
// all-or-nothing on its own, and a failing one does not undo the others.
func TestGroupCommitIsolatesFailures(t *testing.T) {
	ctx := context.Background()
	st, err := openStore(ctx, t.TempDir(), storeConfig{unique: map[string]bool{"Patient": true}})
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	put := func(id string) func(*wtx) error {
		return func(t *wtx) error {
			p, e := parseResource([]byte(`{"resourceType":"Patient","id":"`+id+`","identifier":[{"system":"urn:s","value":"`+id+`"}]}`), false)
			if e != nil {
				return e
			}
			_, _, err := t.put(p, id, putOptions{dupCheck: true}, time.Now(), nil)
			return err
		}
	}
	errBoom := errors.New("boom")
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	group := []*writeReq{
		{ctx: ctx, fn: put("a")},
		{ctx: ctx, fn: func(t *wtx) error { // writes, then fails: rolled back alone
			if err := put("b")(t); err != nil {
				return err
			}
			return errBoom
		}},
		{ctx: cancelled, fn: put("c")},
		{ctx: ctx, fn: func(t *wtx) error { // a duplicate of a's identifier: 422
			p, _ := parseResource([]byte(`{"resourceType":"Patient","id":"d","identifier":[{"system":"urn:s","value":"a"}]}`), false)
			_, _, err := t.put(p, "d", putOptions{dupCheck: true}, time.Now(), nil)
			return err
		}},
		{ctx: ctx, fn: put("e")},
	}
	st.wmu.Lock()
	st.runGroup(group)
	st.wmu.Unlock()
	for i, want := range []error{nil, errBoom, context.Canceled, nil, nil} {
		r := group[i]
		if !r.done {
			t.Errorf("request %d not done", i)
		}
		if want == nil && i != 3 && r.err != nil {
			t.Errorf("request %d: %v", i, r.err)
		}
		if want != nil && !errors.Is(r.err, want) {
			t.Errorf("request %d: err %v, want %v", i, r.err, want)
		}
	}
	var fe *fhirError
	if !errors.As(group[3].err, &fe) || fe.status != 422 {
		t.Errorf("duplicate: err %v, want a 422", group[3].err)
	}
	for id, want := range map[string]bool{"a": true, "b": false, "c": false, "d": false, "e": true} {
		v, err := read(ctx, st.r, "Patient", id)
		if err != nil {
			t.Fatal(err)
		}
		if (v != nil) != want {
			t.Errorf("Patient/%s stored = %v, want %v", id, v != nil, want)
		}
	}
	var rows int
	if err := st.r.QueryRow(`SELECT count(*) FROM idx WHERE k = ?`, indexKey("Patient", "identifier")).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != 2 {
		t.Errorf("identifier index rows = %d, want 2 (a and e)", rows)
	}

	// A panic gives the whole group up, and the store stays usable.
	g2 := []*writeReq{{ctx: ctx, fn: put("f")}, {ctx: ctx, fn: func(*wtx) error { panic("test panic") }}, {ctx: ctx, fn: put("g")}}
	st.wmu.Lock()
	st.runGroup(g2)
	st.wmu.Unlock()
	for i, r := range g2 {
		if !r.done || r.err == nil {
			t.Errorf("panicking group: request %d done=%v err=%v, want failed", i, r.done, r.err)
		}
	}
	if err := st.write(ctx, put("h")); err != nil {
		t.Fatalf("write after a panic: %v", err)
	}
	for id, want := range map[string]bool{"f": false, "g": false, "h": true} {
		v, err := read(ctx, st.r, "Patient", id)
		if err != nil {
			t.Fatal(err)
		}
		if (v != nil) != want {
			t.Errorf("Patient/%s stored = %v, want %v", id, v != nil, want)
		}
	}
}
