package agent

import (
	"context"
	"errors"
	"os"
	"time"

	"github.com/baton-fleet/baton/config"
	"github.com/baton-fleet/baton/forge"
	"github.com/baton-fleet/baton/internal/commitid"
	"github.com/baton-fleet/baton/spec"
)

// statusJob is what the fetcher reports on one commit: its groups' rollouts, or why
// the commit does not load.
type statusJob struct {
	commit   string
	rollouts []forge.Rollout
	rejected string
}

// statusReporter posts the commit statuses of the head (statuses in agent.yaml)
// from its own goroutine, so that a slow forge never holds the loop.
type statusReporter struct {
	r    *forge.Reporter
	jobs chan statusJob // the latest job; an older one waiting is replaced
	last statusJob      // the job of the last commit loaded, kept by fetchForFleet
}

// newStatusReporter is the reporter of cfg.Statuses, or nil when it is not set.
func newStatusReporter(cfg *config.Config, a *Agent) (*statusReporter, error) {
	s := cfg.Statuses
	if s == (config.Statuses{}) {
		return nil, nil
	}
	r, err := forge.New(forge.Options{Kind: forge.Kind(s.Forge), API: s.API, Repository: s.Repository, TokenFile: s.TokenFile, TargetURL: s.TargetURL, Logger: a.log})
	if err != nil {
		return nil, err
	}
	return &statusReporter{r: r, jobs: make(chan statusJob, 1)}, nil
}

// queueStatuses hands the head to the reporter, when this agent is the fleet's
// fetcher: fetchForFleet calls it after each poll, so the statuses follow the
// rollout also while this host is in a transaction of its own. The head's groups
// are loaded once per commit.
func (a *Agent) queueStatuses(ctx context.Context) {
	s := a.statuses
	if s == nil || a.head == nil || !a.head.Fetcher() {
		return
	}
	commit := a.git.Anchor()
	if commit == "" {
		return
	}
	if s.last.commit != commit {
		job, err := a.statusJobOf(ctx, commit)
		if err != nil {
			a.log.Debug("commit statuses: the head does not export", "commit", commitid.ShortOrNone(commit), "err", err)
			return
		}
		s.last = job
	}
	select {
	case <-s.jobs: // replaced by the newer one
	default:
	}
	s.jobs <- s.last
}

// statusJobOf loads commit's groups and the releases they run.
func (a *Agent) statusJobOf(ctx context.Context, commit string) (statusJob, error) {
	job := statusJob{commit: commit}
	dir, err := a.export(ctx, fetcherTrees, commit)
	if err != nil {
		return job, err
	}
	repo, err := spec.LoadWith(os.DirFS(dir), spec.LoadOptions{AllowUnits: a.cfg.AllowUnits})
	if err != nil {
		job.rejected = err.Error()
		return job, nil
	}
	for _, g := range repo.Fleet.Groups {
		r := forge.Rollout{Group: g}
		for _, name := range g.Services {
			if svc := repo.Services[name]; svc != nil {
				r.Releases = append(r.Releases, name+" "+svc.Version)
			}
		}
		job.rollouts = append(job.rollouts, r)
	}
	return job, nil
}

// reportStatuses posts the jobs fetchForFleet queues until ctx ends.
func (a *Agent) reportStatuses(ctx context.Context) {
	s := a.statuses
	if s == nil {
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case job := <-s.jobs:
			a.postStatuses(ctx, job)
		}
	}
}

func (a *Agent) postStatuses(ctx context.Context, job statusJob) {
	var statuses []forge.Status
	if job.rejected != "" {
		statuses = []forge.Status{forge.Rejected(job.rejected)}
	} else {
		sctx, cancel := context.WithTimeout(ctx, etcdCallTimeout)
		snap, err := a.fleet.store.Snapshot(sctx)
		cancel()
		if err != nil {
			a.log.Warn("commit statuses: read the fleet state", "err", err)
			return
		}
		statuses = forge.Compute(job.commit, job.rollouts, snap, time.Now())
	}
	if err := a.statuses.r.Report(ctx, job.commit, statuses); err != nil && !errors.Is(err, context.Canceled) {
		a.log.Warn("commit statuses not all posted; posting them again at the next turn", "commit", commitid.ShortOrNone(job.commit), "err", err)
	}
}
