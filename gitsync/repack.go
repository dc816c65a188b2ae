package gitsync

import (
	"bufio"
	"cmp"
	"context"
	"crypto/sha1"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
)

// Every fetch adds a pack and its index to objects/pack, and the clone
// would grow by a file pair per new commit: each costs its own header,
// index fan-out and disk blocks, and go-git keeps the index of every pack
// in memory and looks an object up in each in turn. Once a fetch leaves
// more than maxPacks packs, the small ones are merged into one (compact).
//
// go-git's Repository.RepackObjects is not used: it reads every object of
// under 16 KiB whole into memory at once (the whole repository, for a
// fleet repository), writes the new pack through the same go-git parser
// that storePack avoids, fsyncs nothing before it deletes the old packs,
// and keeps only what the refs reach, which would drop a commit the host
// runs once the branch was rewound away from it.
//
// compact copies the objects of the packs it merges as they are stored,
// compressed, deltas included: each pack's object section goes whole into
// the new pack, so the offsets of its deltas, which are relative to the
// delta and reach only back into the same pack, still hold. Nothing is
// dropped and nothing is deltified again. The new pack is then indexed as
// a fetched one is (indexPack: every object hashed, memory bounded), made
// durable, and only then are the merged packs removed. A crash at any
// point leaves every object in some pack: at worst a temporary file
// (removed by the next fetch or compaction), an index without its pack
// (removed by the next compaction, go-git ignores it) or objects in two
// packs (merged again later).

// maxPacks is the number of packs above which a fetch compacts the clone
// (Syncer.maxPacks). git's gc.autoPackLimit is 50; a fleet repository's
// packs are small.
const maxPacks = 32

// packFile is one pack in objects/pack.
type packFile struct {
	hash plumbing.Hash
	size int64 // of the .pack file
}

func (p packFile) path(dir, ext string) string {
	return filepath.Join(dir, "pack-"+p.hash.String()+ext)
}

// listPacks lists the packs in dir that have their index. An index whose
// pack is gone (a crash half way through installing or removing a pack) is
// returned in orphans.
func listPacks(dir string) (packs []packFile, orphans []string, err error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, err
	}
	names := map[string]bool{}
	for _, e := range entries {
		names[e.Name()] = true
	}
	for _, e := range entries {
		name := e.Name()
		hex, ok := strings.CutPrefix(name, "pack-")
		if !ok {
			continue
		}
		switch {
		case strings.HasSuffix(hex, ".idx") && !names[strings.TrimSuffix(name, ".idx")+".pack"]:
			orphans = append(orphans, filepath.Join(dir, name))
		case strings.HasSuffix(hex, ".pack"):
			hex = strings.TrimSuffix(hex, ".pack")
			base := strings.TrimSuffix(name, ".pack")
			if !plumbing.IsHash(hex) || !names[base+".idx"] || names[base+".keep"] {
				continue // not ours to merge: git's rule for .keep
			}
			fi, err := e.Info()
			if err != nil {
				return nil, nil, err
			}
			packs = append(packs, packFile{plumbing.NewHash(hex), fi.Size()})
		}
	}
	return packs, orphans, nil
}

// toMerge picks the packs to merge out of packs: all of them but the
// largest ones, each of which is kept while it is more than twice as large
// as all the packs smaller than it together. The large pack of the first
// clone is so copied once in a while, not at every compaction; the packs
// merged grow geometrically, so an object is copied a few times over the
// life of the clone. Nil when there are too few packs.
func toMerge(packs []packFile, limit int) []packFile {
	if len(packs) <= limit {
		return nil
	}
	sorted := slices.Clone(packs)
	slices.SortFunc(sorted, func(a, b packFile) int {
		return cmp.Or(cmp.Compare(b.size, a.size), strings.Compare(a.hash.String(), b.hash.String()))
	})
	var rest int64
	for _, p := range sorted {
		rest += p.size
	}
	keep := 0
	for ; keep < len(sorted); keep++ {
		rest -= sorted[keep].size
		if sorted[keep].size <= 2*rest {
			break
		}
	}
	if merge := sorted[keep:]; len(merge) >= 2 {
		return merge
	}
	return nil
}

