package gitsync

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync/atomic"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp/capability"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp/sideband"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/plumbing/transport/client"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
)

// A poll speaks git's upload-pack protocol itself, over one go-git
// transport session: list the refs, then, when the branch moved to a commit
// not here, ask for it and store the pack that answers (storePack). go-git's
// Remote.Fetch would do the same, but it stores the pack with a parser that
// reads every object whole into memory, and it takes its http client from a
// process-wide table (client.InstallProtocol), where no per-poll byte limit
// can be set.

// The smallest and the largest Options.MaxFetch.
const (
	minMaxFetch = 1 << 20
	maxMaxFetch = 16 << 30
)

// maxHaves bounds the commits a fetch names as already here, walking back
// from each local head; go-git sends as many. The server needs only one it
// knows to leave out everything behind it.
const maxHaves = 100

// errOverLimit is what a read fails with once a poll has read more than
// its limit; Poll reports fetchLimit.refusal instead.
var errOverLimit = errors.New("fetch limit reached")

// fetchLimit counts the bytes one poll reads against Options.MaxFetch.
// The readers it makes share the count.
type fetchLimit struct {
	max  int64
	used atomic.Int64
}

func (l *fetchLimit) exceeded() bool { return l.used.Load() > l.max }

// refusal is the error of a poll that went over the limit.
func (l *fetchLimit) refusal(what string) error {
	return fmt.Errorf("%s brought more than %s (repo.maxFetch); refusing it", what, formatSize(l.max))
}

// reader returns r counting its bytes against l; a read past the limit
// returns what fits and errOverLimit.
func (l *fetchLimit) reader(r io.Reader) io.Reader { return &limitedReader{r: r, l: l} }

type limitedReader struct {
	r io.Reader
	l *fetchLimit
}

func (r *limitedReader) Read(p []byte) (int, error) {
	if r.l.exceeded() {
		return 0, errOverLimit
	}
	n, err := r.r.Read(p)
	if over := r.l.used.Add(int64(n)) - r.l.max; over > 0 {
		return n - int(min(over, int64(n))), errOverLimit
	}
	return n, err
}

// limitedTransport counts every response body of one poll against its
// limit: the ref advertisement, the negotiation and the pack.
type limitedTransport struct {
	base  http.RoundTripper
	limit *fetchLimit
}

func (t *limitedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	if resp.ContentLength > t.limit.max-t.limit.used.Load() {
		// Announced too large: refuse before reading any of it.
		_ = resp.Body.Close()
		t.limit.used.Add(resp.ContentLength)
		return nil, errOverLimit
	}
	resp.Body = struct {
		io.Reader
		io.Closer
	}{t.limit.reader(resp.Body), resp.Body}
	return resp, nil
}

// session opens an upload-pack session with the remote for one poll.
func (s *Syncer) session(auth transport.AuthMethod, lim *fetchLimit) (transport.UploadPackSession, error) {
	ep, err := transport.NewEndpoint(s.opts.URL)
	if err != nil {
		return nil, err
	}
	var c transport.Transport
	switch s.scheme {
	case "http", "https":
		c = githttp.NewClient(&http.Client{Transport: &limitedTransport{base: s.http, limit: lim}})
	default: // ssh, file
		if c, err = client.NewClient(ep); err != nil {
			return nil, err
		}
	}
	return c.NewUploadPackSession(ep, auth)
}

// fetch asks the server of sess, which listed refs with capabilities caps,
// for want and what it lacks here, and stores the pack that answers. Over
// ssh and file, the pack is counted against lim (over http the response
// bodies are). s.polls is held, and s.mu only while the repository is read
// (haves) and the pack installed (storePack).
func (s *Syncer) fetch(ctx context.Context, sess transport.UploadPackSession, caps *capability.List, want plumbing.Hash, lim *fetchLimit) (err error) {
	req := packp.NewUploadPackRequestFromCapabilities(caps) // no thin packs: go-git's sessions drop that capability
	if caps.Supports(capability.NoProgress) {
		if err := req.Capabilities.Set(capability.NoProgress); err != nil {
			return err
		}
	}
	req.Wants = []plumbing.Hash{want}
	if err := s.locked(func() (err error) { req.Haves, err = s.haves(); return err }); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	resp, err := sess.UploadPack(ctx, req)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			// A local git-upload-pack still writing the rest of the pack would
			// block the Close below, which waits for it. go-git kills it when a
			// read fails: cancel, then read until one does.
			cancel()
			buf := make([]byte, 32<<10)
			for range 1024 {
				if _, rerr := resp.Read(buf); rerr != nil {
					break
				}
			}
		}
		_ = resp.Close()
	}()
	var r io.Reader = resp
	switch {
	case req.Capabilities.Supports(capability.Sideband64k):
		r = sideband.NewDemuxer(sideband.Sideband64k, resp)
	case req.Capabilities.Supports(capability.Sideband):
		r = sideband.NewDemuxer(sideband.Sideband, resp)
	}
	if s.scheme != "http" && s.scheme != "https" {
		r = lim.reader(r)
	}
	return s.storePack(ctx, r)
}

// haves lists the commits here that the server may know: the accepted
// head, the one last fetched, and up to maxHaves ancestors of each. s.mu is
// held.
func (s *Syncer) haves() ([]plumbing.Hash, error) {
	var haves []plumbing.Hash
	for _, name := range []plumbing.ReferenceName{s.acceptedRef(), s.trackingRef()} {
		ref, err := s.repo.Storer.Reference(name)
		if errors.Is(err, plumbing.ErrReferenceNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		queue := []plumbing.Hash{ref.Hash()}
		for n := 0; len(queue) > 0 && n < maxHaves; n++ {
			h := queue[0]
			queue = queue[1:]
			if slices.Contains(haves, h) {
				continue
			}
			c, err := loadCommit(s.repo.Storer, h)
			if err != nil {
				break // a commit that does not read is not a have; those before it are enough
			}
			haves = append(haves, h)
			queue = append(queue, c.ParentHashes...)
		}
	}
	return haves, nil
}
