package agent

// checkSync checks the keys of the fetch: repo.sharedHead needs the etcd backend,
// and listen.webhook, when set, an address and a secret.
func (c *Config) checkSync(k *configCheck) {
	if c.Repo.SharedHead && c.Lease.Backend != LeaseEtcd {
		k.fail("true needs lease.backend etcd, through which the head is shared; leave it out", "repo", "sharedHead")
	}
	w := c.Listen.Webhook
	if !k.doc.Has("listen", "webhook") && w == (WebhookListenConfig{}) {
		return
	}
	at := []any{"listen", "webhook"}
	if w.Address == "" {
		k.failBeside(at, "required: the host:port the forge sends push events to", "listen", "webhook", "address")
	} else if why := badListenAddr(w.Address, ""); why != "" {
		k.fail(why, "listen", "webhook", "address")
	}
	if w.SecretFile == "" {
		k.failBeside(at, "required: the file of the secret shared with the forge", "listen", "webhook", "secretFile")
	} else {
		k.path(w.SecretFile, "listen", "webhook", "secretFile")
	}
	if w.Address != "" && w.Address == c.Listen.Metrics {
		k.fail("the address of listen.metrics", "listen", "webhook", "address")
	}
}
