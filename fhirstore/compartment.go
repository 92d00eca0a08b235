package fhirstore

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	spec "github.com/fhirload/fhirload/registry"
)

// Compartments come from the R4 package's CompartmentDefinitions
// (registry): a resource of type T is in the compartment of Patient/X when
// one of the parameters the definition lists for T (Observation: subject,
// performer) points at Patient/X; Patient/X itself is in it too.
// Patient/X/Observation?… searches Observations in it; Patient/X/*?…
// every type of it. Patient/X/$everything returns Patient/X, every
// resource in its compartment, and the resources those point at (one
// level: the Practitioners, Organizations, Locations, Medications, … they
// reference), paged by _offset; _since (meta.lastUpdated at or after),
// _type (types to return) and _count apply. Patient/$everything does so
// for every Patient.

// compartment returns the CompartmentDefinition of a compartment type, or
// nil.
func (c *catalog) compartment(typ string) *spec.Compartment {
	return spec.R4().Compartment(typ)
}

// compartmentSet is the rids of resources of type tp in the compartment
// of comp/id, or, when id is "", in the compartment of any comp that
// exists. ok is false when tp is never in that compartment.
func compartmentSet(tp *typeParams, comp, id string, needs *[]int64) (sqlPart, bool) {
	def := searchCatalog().compartment(comp)
	if def == nil {
		return sqlPart{}, false
	}
	var selects []string
	var args []any
	focal := sqlPart{"a = ?", []any{id}}
	if id == "" {
		focal = sqlPart{"a IN (SELECT id FROM resources WHERE type = ? AND deleted = 0)", []any{comp}}
	}
	if tp.typ == comp {
		// The focal resource is in its own compartment (R4 lists it as
		// {def} for Encounter, not for Patient, whose only parameter is
		// link: the Patients linked to it).
		if id == "" {
			selects = append(selects, "SELECT rid FROM resources WHERE type = ? AND deleted = 0")
			args = append(args, comp)
		} else {
			selects = append(selects, "SELECT rid FROM resources WHERE type = ? AND id = ? AND deleted = 0")
			args = append(args, comp, id)
		}
	}
	for _, code := range def.Params(tp.typ) {
		if code == "{def}" {
			continue
		}
		p := tp.byCode[code]
		if p == nil || p.kind != kindRef || !p.supported() {
			continue
		}
		sel := rowSelect("rid", []*typeParams{tp}, []*param{p}, subMain, comp, focal, needs)
		selects = append(selects, sel.sql)
		args = append(args, sel.args...)
	}
	if len(selects) == 0 {
		return sqlPart{}, false
	}
	return sqlPart{strings.Join(selects, " UNION "), args}, true
}

// compartmentTypes lists the types that can be in a compartment.
func compartmentTypes(comp string) []string {
	def := searchCatalog().compartment(comp)
	if def == nil {
		return nil
	}
	var out []string
	for _, r := range def.Resources {
		if len(r.Params) > 0 && knownType(r.Type) {
			out = append(out, r.Type)
		}
	}
	return out
}

// everythingSpec is a parsed $everything.
type everythingSpec struct {
	id string // "" for every Patient
	paging
	types map[string]bool // nil: every type
	view  resultView
	needs []int64
}

func parseEverything(c *call) (*everythingSpec, *fhirError) {
	ev := &everythingSpec{id: c.id, paging: paging{count: defaultCount}}
	for _, p := range c.query {
		if known, e := ev.paging.param(p); e != nil {
			return nil, e
		} else if known {
			continue
		}
		switch p.k {
		case "_type":
			ev.types = map[string]bool{}
			for t := range strings.SplitSeq(p.v, ",") {
				if !knownType(t) {
					return nil, badRequest("_type: unknown resource type '%s'.", safeName(t))
				}
				ev.types[t] = true
			}
		case "_elements", "_summary":
			v, e := parseView("", p)
			if e != nil {
				return nil, e
			}
			ev.view = v
		case "start", "end":
			return nil, errf(http.StatusBadRequest, "not-supported", "$everything: %s (care dates) is not supported; use _since or _type.", p.k)
		default:
			return nil, badRequest("$everything takes _count, _since, _type, _elements, _summary, _format and _pretty; not '%s'.", safeName(p.k))
		}
		ev.params = append(ev.params, p)
	}
	// The keys of every compartment parameter are read.
	for _, t := range compartmentTypes("Patient") {
		compartmentSet(searchCatalog().types[t], "Patient", "x", &ev.needs)
	}
	return ev, nil
}

