package config

import (
	"fmt"
	"text/template"

	"github.com/baton-fleet/baton/forge"
)

// checkSync checks the keys of the fetch and of what is told to the forge:
// repo.sharedHead needs the etcd backend, listen.webhook an address and a secret,
// statuses the forge's API and the shared head.
func (c *Config) checkSync(k *configCheck) {
	if c.Repo.SharedHead && c.Lease.Backend != LeaseEtcd {
		k.fail("true needs lease.backend etcd, through which the head is shared; leave it out", "repo", "sharedHead")
	}
	c.checkWebhook(k)
	c.checkStatuses(k)
}

// checkWebhook checks listen.webhook, when set.
func (c *Config) checkWebhook(k *configCheck) {
	w := c.Listen.Webhook
	if !k.doc.Has("listen", "webhook") && w == (WebhookListen{}) {
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

// checkStatuses checks statuses: every key but targetURL is required once the
// section is set, and the statuses are posted by the fleet's fetcher, so they need
// the shared head.
func (c *Config) checkStatuses(k *configCheck) {
	s := c.Statuses
	if !k.doc.Has("statuses") && s == (Statuses{}) {
		return
	}
	at := []any{"statuses"}
	switch forge.Kind(s.Forge) {
	case forge.GitHub, forge.Gitea, forge.GitLab:
	case "":
		k.failBeside(at, "required: github, gitea (also for Forgejo) or gitlab", "statuses", "forge")
	default:
		k.fail(fmt.Sprintf("%q is not one of github, gitea (also for Forgejo), gitlab", s.Forge), "statuses", "forge")
	}
	if s.API == "" {
		k.failBeside(at, "required: the base URL of the forge's API, such as https://api.github.com", "statuses", "api")
	} else {
		k.httpURL(s.API, "put the token in statuses.tokenFile", "statuses", "api")
	}
	if s.Repository == "" {
		k.failBeside(at, "required: owner/name (GitLab: the project's path)", "statuses", "repository")
	}
	if s.TokenFile == "" {
		k.failBeside(at, "required: the file of the token that may post commit statuses", "statuses", "tokenFile")
	} else {
		k.path(s.TokenFile, "statuses", "tokenFile")
	}
	if _, err := template.New("").Option("missingkey=error").Parse(s.TargetURL); err != nil {
		k.fail(fmt.Sprintf("not a template: %v", err), "statuses", "targetURL")
	}
	if !c.Repo.SharedHead {
		k.failBeside(at, "statuses are posted by the fleet's fetcher: they need lease.backend etcd and repo.sharedHead", "statuses")
	}
}
