package gitsync

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/sha1"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/format/packfile"
)

// A fetched pack is written to a temporary file, indexed here, and renamed
// into objects/pack with its index. go-git's own pack writer would do it
// with a parser that reads every object of the pack whole into memory (a
// 100 MB file cost 100 MB of heap, however well it compressed), and it
// leaves its temporary file behind when a fetch fails. This indexer streams
// every object through its hash; only delta bases are held, in memory when
// small, in scratch files next to the pack when large. Every bound below is
// checked as the pack is read, so a refused pack costs at most what the
// bound allows.
const (
	// largeObject is the size above which an object is never held whole in
	// memory: the indexer keeps such a delta base in a scratch file, and
	// go-git's storage reads such a blob as a stream
	// (filesystem.Options.LargeObjectThreshold).
	largeObject = 1 << 20
	// maxDelta bounds the delta data of one object. go-git reads the delta
	// data of an object whole (to learn its size) each time the object is
	// read, so a larger one would cost that much memory at every export.
	// git makes deltas this large only for files of over 8 MiB, eight times
	// the largest file the repository format allows.
	maxDelta = 4 << 20
	// maxDeltaDepth is git's own limit on the length of a delta chain.
	maxDeltaDepth = 4095
	// unpackFactor × Options.MaxFetch bounds what a pack unpacks to, all
	// objects and delta data together: inflating and hashing it is the CPU
	// time a pack costs, and a pack of compressed zeros unpacks to a
	// thousand times its size. A history unpacks to 10 to 30 times its pack
	// (BenchmarkPoll's 10,000 commits: 6 MB to 62 MB).
	unpackFactor = 32
	// scratchFactor × Options.MaxFetch bounds the scratch files that large
	// delta bases take at once while a pack is indexed.
	scratchFactor = 2
	// Options.MaxFetch / objectBytes bounds the objects of a pack: indexing
	// keeps 48 bytes of each in memory. The smallest objects take some 10
	// bytes of a pack; a history, 30 and more on average (BenchmarkPoll's,
	// 109).
	objectBytes = 16
)

// maxHeld bounds the delta bases held in memory at once; more go to
// scratch files. A variable so that tests can lower it.
var maxHeld int64 = 8 << 20

// tmpPrefix starts the name of every temporary file in objects/pack, ours
// (a pack being fetched, a scratch file) and go-git's (tmp_pack_, tmp_obj_).
const tmpPrefix = "tmp_"

// storePack reads a pack from r into the repository: it is downloaded and
// indexed in temporary files with s.polls held alone, then installed with s.mu
// held, so that no reader of the repository waits on the server. On error
// nothing of it stays in the repository directory.
func (s *Syncer) storePack(ctx context.Context, r io.Reader) (err error) {
	dir := filepath.Join(s.opts.Dir, "objects", "pack")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	// No other poll runs (s.polls), and only polls write temporary files here
	// (a fetch, or the compaction after it): one here is a leftover of a crash,
	// or of a go-git fetch made by an older baton.
	if err := removeTemps(dir); err != nil {
		return err
	}
	installLocked := func(install func() error) error {
		return s.locked(func() error {
			defer s.store.Reindex()
			return install()
		})
	}
	_, err = writePack(dir, installLocked, func(f *os.File) (*packIndexer, plumbing.Hash, error) {
		n, err := io.Copy(f, r)
		if err != nil {
			return nil, plumbing.ZeroHash, err
		}
		if n == 0 {
			return nil, plumbing.ZeroHash, errors.New("the server sent no pack")
		}
		return indexPack(ctx, f, dir, s.opts.MaxFetch)
	})
	return err
}

