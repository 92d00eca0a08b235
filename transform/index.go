package transform

import (
	"bufio"
	"bytes"
	"container/heap"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"

	"github.com/fhirload/fhirload/registry"
)

// Index is the ids of a run's resources and their types: a Resolver built by a pre-pass
// over all sources (ScanID on every line, the fullUrl of every Bundle entry), so that a
// urn:uuid: reference can be rewritten to the type of its actual target whatever the
// file order.
//
// Each id is kept as 16 bytes plus a type byte: a UUID (any case) as its 16 bytes, any
// other id as the first 16 bytes of its SHA-256, in chunks that never move, sorted in
// place. 1M resources take 17 MB (plus a 256 KiB table of key prefixes that makes a
// lookup a few cache lines); 100M take
// 1.7 GB, which is why, past IndexOptions.MaxMemory, entries are sorted into run files
// and merged at Freeze into one sorted file that TypeOf binary-searches through a sparse
// in-memory index (16 bytes per 256 entries: 6.3 MB at 100M) with one 4 KiB read per
// lookup.
//
// Add may be called from several goroutines; Freeze ends the pre-pass; TypeOf is safe
// for concurrent use after Freeze. An id found under two types is ambiguous: TypeOf
// says false for it (its references stay as written and are counted).
type Index struct {
	opts    IndexOptions
	types   []string // type byte → name (the registry's resource types)
	typeNum map[string]uint8

	mu sync.Mutex
	// The entries held in memory, in fixed-size chunks so that growing never copies
	// them (a growing slice would leave several times its size behind as garbage):
	// unsorted during the pre-pass, sorted and unique after Freeze.
	chunks [][]indexEntry
	n      int
	// starts[p] is the first entry whose key begins with the 16 bits p (after Freeze,
	// in memory): a lookup searches a few entries in one or two cache lines instead of
	// binary-searching 17 MB. 256 KiB.
	starts []uint32
	runs   []string // spilled run files
	frozen bool
	added  int64
	// repeats counts the entries added again with a type and id already
	// added: the same resource more than once in the run's sources.
	repeats int64

	// After Freeze when spilled: the merged file and the first key of each block.
	file   *os.File
	count  int64
	sparse [][16]byte
	bufs   sync.Pool
}

// IndexOptions configures an Index. Zero values select the defaults.
type IndexOptions struct {
	// MaxMemory bounds the memory of the entries held during the pre-pass (17 bytes
	// each); beyond it they spill to disk. Default 32 MiB (1.9M resources).
	MaxMemory int64
	// Dir is where spilled runs and the merged file go; default os.TempDir(). The
	// files are removed by Close.
	Dir string
}

type indexEntry struct {
	key [16]byte
	typ uint8
}

const (
	entrySize   = 17
	ambiguous   = 0xFF
	blockLen    = 256 // entries per block of the merged file
	defaultMem  = 32 << 20
	maxTypeNums = 0xFF
	chunkBits   = 14 // 16,384 entries (272 KiB) per chunk
	chunkLen    = 1 << chunkBits
)

// NewIndex returns an empty index over the R4 resource types.
func NewIndex(opts IndexOptions) *Index {
	if opts.MaxMemory <= 0 {
		opts.MaxMemory = defaultMem
	}
	if opts.Dir == "" {
		opts.Dir = os.TempDir()
	}
	x := &Index{opts: opts, types: registry.R4().ResourceTypes(), typeNum: map[string]uint8{}}
	for i, t := range x.types[:min(len(x.types), maxTypeNums)] {
		x.typeNum[t] = uint8(i)
	}
	x.bufs.New = func() any { b := make([]byte, blockLen*entrySize); return &b }
	return x
}

