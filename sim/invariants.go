package sim

import "time"

// haltSlack is how long a halt may take to reach the other hosts once its host could
// write it: a second between its tries, and a host already past its look under the
// lease (draining) when it landed.
const haltSlack = 45 * time.Second

// maxTouched bounds how long a host may stay touched by one transaction (switched and
// not yet committed or reverted), crashes and restarts included: the loop guard stops
// resuming a transaction that keeps killing the agent.
const maxTouched = 10 * time.Minute

// checkSwitch checks, as h switches to c, the promises that a switch can break:
//
//   - the lease bounds the disruption: no more than maxParallel hosts of the group are
//     between their switch and their verdict at once (a host counts from its switch
//     until it commits, reverts or crashes: a crashed host is out of service anyway);
//   - a release found bad on one host never starts on another once the halt could
//     have been written (the first host was up and reached etcd after its verdict).
func (w *World) checkSwitch(h *Host, c commit) {
	busy := 0
	for _, o := range w.hosts {
		if o != h && o.up && o.switched {
			busy++
		}
	}
	if busy >= w.cfg.MaxParallel {
		w.violate("%s switches to %s while %d other hosts are between switch and verdict (maxParallel %d)", h.name, c.rel.Version, busy, w.cfg.MaxParallel)
	}
	if v, bad := w.verdicts[c.rel.Version]; bad && v.host != h.name && v.chance >= 0 && w.clock.Elapsed() > v.chance+haltSlack {
		w.violate("%s starts %s, which failed its checks on %s at %v (its halt could be written from %v)", h.name, c.rel.Version, v.host, v.at, v.chance)
	}
}

// checkAlways checks, after every event, what must hold at any time: an idle host runs
// its last good revision and is in its load balancer (no host is left half-upgraded),
// and notes when a host that found a bad release could write its halt.
func (w *World) checkAlways() {
	now := w.clock.Elapsed()
	for _, h := range w.hosts {
		if h.up && h.txn == nil && (h.units != h.lastGood || h.drained) {
			w.violate("%s is idle but runs %s (last good %s), drained=%v", h.name, short(h.units), short(h.lastGood), h.drained)
		}
		if h.txn != nil && h.touchedSince >= 0 && now-h.touchedSince > maxTouched {
			w.violate("%s has been half-upgraded (its transaction in %s, attempt %d) for over %v", h.name, h.txn.State, h.txn.Attempts, maxTouched)
		}
	}
	for _, v := range w.verdicts {
		if v.chance < 0 && w.reachable(v.host) {
			v.chance = w.clock.Elapsed()
		}
	}
}

// reachable says whether host is up, not paused, and etcd answers it.
func (w *World) reachable(host string) bool {
	for _, h := range w.hosts {
		if h.name == host {
			return h.up && !h.paused() && w.etcd.Reachable(host)
		}
	}
	return false
}

// checkConverged checks, once the faults stopped and the fleet had time to settle,
// that the rollout finished: no transaction open, every host on the head (a good
// release, pushed last) and in its load balancer.
func (w *World) checkConverged() {
	head := w.head()
	for _, h := range w.hosts {
		switch {
		case h.txn != nil:
			w.violate("%s still has a transaction open in %s after the fleet settled", h.name, h.txn.State)
		case h.lastGood != head.id:
			w.violate("%s did not reach the head %s (%s) after the fleet settled: runs %s; quarantined %v", h.name, short(head.id), head.rel.Version, short(h.lastGood), h.quarantine[head.id])
		}
	}
}