// writePack makes a pack in dir: fill writes it into f, a temporary file there, and
// indexes it; writePack then writes the index and installs both (installPack),
// through guard, which runs the install under the lock the repository's readers
// take. It returns the pack's checksum. On error nothing of it stays in dir.
func writePack(dir string, guard func(install func() error) error, fill func(f *os.File) (*packIndexer, plumbing.Hash, error)) (sum plumbing.Hash, err error) {
	f, err := os.CreateTemp(dir, tmpPrefix+"pack_")
	if err != nil {
		return sum, err
	}
	var idx *os.File
	defer func() {
		_ = f.Close()
		if idx != nil {
			_ = idx.Close()
		}
		if err != nil {
			_ = os.Remove(f.Name())
			if idx != nil {
				_ = os.Remove(idx.Name())
			}
		}
	}()
	x, sum, err := fill(f)
	if err != nil {
		return sum, err
	}
	if idx, err = os.CreateTemp(dir, tmpPrefix+"idx_"); err != nil {
		return sum, err
	}
	if err := x.writeIndex(idx, sum); err != nil {
		return sum, err
	}
	return sum, guard(func() error { return installPack(dir, f, idx, sum) })
}

// installPack moves pack file f and its index idx, temporary files in dir,
// into place as the pack named sum, durably: a crash leaves the pack whole
// or absent. When that pack is here already, it removes f and idx instead.
func installPack(dir string, f, idx *os.File, sum plumbing.Hash) error {
	base := filepath.Join(dir, "pack-"+sum.String())
	if _, err := os.Stat(base + ".pack"); err == nil {
		// The same pack, by its checksum, is here already.
		return errors.Join(os.Remove(f.Name()), os.Remove(idx.Name()))
	}
	for _, file := range []*os.File{f, idx} {
		if err := file.Sync(); err != nil {
			return err
		}
		if err := file.Chmod(0o444); err != nil { // as go-git and git leave them
			return err
		}
	}
	// The index first: go-git lists packs by their .pack file and fails on
	// one without its index, while it ignores an index without its pack.
	if err := os.Rename(idx.Name(), base+".idx"); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), base+".pack"); err != nil {
		_ = os.Remove(base + ".idx")
		return err
	}
	return syncFile(dir)
}

// removeTemps removes the temporary files in dir.
func removeTemps(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), tmpPrefix) {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

// indexPack indexes pack file f, with scratch files in dir and the bounds
// that maxFetch sets. It returns the pack's checksum.
func indexPack(ctx context.Context, f *os.File, dir string, maxFetch int64) (*packIndexer, plumbing.Hash, error) {
	return indexPackWithin(ctx, f, dir, packBounds{
		objects:  maxFetch / objectBytes,
		unpacked: unpackFactor * maxFetch,
		scratch:  scratchFactor * maxFetch,
	})
}

// packBounds bound the indexing of a pack: its objects, what they unpack
// to, and the scratch files of its large delta bases.
type packBounds struct{ objects, unpacked, scratch int64 }

func indexPackWithin(ctx context.Context, f *os.File, dir string, b packBounds) (*packIndexer, plumbing.Hash, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, plumbing.ZeroHash, err
	}
	x := &packIndexer{
		ctx:         ctx,
		sc:          packfile.NewScanner(f),
		dir:         dir,
		maxObjects:  b.objects,
		maxUnpacked: b.unpacked,
		maxScratch:  b.scratch,
		buf:         make([]byte, 32<<10),
	}
	sum, err := x.index()
	return x, sum, err
}

// packIndexer computes the index of a pack file: the hash, offset and CRC
// of every object in it.
type packIndexer struct {
	ctx     context.Context
	sc      *packfile.Scanner // over the pack file
	dir     string            // where scratch files go
	entries []packEntry       // in pack order, so by offset
	// refs lists the REF_DELTA entries not yet linked to their base, by the
	// base's hash (git sends these only to clients that do not ask for
	// ofs-delta, or to name a base outside the pack: a thin pack, refused).
	refs map[plumbing.Hash][]int32

	maxObjects            int64
	unpacked, maxUnpacked int64
	held                  int64 // bytes of delta bases in memory
	scratch, maxScratch   int64 // bytes of delta bases in scratch files
	buf                   []byte
	deltaReader           *bufio.Reader
}