// run renders $everything's searchset Bundle.
func (ev *everythingSpec) run(ctx context.Context, q querier, base string, now time.Time) ([]byte, error) {
	if ev.id != "" {
		v, err := read(ctx, q, "Patient", ev.id)
		if err != nil {
			return nil, err
		}
		if v == nil || v.deleted {
			return nil, errf(http.StatusNotFound, "not-found", "Resource not found: Patient/%s.", ev.id)
		}
	}
	// The rids in order: the Patient (every Patient), the compartment type
	// by type (one query a type, for one Patient or every one), then what
	// those point at.
	seen := map[int64]bool{}
	var order []int64
	pick := func(query string, args ...any) error {
		rids, err := queryRIDs(ctx, q, query, args...)
		for _, r := range rids {
			if !seen[r] {
				seen[r] = true
				order = append(order, r)
			}
		}
		return err
	}
	var err error
	if ev.id != "" {
		err = pick(`SELECT rid FROM resources WHERE type = 'Patient' AND id = ? AND deleted = 0`, ev.id)
	} else {
		err = pick(`SELECT rid FROM resources WHERE type = 'Patient' AND deleted = 0 ORDER BY rid`)
	}
	if err != nil {
		return nil, err
	}
	for _, t := range compartmentTypes("Patient") {
		if t == "Patient" {
			continue
		}
		var needs []int64
		set, ok := compartmentSet(searchCatalog().types[t], "Patient", ev.id, &needs)
		if !ok {
			continue
		}
		if err := pick("SELECT rid FROM resources WHERE deleted = 0 AND rid IN ("+set.sql+") ORDER BY rid", set.args...); err != nil {
			return nil, err
		}
	}
	if err := ev.addReferenced(ctx, q, seen, &order); err != nil {
		return nil, err
	}
	cs, err := ev.filter(ctx, q, order)
	if err != nil {
		return nil, err
	}
	total := len(cs)
	lo := min(ev.offset, total)
	hi := min(lo+ev.count, total)
	pageRows := cs[lo:hi]
	if err := loadBodies(ctx, q, pageRows); err != nil {
		return nil, err
	}
	return ev.render(base, now, total, lo, hi, pageRows), nil
}

// addReferenced appends what the resources in order point at (from their
// index keys: every reference parameter), once each.
func (ev *everythingSpec) addReferenced(ctx context.Context, q querier, seen map[int64]bool, order *[]int64) error {
	refs := map[string][]any{}
	for chunk := range slices.Chunk(*order, 500) {
		args := make([]any, len(chunk))
		for i, r := range chunk {
			args[i] = r
		}
		rows, err := q.QueryContext(ctx, "SELECT type, keys FROM resources WHERE rid IN ("+placeholders(len(chunk))+")", args...)
		if err != nil {
			return fmt.Errorf("$everything: %w", err)
		}
		for rows.Next() {
			var typ string
			var keys []byte
			if err := rows.Scan(&typ, &keys); err != nil {
				rows.Close()
				return fmt.Errorf("$everything: %w", err)
			}
			tp := searchCatalog().types[typ]
			for _, r := range decodeRows(keys) {
				_, a, sub, ok := keyAtom(r.k)
				if !ok || sub != subMain || a.kind != kindRef || int(r.k>>16) != tp.idx {
					continue
				}
				t, _ := r.b.(string)
				id, _ := r.a.(string)
				if knownType(t) && validID(id) {
					refs[t] = append(refs[t], id)
				}
			}
		}
		rows.Close()
	}
	types := slices.Sorted(func(yield func(string) bool) {
		for t := range refs {
			if !yield(t) {
				return
			}
		}
	})
	for _, t := range types {
		ids := slices.Compact(slices.SortedFunc(slices.Values(refs[t]), func(a, b any) int { return strings.Compare(a.(string), b.(string)) }))
		for chunk := range slices.Chunk(ids, 500) {
			rids, err := queryRIDs(ctx, q, "SELECT rid FROM resources WHERE type = ? AND deleted = 0 AND id IN ("+placeholders(len(chunk))+") ORDER BY rid", append([]any{t}, chunk...)...)
			if err != nil {
				return err
			}
			for _, r := range rids {
				if !seen[r] {
					seen[r] = true
					*order = append(*order, r)
				}
			}
		}
	}
	return nil
}

