package importjob

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"math/bits"
	"strconv"
)

// fingerprint identifies the content of a batch whatever the order its
// lines arrive in: the count of its lines and the sum, modulo 2^128, of a
// 128-bit SHA-256 digest of each (source, line, resource body). Equal
// batches have equal fingerprints, and sums are added batch by batch from
// concurrent writers.
type fingerprint struct {
	n      int64
	lo, hi uint64
}

// lineDigest is the digest of one staged line.
func lineDigest(scratch []byte, source string, line int64, body []byte) (lo, hi uint64) {
	d := sha256.New()
	d.Write([]byte(source))
	var b [9]byte
	binary.LittleEndian.PutUint64(b[1:], uint64(line))
	d.Write(b[:])
	d.Write(body)
	sum := d.Sum(scratch[:0])
	return binary.LittleEndian.Uint64(sum[0:8]), binary.LittleEndian.Uint64(sum[8:16])
}

func (f *fingerprint) addDigest(lo, hi uint64) {
	var c uint64
	f.lo, c = bits.Add64(f.lo, lo, 0)
	f.hi, _ = bits.Add64(f.hi, hi, c)
	f.n++
}

func (f *fingerprint) merge(g fingerprint) {
	var c uint64
	f.lo, c = bits.Add64(f.lo, g.lo, 0)
	f.hi, _ = bits.Add64(f.hi, g.hi, c)
	f.n += g.n
}

// String renders the fingerprint: lines and sum.
func (f fingerprint) String() string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[0:8], f.hi)
	binary.BigEndian.PutUint64(b[8:16], f.lo)
	return strconv.FormatInt(f.n, 10) + "-" + hex.EncodeToString(b[:])
}

// batchKey names a batch in the state folder: its content and the data
// store it goes to.
func batchKey(target string, f fingerprint) string {
	d := sha256.New()
	d.Write([]byte("fhirload-import-v1\x00"))
	d.Write([]byte(target))
	d.Write([]byte{0})
	d.Write([]byte(f.String()))
	return hex.EncodeToString(d.Sum(nil))[:32]
}