// packEntry is one object of the pack. A delta is resolved when its hash
// is known: then typ is that of the object it makes.
type packEntry struct {
	offset int64
	hash   plumbing.Hash
	crc    uint32
	stored plumbing.ObjectType // as stored: a delta type for a delta
	typ    plumbing.ObjectType // 0 until resolved
	// child is the first delta whose base this object is, next the next
	// delta on the same base: -1 for none.
	child, next int32
}

func isDelta(t plumbing.ObjectType) bool {
	return t == plumbing.OFSDeltaObject || t == plumbing.REFDeltaObject
}

// index reads the pack twice: once in order, hashing every whole object
// and linking every delta to its base; then resolving the deltas, base by
// base. It returns the pack's checksum.
func (x *packIndexer) index() (plumbing.Hash, error) {
	sum, err := x.scan()
	if err != nil {
		return plumbing.ZeroHash, err
	}
	x.linkRefs()
	for i := range x.entries {
		if e := &x.entries[i]; !isDelta(e.stored) && e.child >= 0 {
			if err := x.resolveBase(int32(i)); err != nil {
				return plumbing.ZeroHash, err
			}
		}
	}
	for base, deltas := range x.refs {
		return plumbing.ZeroHash, fmt.Errorf("malformed pack: the base %s of the delta at offset %d is not in the pack", base, x.entries[deltas[0]].offset)
	}
	for _, e := range x.entries {
		if e.typ == 0 {
			return plumbing.ZeroHash, fmt.Errorf("malformed pack: the delta at offset %d has no base in the pack", e.offset)
		}
	}
	return sum, nil
}

// scan is the first pass.
func (x *packIndexer) scan() (plumbing.Hash, error) {
	_, count, err := x.sc.Header()
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("malformed pack: %w", err)
	}
	if int64(count) > x.maxObjects {
		return plumbing.ZeroHash, fmt.Errorf("the pack holds %d objects, more than %d (one per %d bytes of repo.maxFetch); refusing it", count, x.maxObjects, objectBytes)
	}
	x.entries = make([]packEntry, 0, min(count, 1<<16))
	for range count {
		if err := x.ctx.Err(); err != nil {
			return plumbing.ZeroHash, err
		}
		h, err := x.sc.NextObjectHeader()
		if err != nil {
			return plumbing.ZeroHash, fmt.Errorf("malformed pack: %w", err)
		}
		if err := x.unpack(h.Length); err != nil {
			return plumbing.ZeroHash, err
		}
		i := int32(len(x.entries))
		e := packEntry{offset: h.Offset, stored: h.Type, child: -1, next: -1}
		var n int64
		switch h.Type {
		case plumbing.CommitObject, plumbing.TreeObject, plumbing.BlobObject, plumbing.TagObject:
			hasher := plumbing.NewHasher(h.Type, h.Length)
			n, e.crc, err = x.sc.NextObject(hasher)
			e.hash, e.typ = hasher.Sum(), h.Type
		case plumbing.OFSDeltaObject:
			n, e.crc, err = x.sc.NextObject(io.Discard)
			b := sort.Search(len(x.entries), func(j int) bool { return x.entries[j].offset >= h.OffsetReference })
			if b == len(x.entries) || x.entries[b].offset != h.OffsetReference {
				return plumbing.ZeroHash, fmt.Errorf("malformed pack: the delta at offset %d names no object as its base", h.Offset)
			}
			e.next, x.entries[b].child = x.entries[b].child, i
		case plumbing.REFDeltaObject:
			n, e.crc, err = x.sc.NextObject(io.Discard)
			if x.refs == nil {
				x.refs = map[plumbing.Hash][]int32{}
			}
			x.refs[h.Reference] = append(x.refs[h.Reference], i)
		default:
			return plumbing.ZeroHash, fmt.Errorf("malformed pack: the object at offset %d has type %v", h.Offset, h.Type)
		}
		if err == nil && n != h.Length {
			err = fmt.Errorf("%d bytes, not the %d its header says", n, h.Length)
		}
		if err != nil {
			return plumbing.ZeroHash, fmt.Errorf("malformed pack: the object at offset %d: %w", h.Offset, err)
		}
		x.entries = append(x.entries, e)
	}
	sum, err := x.sc.Checksum()
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("malformed pack: %w", err)
	}
	return sum, nil
}