// Add records that the run has a resource of type typ with this id. It returns false
// (and records nothing) for an unknown resource type or an empty id, which the
// validator will reject anyway. It fails after Freeze or when a spill fails.
func (x *Index) Add(typ, id []byte) (bool, error) {
	t, ok := x.typeNum[string(typ)]
	if !ok || len(id) == 0 {
		return false, nil
	}
	e := indexEntry{key: indexKey(id), typ: t}
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.frozen {
		return false, errors.New("transform: index: Add after Freeze")
	}
	if x.n == len(x.chunks)<<chunkBits {
		x.chunks = append(x.chunks, make([]indexEntry, chunkLen))
	}
	*x.at(x.n) = e
	x.n++
	x.added++
	if int64(x.n)*entrySize >= x.opts.MaxMemory {
		if err := x.spill(); err != nil {
			return false, err
		}
	}
	return true, nil
}

// indexKey is the 16-byte key of an id: a UUID's bytes, else a SHA-256 prefix.
func indexKey(id []byte) [16]byte {
	var k [16]byte
	if parseUUID(&k, id) {
		return k
	}
	sum := sha256.Sum256(id)
	copy(k[:], sum[:16])
	return k
}

// parseUUID fills k from a 36-character UUID (either case).
func parseUUID(k *[16]byte, u []byte) bool {
	if len(u) != 36 || u[8] != '-' || u[13] != '-' || u[18] != '-' || u[23] != '-' {
		return false
	}
	pos := [16]uint8{0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34} // the hex pairs
	bad := byte(0)
	for j, i := range pos {
		hi, lo := hexNibble(u[i]), hexNibble(u[i+1])
		bad |= hi | lo
		k[j] = hi<<4 | lo&0x0f
	}
	return bad&0xf0 == 0
}

// hexNibble returns the value of a hex digit, or 0xff.
func hexNibble(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10
	}
	return 0xff
}

func compareEntries(a, b indexEntry) int {
	if c := bytes.Compare(a.key[:], b.key[:]); c != 0 {
		return c
	}
	return int(a.typ) - int(b.typ)
}

func (x *Index) at(i int) *indexEntry { return &x.chunks[i>>chunkBits][i&(chunkLen-1)] }

func prefix(k *[16]byte) int { return int(k[0])<<8 | int(k[1]) }

// sortUnique sorts the held entries in place and folds repeats (the same key and type
// once, counted in repeats; with foldTypes, the same key under several types one entry
// marked ambiguous), then sets starts. It uses
// no memory beyond the 256 KiB starts table: an in-place counting sort on the first 16
// bits of the keys (American flag sort), then a sort of each of the 65,536 buckets
// (about 15 entries each at 1M; keys are UUIDs or SHA-256 prefixes, so evenly spread).
func (x *Index) sortUnique(foldTypes bool) {
	starts := make([]uint32, 1<<16+1)
	for i := 0; i < x.n; i++ {
		starts[prefix(&x.at(i).key)+1]++
	}
	for p := 1; p <= 1<<16; p++ {
		starts[p] += starts[p-1]
	}
	next := make([]uint32, 1<<16)
	copy(next, starts[:1<<16])
	for p := 0; p < 1<<16; p++ {
		for next[p] < starts[p+1] {
			e := x.at(int(next[p]))
			q := prefix(&e.key)
			if q == p {
				next[p]++
				continue
			}
			o := x.at(int(next[q]))
			*e, *o = *o, *e
			next[q]++
		}
	}
	var tmp []indexEntry
	for p := 0; p < 1<<16; p++ {
		lo, hi := int(starts[p]), int(starts[p+1])
		if hi-lo <= 32 {
			for i := lo + 1; i < hi; i++ { // insertion sort
				for j := i; j > lo && compareEntries(*x.at(j), *x.at(j - 1)) < 0; j-- {
					a, b := x.at(j), x.at(j-1)
					*a, *b = *b, *a
				}
			}
			continue
		}
		tmp = tmp[:0]
		for i := lo; i < hi; i++ {
			tmp = append(tmp, *x.at(i))
		}
		slices.SortFunc(tmp, compareEntries)
		for i, e := range tmp {
			*x.at(lo + i) = e
		}
	}
	// Fold repeats (counted), then recount the starts. The entries are in
	// (key, type) order, so a repeat follows the entry it repeats. Unless
	// foldTypes, the same key under several types stays one entry per type
	// (a spilled run: merge folds them, and counts repeats across runs).
	w := 0
	var prev indexEntry
	for i := 0; i < x.n; i++ {
		e := *x.at(i)
		if i > 0 && e == prev {
			x.repeats++
			continue
		}
		sameKey := i > 0 && e.key == prev.key
		prev = e
		if sameKey && foldTypes {
			x.at(w - 1).typ = ambiguous
			continue
		}
		*x.at(w) = e
		w++
	}
	x.n = w
	clear(starts)
	for i := 0; i < x.n; i++ {
		starts[prefix(&x.at(i).key)+1]++
	}
	for p := 1; p <= 1<<16; p++ {
		starts[p] += starts[p-1]
	}
	x.starts = starts
}