// filter applies _since and _type, keeping the order, and returns the
// candidates (rid, type, id).
func (ev *everythingSpec) filter(ctx context.Context, q querier, order []int64) ([]candidate, error) {
	byRID := map[int64]candidate{}
	for chunk := range slices.Chunk(order, 500) {
		args := make([]any, len(chunk))
		for i, r := range chunk {
			args[i] = r
		}
		rows, err := q.QueryContext(ctx, "SELECT rid, type, id, updated FROM resources WHERE deleted = 0 AND rid IN ("+placeholders(len(chunk))+")", args...)
		if err != nil {
			return nil, fmt.Errorf("$everything: %w", err)
		}
		for rows.Next() {
			var c candidate
			if err := rows.Scan(&c.rid, &c.typ, &c.id, &c.updated); err != nil {
				rows.Close()
				return nil, fmt.Errorf("$everything: %w", err)
			}
			byRID[c.rid] = c
		}
		rows.Close()
	}
	var out []candidate
	for _, r := range order {
		c, ok := byRID[r]
		if !ok || ev.since > 0 && c.updated < ev.since || ev.types != nil && !ev.types[c.typ] {
			continue
		}
		c.mode = "match"
		out = append(out, c)
	}
	return out, nil
}

func (ev *everythingSpec) render(base string, now time.Time, total, lo, hi int, page []candidate) []byte {
	var out bytes.Buffer
	out.WriteString(`{"resourceType":"Bundle","id":"` + newID() + `","meta":{"lastUpdated":"` + lastUpdated(now) +
		`"},"type":"searchset","total":` + strconv.Itoa(total) + `,"link":[`)
	writeLink(&out, "self", ev.link(base, lo))
	if hi < total {
		out.WriteByte(',')
		writeLink(&out, "next", ev.link(base, hi))
	}
	if lo > 0 {
		out.WriteByte(',')
		writeLink(&out, "previous", ev.link(base, max(lo-ev.count, 0)))
	}
	out.WriteString("]")
	for i, c := range page {
		if i == 0 {
			out.WriteString(`,"entry":[`)
		} else {
			out.WriteByte(',')
		}
		out.WriteString(`{"fullUrl":`)
		writeJSONString(&out, base+c.typ+"/"+c.id)
		out.WriteString(`,"resource":`)
		out.Write(ev.view.apply(c.typ, c.body))
		out.WriteString(`,"search":{"mode":"match"}}`)
	}
	if len(page) > 0 {
		out.WriteString("]")
	}
	out.WriteString("}")
	return out.Bytes()
}

func (ev *everythingSpec) link(base string, offset int) string {
	if ev.id != "" {
		return ev.paging.link(base+"Patient/"+ev.id+"/$everything", offset)
	}
	return ev.paging.link(base+"Patient/$everything", offset)
}

func queryRIDs(ctx context.Context, q querier, query string, args ...any) ([]int64, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("query: %w", err)
	}
	defer rows.Close()
	var out []int64
	for rows.Next() {
		var r int64
		if err := rows.Scan(&r); err != nil {
			return nil, fmt.Errorf("query: %w", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}
