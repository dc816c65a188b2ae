package sim

import (
	"errors"
	"strings"
	"time"

	"github.com/baton-fleet/baton/fleet"
	"github.com/baton-fleet/baton/lease"
)

// The host's side of the group's etcd lease, as lease.Etcd does it: a session (an etcd
// lease kept alive), a slot key bound to it, the line ranked by lease.Rank, a hold
// certain until a local deadline, and a release that abandons the session when it
// fails.

// The timeouts of the agent's etcd calls.
const (
	margin          = time.Second      // the hold's local deadline: TTL minus this after a keep-alive was sent
	etcdCallTimeout = 5 * time.Second  // a fleet-state call (agent.etcdCallTimeout)
	releaseTimeout  = 10 * time.Second // the release of the slot (agent.releaseTimeout)
	keepAliveRetry  = 500 * time.Millisecond
)

// slotsPrefix is where the group's slot keys are, one per host in line.
var slotsPrefix = prefix + "/groups/" + group + "/slots/"

// errNoSlot: the host holds no slot, or lost it.
var errNoSlot = errors.New("no slot held")

// takeSlot grants a session (once), puts the host's slot key bound to it (once), and
// says whether the key is among the first N of the line.
func (h *Host) takeSlot(done func(held bool, err error)) {
	switch {
	case h.session == 0:
		h.grant(func(err error) {
			if err != nil {
				done(false, err)
				return
			}
			h.takeSlot(done)
		})
	case h.token == 0:
		h.enqueue(func(err error) {
			if err != nil {
				done(false, err)
				return
			}
			h.placeInLine(done)
		})
	default:
		h.placeInLine(done)
	}
}

// grant asks etcd for the session's lease; its hold counts from when it was sent.
func (h *Host) grant(done func(error)) {
	var id int64
	sent := h.now()
	h.call("grant a lease", ttl, func() (err error) {
		id, err = h.w.etcd.Grant(h.name, ttl)
		return err
	}, func(err error) {
		if err == nil {
			h.w.tracef(h.name, "session %d", id)
			h.session, h.heldUntil = id, sent+ttl-margin
			h.keepAlive(id)
		}
		done(err)
	})
}

// enqueue puts the host's slot key bound to the session, or finds it there already.
func (h *Host) enqueue(done func(error)) {
	key, session := fleet.SlotKey(prefix, group, h.name), h.session
	var res TxnResult
	h.call("put the slot key", ttl, func() (err error) {
		res, err = h.w.etcd.Txn(h.name, []Cmp{Compare(key, TargetCreate, Equal, 0)}, []Op{OpPut(key, []byte(h.name), session)}, []Op{OpGet(key, false)})
		return err
	}, func(err error) {
		switch {
		case err != nil:
		case h.session != session:
			err = errors.New("session lost while putting the slot key")
		case res.Succeeded:
			h.token = res.Revision
		case len(res.Results[0].KVs) > 0 && res.Results[0].KVs[0].Lease == session:
			h.token = res.Results[0].KVs[0].CreateRevision // put by a request that timed out
		default:
			err = errors.New("the slot key is bound to another session")
		}
		done(err)
	})
}

// placeInLine reads the group's line and says whether the host's key holds a slot.
func (h *Host) placeInLine(done func(held bool, err error)) {
	token := h.token
	var res TxnResult
	h.call("read the line", ttl, func() (err error) {
		res, err = h.w.etcd.Txn(h.name, nil, []Op{OpGet(slotsPrefix, true)}, nil)
		return err
	}, func(err error) {
		if err != nil {
			done(false, err)
			return
		}
		var keys []lease.SlotKey
		for _, kv := range res.Results[0].KVs {
			keys = append(keys, lease.SlotKey{Host: strings.TrimPrefix(kv.Key, slotsPrefix), CreateRevision: kv.CreateRevision})
		}
		for _, hd := range lease.Rank(keys, h.w.cfg.MaxParallel) { // as the etcd lease ranks its line
			if hd.Host == h.name {
				done(hd.CreateRevision == token && hd.Holding, nil)
				return
			}
		}
		if h.token == token {
			h.token = 0 // gone: the session expired
		}
		done(false, errors.New("slot key gone"))
	})
}

