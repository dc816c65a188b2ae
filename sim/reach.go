package sim

// Reachable says whether client's requests reach a working cluster now: it is not
// partitioned, and the cluster is up. For the invariant checker, not for clients.
func (e *Etcd) Reachable(client string) bool {
	return !e.down && !e.client(client).partitioned
}

// Partitioned says whether client is cut off from the cluster now: what it sends and
// what is sent to it is lost. For the simulated network, not for clients.
func (e *Etcd) Partitioned(client string) bool { return e.client(client).partitioned }
