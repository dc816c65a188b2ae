// Package sharedhead lets one elected agent of a fleet poll the git server and publish the verified head in etcd, which every other agent watches.
package sharedhead

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/baton-fleet/baton/internal/commitid"
	"github.com/baton-fleet/baton/internal/strictjson"
)

// Head is the value at HeadKey: the branch head the elected fetcher last polled
// and verified.
type Head struct {
	Commit string    `json:"commit"` // a full commit id (commitid.IsFull)
	By     string    `json:"by"`     // the host of the fetcher that wrote it
	Time   time.Time `json:"time"`   // when it last confirmed it, by its clock (for people: agents judge freshness by their own)
	// Failed is why the fetcher's last poll failed (the git server refused it, the
	// branch was rewound, ...): Commit is then still the last head it verified, and
	// the write tells the followers that the fetcher is alive and that polling the
	// server themselves would meet the same. Empty after a poll that succeeded.
	Failed string `json:"failed,omitempty"`
}

// maxFailed bounds Head.Failed, in bytes; a longer reason is cut.
const maxFailed = 512

// Sync is the value at SyncKey: a request that the fetcher poll now.
type Sync struct {
	By   string    `json:"by"`
	Why  string    `json:"why,omitempty"`
	Time time.Time `json:"time"`
}

// HeadKey is where the head of branch is published under prefix.
func HeadKey(prefix, branch string) string { return prefix + "/head/" + branch }

// SyncKey is the key whose every write asks the fetcher of branch to poll now.
func SyncKey(prefix, branch string) string { return prefix + "/sync/" + branch }

// TurnKey is the key an agent writes, by compare-and-swap, to take the turn to
// stand in the election of branch's fetcher (waitForTurn). Its value is the host
// that took it last, for people.
func TurnKey(prefix, branch string) string { return prefix + "/fetcher-turn/" + branch }

// electionPrefix is the prefix of the candidates' keys of branch's election, each
// electionPrefix/<lease id in hex> (concurrency.Election adds the "/").
func electionPrefix(prefix, branch string) string { return prefix + "/fetcher/" + branch }

// maxValue bounds a value read from etcd; a head is under 200 bytes.
const maxValue = 4096

// ParseHead reads a published head. Anyone with write access to the prefix may
// have written the key: a value that is not a JSON object naming a full commit id
// is an error that quotes a bounded part of it.
func ParseHead(value []byte) (Head, error) {
	var h Head
	if len(value) > maxValue {
		return h, fmt.Errorf("head record of %d bytes, over %d", len(value), maxValue)
	}
	switch err := strictjson.Decode(value, &h); {
	case errors.Is(err, strictjson.ErrTrailing):
		return Head{}, fmt.Errorf("head record %s: more than one JSON value", quote(value))
	case err != nil:
		return Head{}, fmt.Errorf("head record %s: not a JSON head (commit, by, time)", quote(value))
	}
	if !commitid.IsFull(h.Commit) {
		return Head{}, fmt.Errorf("head record %s: commit is not a full commit id (40 or 64 lower-case hex digits)", quote(value))
	}
	return h, nil
}

func quote(v []byte) string {
	const max = 64
	if len(v) > max {
		return strconv.Quote(string(v[:max])) + "..."
	}
	return strconv.Quote(string(v))
}

// ErrRewind is returned by Publish for a commit that does not descend from the
// published head: the fetcher never moves the shared head backwards or sideways.
var ErrRewind = errors.New("does not descend from the published head")

// StaleAfter is how long a follower trusts the published head without hearing
// from the fetcher: the fetcher confirms it at each of its polls (every poll, plus
// at most a tenth), so three intervals mean it missed two, or lost etcd, or died;
// and never less than what an election takes after the fetcher's death (ttl), plus
// one poll.
func StaleAfter(poll, ttl time.Duration) time.Duration {
	return max(3*poll, ttl+poll)
}

// Jitter is the wait before a regular poll: every, plus up to a tenth of it drawn
// at random (Zincati and Flux spread their fleets likewise), so that agents started
// together drift apart and the git server never sees more than one poll an interval
// from each.
func Jitter(every time.Duration) time.Duration {
	if every <= 0 {
		return 0
	}
	return every + rand.N(every/10+1)
}

// FullJitter is the wait before an agent's own poll once the shared head is
// stale: anywhere from half an interval to one and a half, so that a fleet that
// lost its fetcher at one instant does not poll the git server in step, and still
// polls once an interval on average.
func FullJitter(every time.Duration) time.Duration {
	if every <= 0 {
		return 0
	}
	return every/2 + rand.N(every+1)
}

// StandDelay is how long an agent that saw an opening in the election waits
// before it tries to take the turn to stand: anywhere up to spread (the TTL, more
// after a turn lost). A fleet of N agents that saw the same opening tries over a
// whole spread: the first within spread/N, and the rest mostly see its turn taken
// before their own comes. Nothing waits on it: the fetcher's successor already
// stands (Candidates), and a candidate missing is replaced within a TTL or so, as
// long as a dead one takes to be noticed.
func StandDelay(spread time.Duration) time.Duration {
	if spread <= 0 {
		return 0
	}
	return rand.N(spread)
}

// Role is what an agent is in the sharing of the head.
type Role int

const (
	// Follower: another agent fetches; this one fetches when the published head
	// moves past its own, or when it has not heard from the fetcher for
	// StaleAfter.
	Follower Role = iota
	// Fetcher: the elected agent, which polls and publishes.
	Fetcher
)

// View is what an agent knows of the shared head at one instant: the input of
// OwnPoll.
type View struct {
	Role     Role
	Poll     time.Duration // the agent's poll interval
	TTL      time.Duration // the election's session TTL
	SinceAck time.Duration // since the fetcher was last heard (a write of the head), on this agent's clock
	Heard    bool          // the fetcher was heard at all since the agent started
}

// OwnPoll decides whether the agent polls the git server at its next regular turn
// and how long that turn waits. The fetcher polls every interval with Jitter. A
// follower that heard the fetcher within StaleAfter does not poll (the watch
// wakes it for a new head) and keeps the regular turn for the rest of its loop; a
// follower that did not falls back to its own poll with FullJitter.
func OwnPoll(v View) (poll bool, wait time.Duration) {
	if v.Role == Fetcher {
		return true, Jitter(v.Poll)
	}
	if v.Heard && v.SinceAck <= StaleAfter(v.Poll, v.TTL) {
		return false, Jitter(v.Poll)
	}
	return true, FullJitter(v.Poll)
}