// compact merges the small packs of the clone into one when there are more
// than s.maxPacks, and removes what a crash left. It returns the packs and
// bytes before and after, for the log. s.mu is held.
func (s *Syncer) compact(ctx context.Context) (before, after packStats, err error) {
	dir := filepath.Join(s.opts.Dir, "objects", "pack")
	packs, orphans, err := listPacks(dir)
	if err != nil {
		return before, after, err
	}
	before = statsOf(packs)
	merge := toMerge(packs, s.maxPacks)
	if merge == nil {
		return before, before, nil
	}
	for _, o := range orphans {
		if err := os.Remove(o); err != nil && !errors.Is(err, os.ErrNotExist) {
			return before, before, err
		}
	}
	if err := removeTemps(dir); err != nil {
		return before, before, err
	}
	sum, err := mergePacks(ctx, dir, merge, s.opts.MaxFetch)
	if err != nil {
		return before, before, err
	}
	// Durable now: the merged packs can go, each pack before its index.
	var errs []error
	for _, p := range merge {
		if p.hash == sum {
			continue
		}
		for _, ext := range []string{".pack", ".idx"} {
			if err := os.Remove(p.path(dir, ext)); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	// The objects read so far may name the merged packs.
	s.objects.Clear()
	s.store.Reindex()
	errs = append(errs, syncFile(dir))
	if packs, _, err := listPacks(dir); err == nil {
		after = statsOf(packs)
	}
	return before, after, errors.Join(errs...)
}

// packStats counts packs and their bytes, indexes included.
type packStats struct {
	packs int
	bytes int64
}

func statsOf(packs []packFile) packStats {
	st := packStats{packs: len(packs)}
	for _, p := range packs {
		st.bytes += p.size
	}
	return st
}

// compactAfterFetch compacts the clone and logs what it did; an error is
// logged, not returned: the fetch succeeded and the clone stays usable.
// s.mu is held.
func (s *Syncer) compactAfterFetch(ctx context.Context) {
	start := time.Now()
	before, after, err := s.compact(ctx)
	switch {
	case err != nil:
		s.log.Warn("could not compact the local repository; it stays as it is", "packs", before.packs, "err", err)
	case after != before:
		s.log.Info("compacted the local repository", "packs_before", before.packs, "packs_after", after.packs,
			"pack_bytes_before", before.bytes, "pack_bytes_after", after.bytes, "took", time.Since(start).Round(time.Millisecond))
	}
}

// mergePacks writes one pack holding the objects of packs, indexes it and
// installs it in dir. It returns the new pack's checksum.
func mergePacks(ctx context.Context, dir string, packs []packFile, maxFetch int64) (plumbing.Hash, error) {
	var count uint32
	var size int64
	for _, p := range packs {
		n, err := packCount(p.path(dir, ".pack"))
		if err != nil {
			return plumbing.ZeroHash, err
		}
		if uint64(count)+uint64(n) > math.MaxUint32 {
			return plumbing.ZeroHash, errors.New("too many objects for one pack")
		}
		count += n
		size += p.size
	}
	held := func(install func() error) error { return install() } // the compaction holds s.mu throughout
	return writePack(dir, held, func(f *os.File) (*packIndexer, plumbing.Hash, error) {
		if err := concatPacks(ctx, f, dir, packs, count); err != nil {
			return nil, plumbing.ZeroHash, err
		}
		// The objects were all indexed once, under the bounds of their fetch;
		// the bounds here only keep a damaged pack from costing without end.
		x, sum, err := indexPackWithin(ctx, f, dir, packBounds{
			objects:  int64(count),
			unpacked: math.MaxInt64,
			scratch:  scratchFactor * max(maxFetch, size),
		})
		if err != nil {
			return nil, sum, fmt.Errorf("index the merged pack: %w", err)
		}
		return x, sum, nil
	})
}

// concatPacks writes into f one pack of count objects: the objects of packs, copied
// as they are stored, behind a new header and followed by the new checksum.
func concatPacks(ctx context.Context, f *os.File, dir string, packs []packFile, count uint32) error {
	h := sha1.New()
	w := bufio.NewWriterSize(io.MultiWriter(f, h), 64<<10)
	hdr := []byte{'P', 'A', 'C', 'K', 0, 0, 0, 2, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(hdr[8:], count)
	if _, err := w.Write(hdr); err != nil {
		return err
	}
	for _, p := range packs {
		if err := copyObjects(ctx, w, p.path(dir, ".pack"), p.size); err != nil {
			return err
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	_, err := f.Write(h.Sum(nil))
	return err
}

// packCount reads the number of objects in the header of pack file path.
func packCount(path string) (uint32, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var hdr [12]byte
	if _, err := io.ReadFull(f, hdr[:]); err != nil {
		return 0, fmt.Errorf("%s: %w", filepath.Base(path), err)
	}
	if string(hdr[:4]) != "PACK" || binary.BigEndian.Uint32(hdr[4:8]) != 2 {
		return 0, fmt.Errorf("%s: not a version 2 pack", filepath.Base(path))
	}
	return binary.BigEndian.Uint32(hdr[8:]), nil
}

// copyObjects writes the object section of pack file path, of size bytes:
// all but its 12-byte header and 20-byte checksum.
func copyObjects(ctx context.Context, w io.Writer, path string, size int64) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if size < 32 {
		return fmt.Errorf("%s: too short for a pack", filepath.Base(path))
	}
	r := io.NewSectionReader(f, 12, size-32)
	_, err = io.Copy(w, ctxReader{ctx, r})
	return err
}

// ctxReader stops reading once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