// spill writes the held entries, sorted, to a new run file. Called with mu held.
func (x *Index) spill() error {
	x.sortUnique(false)
	f, err := os.CreateTemp(x.opts.Dir, "fhirload-index-run-*")
	if err != nil {
		return fmt.Errorf("transform: index: spill: %w", err)
	}
	x.runs = append(x.runs, f.Name())
	w := bufio.NewWriterSize(f, 1<<20)
	for i := 0; i < x.n && err == nil; i++ {
		err = writeEntry(w, x.at(i))
	}
	if err == nil {
		err = w.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("transform: index: spill: %w", err)
	}
	x.n = 0 // the chunks are reused
	return nil
}

// Freeze ends the pre-pass: it sorts the entries (merging spilled runs into one file)
// so that TypeOf can answer. Later calls do nothing.
func (x *Index) Freeze() error {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.frozen {
		return nil
	}
	x.frozen = true
	if len(x.runs) == 0 {
		x.sortUnique(true)
		x.chunks = x.chunks[:(x.n+chunkLen-1)>>chunkBits] // drop chunks emptied by folding
		return nil
	}
	if x.n > 0 {
		if err := x.spill(); err != nil {
			return err
		}
	}
	x.chunks, x.starts = nil, nil
	return x.merge()
}

// runReader reads the entries of one sorted run.
type runReader struct {
	r   *bufio.Reader
	f   *os.File
	cur indexEntry
}

func (rr *runReader) next() (bool, error) {
	var b [entrySize]byte
	if _, err := io.ReadFull(rr.r, b[:]); err != nil {
		if err == io.EOF {
			return false, nil
		}
		return false, err
	}
	copy(rr.cur.key[:], b[:16])
	rr.cur.typ = b[16]
	return true, nil
}

type runHeap []*runReader

func (h runHeap) Len() int           { return len(h) }
func (h runHeap) Less(i, j int) bool { return compareEntries(h[i].cur, h[j].cur) < 0 }
func (h runHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *runHeap) Push(v any)        { *h = append(*h, v.(*runReader)) }
func (h *runHeap) Pop() any {
	old := *h
	v := old[len(old)-1]
	*h = old[:len(old)-1]
	return v
}

// merge k-way merges the runs into one file of unique entries with a sparse index.
func (x *Index) merge() (err error) {
	out, err := os.CreateTemp(x.opts.Dir, "fhirload-index-*")
	if err != nil {
		return fmt.Errorf("transform: index: merge: %w", err)
	}
	x.file = out
	h := runHeap{}
	defer func() {
		for _, rr := range h {
			rr.f.Close()
		}
		for _, name := range x.runs {
			os.Remove(name)
		}
		x.runs = nil
		if err != nil {
			err = fmt.Errorf("transform: index: merge: %w", err)
		}
	}()
	for _, name := range x.runs {
		f, err := os.Open(name)
		if err != nil {
			return err
		}
		rr := &runReader{r: bufio.NewReaderSize(f, 64<<10), f: f}
		ok, err := rr.next()
		if err != nil {
			f.Close()
			return err
		}
		if !ok {
			f.Close()
			continue
		}
		h = append(h, rr)
	}
	heap.Init(&h)
	w := bufio.NewWriterSize(out, 1<<20)
	var last, prev indexEntry // last: the entry to write (types folded); prev: the one read before e
	have := false
	write := func(e indexEntry) error {
		if x.count%blockLen == 0 {
			x.sparse = append(x.sparse, e.key)
		}
		x.count++
		return writeEntry(w, &e)
	}
	for len(h) > 0 {
		rr := h[0]
		e := rr.cur
		switch {
		case !have:
			last, have = e, true
		case e == prev: // in two runs
			x.repeats++
		case last.key == e.key:
			last.typ = ambiguous
		default:
			if err := write(last); err != nil {
				return err
			}
			last = e
		}
		prev = e
		ok, err := rr.next()
		if err != nil {
			return err
		}
		if ok {
			heap.Fix(&h, 0)
		} else {
			rr.f.Close()
			heap.Pop(&h)
		}
	}
	if have {
		if err := write(last); err != nil {
			return err
		}
	}
	return w.Flush()
}