// linkRefs links the REF_DELTAs whose base is a whole object of the pack;
// one based on a delta is linked when that delta is resolved.
func (x *packIndexer) linkRefs() {
	if len(x.refs) == 0 {
		return
	}
	for i, e := range x.entries {
		if !isDelta(e.stored) {
			x.linkRefsTo(int32(i))
		}
	}
}

// linkRefsTo links the REF_DELTAs that name resolved entry b as their base.
func (x *packIndexer) linkRefsTo(b int32) {
	h := x.entries[b].hash
	for _, i := range x.refs[h] {
		x.entries[i].next, x.entries[b].child = x.entries[b].child, i
	}
	delete(x.refs, h)
}

// unpack counts n more bytes unpacked.
func (x *packIndexer) unpack(n int64) error {
	if x.unpacked += n; x.unpacked > x.maxUnpacked {
		return fmt.Errorf("the pack unpacks to more than %s (%d × repo.maxFetch); refusing it", formatSize(x.maxUnpacked), unpackFactor)
	}
	return nil
}

// resolveBase resolves the deltas based on whole object b.
func (x *packIndexer) resolveBase(b int32) error {
	e := x.entries[b]
	h, err := x.sc.SeekObjectHeader(e.offset)
	if err != nil {
		return err
	}
	data, err := x.hold(h.Length)
	if err != nil {
		return err
	}
	rc, err := x.sc.ReadObject()
	if err != nil {
		data.release()
		return err
	}
	n, err := io.CopyBuffer(data, rc, x.buf)
	_ = rc.Close()
	if err == nil && n != h.Length {
		err = fmt.Errorf("malformed pack: the object at offset %d changed size", e.offset)
	}
	if err != nil {
		data.release()
		return err
	}
	return x.resolveChildren(b, data, 1)
}

// resolveChildren resolves the deltas based on entry b, whose content is
// data, and the deltas based on those in turn. It releases data, as soon as
// the last of them has been resolved.
func (x *packIndexer) resolveChildren(b int32, data *heldData, depth int) error {
	defer data.release()
	if depth > maxDeltaDepth {
		return fmt.Errorf("malformed pack: a delta chain is longer than %d", maxDeltaDepth)
	}
	for c := x.entries[b].child; c >= 0; c = x.entries[c].next {
		kept, err := x.resolveDelta(c, x.entries[b].typ, data)
		if err != nil {
			return err
		}
		if kept == nil {
			continue
		}
		if x.entries[c].next < 0 {
			data.release() // a chain holds two objects at a time, not all of it
		}
		if err := x.resolveChildren(c, kept, depth+1); err != nil {
			return err
		}
	}
	return nil
}

// resolveDelta applies delta c to base, an object of type typ, to learn
// c's hash. When deltas are based on c, it returns c's content.
func (x *packIndexer) resolveDelta(c int32, typ plumbing.ObjectType, base *heldData) (*heldData, error) {
	e := &x.entries[c]
	for {
		kept, err := x.applyDelta(c, typ, base, e.child >= 0)
		if err != nil {
			return nil, err
		}
		x.linkRefsTo(c)
		if kept != nil || e.child < 0 {
			return kept, nil
		}
		// A REF_DELTA just linked names c as its base: apply c again, keeping it.
	}
}

