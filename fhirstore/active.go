package fhirstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Index keys are activated on demand. Every write computes every index row
// of the resource (resources.keys), but idx — the rows searches read, and
// the dearest part of a write — holds the rows of the active keys only. A
// key (a parameter part and its sub-key: values, :text, :of-type or
// :identifier) becomes active the first time a search needs it: its rows
// are copied from resources.keys of the type's live resources, in key
// order, in one write transaction, and from then on every write keeps
// them. So parameters nobody searches cost a write nothing but their share
// of resources.keys, and a first search of a parameter over N resources of
// its type waits for their rows to be copied (measured in
// docs/PERFORMANCE.md). The active keys are kept in meta (key 'active') by
// type and expression, so they survive restarts and catalog changes. The
// identifier rows of the types under the duplicate-identifier rule are
// active from the start.

// activeKeys is a set of active index keys (idx.k).
type activeKeys map[int64]bool

// activeName names a key in meta independently of slot numbers, which the
// catalog may renumber: type, kind, sub-key and expression.
func activeName(k int64) (string, bool) {
	tp, a, sub, ok := keyAtom(k)
	if !ok {
		return "", false
	}
	return tp.typ + "\t" + a.kind.String() + "\t" + strconv.Itoa(sub) + "\t" + a.src, true
}

// keyAtom returns the type, atom and sub-key of an index key.
func keyAtom(k int64) (*typeParams, *atom, int, bool) {
	ti := int(k >> 16)
	if ti < 0 || ti >= len(resourceTypes) {
		return nil, nil, 0, false
	}
	tp := searchCatalog().types[resourceTypes[ti]]
	slot, sub := int(k&0xffff)/subsPerSP, int(k&0xffff)%subsPerSP
	if slot >= len(tp.atoms) {
		return nil, nil, 0, false
	}
	return tp, tp.atoms[slot], sub, true
}

// loadActive reads the active keys from meta, mapped to the current
// catalog (names it no longer has are dropped).
func loadActive(ctx context.Context, q querier) (activeKeys, error) {
	act := activeKeys{}
	var raw string
	err := q.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'active'`).Scan(&raw)
	if errors.Is(err, sql.ErrNoRows) || err != nil && strings.Contains(err.Error(), "no such table") {
		return act, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read active index keys: %w", err)
	}
	var names []string
	if err := json.Unmarshal([]byte(raw), &names); err != nil {
		return nil, fmt.Errorf("read active index keys: %w", err)
	}
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	for _, typ := range resourceTypes {
		tp := searchCatalog().types[typ]
		for _, a := range tp.atoms {
			for sub := range subsPerSP {
				k := tp.key(a, sub)
				if n, _ := activeName(k); want[n] {
					act[k] = true
				}
			}
		}
	}
	return act, nil
}

// saveActive writes the active keys to meta.
func saveActive(ctx context.Context, tx *sql.Tx, act activeKeys) error {
	var names []string
	for k := range act {
		if n, ok := activeName(k); ok {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	b, _ := json.Marshal(names)
	if _, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO meta (key, value) VALUES ('active', ?)`, string(b)); err != nil {
		return fmt.Errorf("save active index keys: %w", err)
	}
	return nil
}

// missing returns the keys of ks that are not active.
func (st *store) missing(ks []int64) []int64 {
	act := *st.active.Load()
	var out []int64
	for _, k := range ks {
		if !act[k] && !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	return out
}

// activate makes keys ks active: it copies their rows from the keys of the
// live resources of their types into idx, in one transaction taken
// between two group commits. It returns at once when they are active.
func (st *store) activate(ctx context.Context, ks []int64) error {
	if len(st.missing(ks)) == 0 {
		return nil
	}
	st.wmu.Lock()
	defer st.wmu.Unlock()
	todo := st.missing(ks) // another request may have activated them meanwhile
	if len(todo) == 0 {
		return nil
	}
	start := time.Now()
	tx, err := st.w.BeginTx(context.WithoutCancel(ctx), nil)
	if err != nil {
		return fmt.Errorf("activate index keys: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	byType := map[int64][]int64{}
	for _, k := range todo {
		byType[k>>16] = append(byType[k>>16], k)
	}
	n := 0
	for ti, keys := range byType {
		c, err := backfill(ctx, tx, st, resourceTypes[ti], keys)
		if err != nil {
			return err
		}
		n += c
	}
	next := maps.Clone(*st.active.Load())
	for _, k := range todo {
		next[k] = true
	}
	if err := saveActive(ctx, tx, next); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("activate index keys: %w", err)
	}
	st.active.Store(&next)
	st.activations.Add(1)
	st.activatedRows.Add(int64(n))
	st.activationTime.Add(int64(time.Since(start)))
	return nil
}

// backfill inserts the rows of keys (all of type typ) of the type's live
// resources, and returns how many.
func backfill(ctx context.Context, tx *sql.Tx, st *store, typ string, keys []int64) (int, error) {
	want := map[int64]bool{}
	for _, k := range keys {
		want[k] = true
	}
	total := 0
	var pend []pendRow
	flush := func() error {
		total += len(pend)
		err := insertRows(ctx, tx, st, pend)
		pend = pend[:0]
		return err
	}
	for after := int64(0); ; {
		rows, err := tx.QueryContext(ctx, `SELECT rid, keys FROM resources WHERE type = ? AND deleted = 0 AND rid > ? ORDER BY rid LIMIT 1000`, typ, after)
		if err != nil {
			return 0, fmt.Errorf("activate index keys: %w", err)
		}
		got := 0
		for rows.Next() {
			var rid int64
			var kb []byte
			if err := rows.Scan(&rid, &kb); err != nil {
				rows.Close()
				return 0, fmt.Errorf("activate index keys: %w", err)
			}
			after, got = rid, got+1
			for _, r := range decodeRows(kb) {
				if want[r.k] {
					pend = append(pend, pendRow{k: r.k, a: r.a, b: r.b, rid: rid})
				}
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return 0, fmt.Errorf("activate index keys: %w", err)
		}
		if len(pend) >= 50000 || got == 0 {
			if err := flush(); err != nil {
				return 0, err
			}
		}
		if got == 0 {
			return total, nil
		}
	}
}