// keepAlive renews the session's lease id a third of the TTL from now, as lease.Etcd's
// session does, while id is the host's session.
func (h *Host) keepAlive(id int64) {
	h.after(ttl/3, func() { h.renew(id) })
}

// renew sends one keep-alive: answered, the hold is certain until TTL minus the margin
// after it was sent, on the host's clock; a failed one is tried again half a second
// later; a lease etcd no longer knows ends the session.
func (h *Host) renew(id int64) {
	if h.session != id {
		return
	}
	sent := h.now()
	h.call("keep-alive", ttl/3, func() error {
		_, err := h.w.etcd.KeepAlive(h.name, id)
		return err
	}, func(err error) {
		if h.session != id {
			return
		}
		switch {
		case err == nil:
			h.heldUntil = max(h.heldUntil, sent+ttl-margin)
			h.keepAlive(id)
		case errors.Is(err, ErrLeaseNotFound):
			h.w.tracef(h.name, "session %d gone", id)
			h.session, h.token = 0, 0
		default:
			h.after(keepAliveRetry, func() { h.renew(id) })
		}
	})
}

// checkHold is lease.Etcd.Check: the hold is certain by the local deadline, the slot
// key is still this session's, and the deadline still holds once etcd answered.
func (h *Host) checkHold(done func(error)) {
	session, token := h.session, h.token
	if token == 0 || session == 0 {
		done(errNoSlot)
		return
	}
	if err := h.certain(session); err != nil {
		done(err)
		return
	}
	var kv KV
	var ok bool
	h.call("read the slot key", h.heldUntil-h.now(), func() (err error) {
		kv, ok, err = h.w.etcd.Get(h.name, fleet.SlotKey(prefix, group, h.name))
		return err
	}, func(err error) {
		switch {
		case h.certain(session) != nil:
			err = h.certain(session)
		case err != nil:
		case !ok || kv.CreateRevision != token || kv.Lease != session:
			err = errors.New("slot key gone")
		}
		done(err)
	})
}

// certain says why the hold of session is not certain now by the host's clock, or nil.
func (h *Host) certain(session int64) error {
	switch {
	case h.session != session:
		return errors.New("session lost")
	case h.now() >= h.heldUntil:
		return errors.New("the hold is not certain: no keep-alive answered within the TTL")
	}
	return nil
}

// callTimeout bounds a fleet-state call as the agent's fleetCall does: etcdCallTimeout,
// and no later than the hold's local deadline while the host holds its slot.
func (h *Host) callTimeout() time.Duration {
	if h.token != 0 && h.session != 0 {
		return min(etcdCallTimeout, h.heldUntil-h.now())
	}
	return etcdCallTimeout
}

// release deletes the slot key if it is still this session's (lease.Etcd.Release).
// When that fails, the session is abandoned: no more keep-alives, so the key expires
// within the TTL whatever etcd did with the delete.
func (h *Host) release(done func()) {
	session, token := h.session, h.token
	if token == 0 {
		done()
		return
	}
	key := fleet.SlotKey(prefix, group, h.name)
	h.call("release the slot", releaseTimeout, func() error {
		_, err := h.w.etcd.Txn(h.name, []Cmp{Compare(key, TargetCreate, Equal, token), Compare(key, TargetLease, Equal, session)}, []Op{OpDelete(key, false)}, nil)
		return err
	}, func(err error) {
		if err != nil {
			h.w.tracef(h.name, "release failed (%v): session %d abandoned", err, session)
			if h.session == session {
				h.session = 0
			}
		}
		if h.token == token {
			h.token = 0
		}
		done()
	})
}