func (x *packIndexer) applyDelta(c int32, typ plumbing.ObjectType, base *heldData, keep bool) (kept *heldData, err error) {
	if err := x.ctx.Err(); err != nil {
		return nil, err
	}
	e := &x.entries[c]
	h, err := x.sc.SeekObjectHeader(e.offset)
	if err != nil {
		return nil, err
	}
	deltaSize := h.Length
	rc, err := x.sc.ReadObject()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	if x.deltaReader == nil {
		x.deltaReader = bufio.NewReaderSize(rc, 64<<10)
	} else {
		x.deltaReader.Reset(rc)
	}
	d := x.deltaReader
	srcSize, err1 := readDeltaSize(d)
	size, err2 := readDeltaSize(d)
	switch {
	case err1 != nil || err2 != nil:
		return nil, fmt.Errorf("malformed pack: the delta at offset %d: %w", e.offset, errors.Join(err1, err2))
	case srcSize != base.size:
		return nil, fmt.Errorf("malformed pack: the delta at offset %d is for a base of %d bytes, not %d", e.offset, srcSize, base.size)
	}
	if err := x.unpack(size); err != nil {
		return nil, err
	}
	hasher := plumbing.NewHasher(typ, size)
	w := io.Writer(hasher)
	if keep {
		if kept, err = x.hold(size); err != nil {
			return nil, err
		}
		defer func() {
			if err != nil {
				kept.release()
			}
		}()
		w = io.MultiWriter(hasher, kept)
	}
	if err := x.patch(w, base, d, size); err != nil {
		return nil, fmt.Errorf("malformed pack: the delta at offset %d: %w", e.offset, err)
	}
	e.hash, e.typ = hasher.Sum(), typ
	if deltaSize > maxDelta {
		return nil, fmt.Errorf("%s %s is stored as a delta of %s, more than the %s baton reads; refusing the pack", typ, e.hash, formatSize(deltaSize), formatSize(maxDelta))
	}
	return kept, nil
}

var errBadDelta = errors.New("invalid delta")

// readDeltaSize reads one of the two sizes that start a delta.
func readDeltaSize(r io.ByteReader) (int64, error) {
	var n int64
	for shift := 0; ; shift += 7 {
		b, err := r.ReadByte()
		if err != nil {
			return 0, errBadDelta
		}
		if shift > 56 {
			return 0, errBadDelta
		}
		n |= int64(b&0x7f) << shift
		if b&0x80 == 0 {
			return n, nil
		}
	}
}

// patch writes the size bytes that delta d makes of base into w: git's
// delta format, copies from base and literal inserts.
func (x *packIndexer) patch(w io.Writer, base *heldData, d *bufio.Reader, size int64) error {
	for left, ops := size, 0; left > 0; ops++ {
		if ops%4096 == 0 {
			if err := x.ctx.Err(); err != nil {
				return err
			}
		}
		cmd, err := d.ReadByte()
		if err != nil {
			return errBadDelta
		}
		switch {
		case cmd&0x80 != 0: // copy from base
			var off, n int64
			for i := range 7 {
				if cmd&(1<<i) == 0 {
					continue
				}
				b, err := d.ReadByte()
				if err != nil {
					return errBadDelta
				}
				if i < 4 {
					off |= int64(b) << (8 * i)
				} else {
					n |= int64(b) << (8 * (i - 4))
				}
			}
			if n == 0 {
				n = 0x10000
			}
			if n > left || off+n > base.size {
				return errBadDelta
			}
			if err := base.copyTo(w, off, n, x.buf); err != nil {
				return err
			}
			left -= n
		case cmd != 0: // insert cmd bytes
			n := int64(cmd)
			if n > left {
				return errBadDelta
			}
			if _, err := io.ReadFull(d, x.buf[:n]); err != nil {
				return errBadDelta
			}
			if _, err := w.Write(x.buf[:n]); err != nil {
				return err
			}
			left -= n
		default:
			return errBadDelta
		}
	}
	if _, err := d.ReadByte(); err != io.EOF {
		if err == nil {
			err = errBadDelta // more delta after its object was complete
		}
		return err
	}
	return nil
}

// heldData is the content of a delta base while the deltas on it are
// resolved: in memory when small, in a scratch file otherwise.
type heldData struct {
	x    *packIndexer
	size int64
	mem  []byte
	file *os.File
	n    int64 // bytes written to file
	done bool
}