// writeEntry writes the 17-byte record of an entry.
func writeEntry(w *bufio.Writer, e *indexEntry) error {
	var rec [entrySize]byte
	copy(rec[:], e.key[:])
	rec[16] = e.typ
	_, err := w.Write(rec[:])
	return err
}

// Len returns the number of distinct ids (after Freeze).
func (x *Index) Len() int64 {
	if x.file != nil {
		return x.count
	}
	return int64(x.n)
}

// Repeats returns how many times a resource was added again with a type and
// id already added (after Freeze): in a run, the same resource more than
// once in its sources. Which of those lines the target ends up holding is
// not defined: they may be written by batches in flight together.
func (x *Index) Repeats() int64 {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.repeats
}

// Spilled reports whether the index went to disk.
func (x *Index) Spilled() bool { return x.file != nil }

// TypeOf returns the type of the run's resource with this id (a Resolver). Before
// Freeze it knows nothing.
func (x *Index) TypeOf(id []byte) (string, bool) {
	if !x.frozen {
		return "", false
	}
	k := indexKey(id)
	var t uint8
	var ok bool
	if x.file != nil {
		t, ok = x.lookupFile(k)
	} else {
		t, ok = x.lookupMemory(k)
	}
	if !ok || t == ambiguous || int(t) >= len(x.types) {
		return "", false
	}
	return x.types[t], true
}

func (x *Index) lookupMemory(k [16]byte) (uint8, bool) {
	p := prefix(&k)
	hi1, lo1 := binary.BigEndian.Uint64(k[:8]), binary.BigEndian.Uint64(k[8:])
	lo, hi := int(x.starts[p]), int(x.starts[p+1])
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		e := x.at(m)
		h2, l2 := binary.BigEndian.Uint64(e.key[:8]), binary.BigEndian.Uint64(e.key[8:])
		if h2 < hi1 || h2 == hi1 && l2 < lo1 {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo < int(x.starts[p+1]) && x.at(lo).key == k {
		return x.at(lo).typ, true
	}
	return 0, false
}

func (x *Index) lookupFile(k [16]byte) (uint8, bool) {
	// The block whose first key is the last one <= k.
	b, found := slices.BinarySearchFunc(x.sparse, k, func(s, k [16]byte) int { return bytes.Compare(s[:], k[:]) })
	if !found {
		if b == 0 {
			return 0, false
		}
		b--
	}
	n := min(int64(blockLen), x.count-int64(b)*blockLen)
	bp := x.bufs.Get().(*[]byte)
	defer x.bufs.Put(bp)
	buf := (*bp)[:n*entrySize]
	if _, err := x.file.ReadAt(buf, int64(b)*blockLen*entrySize); err != nil {
		return 0, false
	}
	lo, hi := 0, int(n)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if bytes.Compare(buf[m*entrySize:m*entrySize+16], k[:]) < 0 {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo < int(n) && bytes.Equal(buf[lo*entrySize:lo*entrySize+16], k[:]) {
		return buf[lo*entrySize+16], true
	}
	return 0, false
}

// Close removes the index's files. The index answers nothing afterwards.
func (x *Index) Close() error {
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, name := range x.runs {
		os.Remove(name)
	}
	x.runs = nil
	x.chunks, x.n = nil, 0
	x.starts = nil
	x.frozen = false
	if x.file != nil {
		name := x.file.Name()
		err := x.file.Close()
		os.Remove(name)
		x.file = nil
		return err
	}
	return nil
}
