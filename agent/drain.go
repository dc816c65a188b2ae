package agent

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/baton-fleet/baton/drain"
	"github.com/baton-fleet/baton/internal/commitid"
	"github.com/baton-fleet/baton/rollback"
	"github.com/baton-fleet/baton/spec"
)

// drainers returns the drainers of the changed services, as the target revision
// renders them for this host.
func (a *Agent) drainers(changed []*spec.Rendered) []drain.Drainer {
	var out []drain.Drainer
	for _, r := range changed {
		if r.Drain != nil {
			out = append(out, drain.NewWithState(r.Drain, filepath.Join(a.cfg.Paths.State, "drain"), a.log.With("service", r.Name)))
		}
	}
	return out
}

// drainAll takes the host out of its load balancers, for every changed service. On
// an error it puts back what it drained and returns the error: nothing restarted.
func (a *Agent) drainAll(ctx context.Context, ds []drain.Drainer) error {
	for i, d := range ds {
		if err := d.Drain(ctx); err != nil {
			_ = a.undrainAll(context.WithoutCancel(ctx), ds[:i+1])
			return err
		}
	}
	return nil
}

// undrainAll puts the host back into its load balancers. It tries every drainer and
// returns the errors together.
func (a *Agent) undrainAll(ctx context.Context, ds []drain.Drainer) error {
	var errs []error
	for _, d := range ds {
		if err := d.Undrain(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// undrainTxn undrains the services of a transaction whose target spec must be loaded
// again (after a crash, or after a revert).
func (a *Agent) undrainTxn(ctx context.Context, txn *rollback.Txn) error {
	hs, _, err := a.load(ctx, txn.To)
	if err != nil {
		return fmt.Errorf("load %s to undrain: %w", commitid.ShortOrNone(txn.To), err)
	}
	return a.undrainAll(ctx, a.drainers(changedServices(hs, txn)))
}