// hold makes room for an object of size bytes.
func (x *packIndexer) hold(size int64) (*heldData, error) {
	d := &heldData{x: x, size: size}
	if size <= largeObject && x.held+size <= maxHeld {
		x.held += size
		d.mem = make([]byte, 0, size)
		return d, nil
	}
	if x.scratch+size > x.maxScratch {
		return nil, fmt.Errorf("the pack needs more than %s of scratch space for its large delta bases (%d × repo.maxFetch); refusing it", formatSize(x.maxScratch), scratchFactor)
	}
	f, err := os.CreateTemp(x.dir, tmpPrefix+"base_")
	if err != nil {
		return nil, err
	}
	x.scratch += size
	d.file = f
	return d, nil
}

func (d *heldData) Write(p []byte) (int, error) {
	if d.file == nil {
		if int64(len(d.mem)+len(p)) > d.size {
			return 0, errBadDelta
		}
		d.mem = append(d.mem, p...)
		return len(p), nil
	}
	if d.n+int64(len(p)) > d.size {
		return 0, errBadDelta
	}
	n, err := d.file.Write(p)
	d.n += int64(n)
	return n, err
}

// copyTo writes n bytes of d from off into w, through buf.
func (d *heldData) copyTo(w io.Writer, off, n int64, buf []byte) error {
	if d.file == nil {
		_, err := w.Write(d.mem[off : off+n])
		return err
	}
	for n > 0 {
		k, err := d.file.ReadAt(buf[:min(n, int64(len(buf)))], off)
		if k == 0 && err != nil {
			return err
		}
		if _, err := w.Write(buf[:k]); err != nil {
			return err
		}
		off += int64(k)
		n -= int64(k)
	}
	return nil
}

// release gives back what d holds; it may be called again.
func (d *heldData) release() {
	if d.done {
		return
	}
	d.done = true
	if d.file == nil {
		d.x.held -= d.size
		d.mem = nil
		return
	}
	d.x.scratch -= d.size
	_ = d.file.Close()
	_ = os.Remove(d.file.Name())
}

// writeIndex writes the index of the pack, git's .idx version 2: the
// objects sorted by hash, with their CRC and offset. It sorts x.entries,
// which are of no other use by then. An object the pack holds twice is
// listed once, at its first offset.
func (x *packIndexer) writeIndex(w io.Writer, sum plumbing.Hash) error {
	e := x.entries
	slices.SortFunc(e, func(a, b packEntry) int {
		if c := bytes.Compare(a.hash[:], b.hash[:]); c != 0 {
			return c
		}
		return cmp.Compare(a.offset, b.offset)
	})
	e = slices.CompactFunc(e, func(a, b packEntry) bool { return a.hash == b.hash })

	h := sha1.New()
	bw := bufio.NewWriter(io.MultiWriter(w, h))
	u32 := func(v uint32) { _ = binary.Write(bw, binary.BigEndian, v) }
	bw.Write([]byte{0xff, 't', 'O', 'c'})
	u32(2)
	var fanout [256]uint32
	for _, o := range e {
		fanout[o.hash[0]]++
	}
	n := uint32(0)
	for _, c := range fanout {
		n += c
		u32(n)
	}
	for _, o := range e {
		bw.Write(o.hash[:])
	}
	for _, o := range e {
		u32(o.crc)
	}
	var large []int64 // offsets past 31 bits, in a table of their own
	for _, o := range e {
		if o.offset < 1<<31 {
			u32(uint32(o.offset))
			continue
		}
		u32(1<<31 | uint32(len(large)))
		large = append(large, o.offset)
	}
	for _, off := range large {
		_ = binary.Write(bw, binary.BigEndian, uint64(off))
	}
	bw.Write(sum[:])
	if err := bw.Flush(); err != nil {
		return err
	}
	_, err := w.Write(h.Sum(nil))
	return err
}
