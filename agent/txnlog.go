package agent

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"

	"github.com/baton-fleet/baton/internal/commitid"
	"github.com/baton-fleet/baton/rollback"
)

// txnAttrs are the attributes of the open transaction that every log line carries,
// whoever logs it (the loop, the stager, the drain, the lease): an operator greps
// the journal for a commit or a service and sees the whole story, step by step.
type txnAttrs struct {
	id, group, commit, from, service, step string
}

// txnLog holds the open transaction's attributes; nil when the agent is idle.
type txnLog struct{ cur atomic.Pointer[txnAttrs] }

// track records that txn is open and in its current state.
func (l *txnLog) track(txn *rollback.Txn) {
	l.cur.Store(&txnAttrs{
		id: txn.ID, group: txn.Group, commit: commitid.ShortOrNone(txn.To), from: commitid.ShortOrNone(txn.From),
		service: strings.Join(txn.Services, ","), step: string(txn.State),
	})
}

// done records that no transaction is open.
func (l *txnLog) done() { l.cur.Store(nil) }

// handler wraps h so that each record logged while a transaction is open carries
// txn, group, commit, from, service and step. Records made with those keys already
// (With("commit", ...)) keep theirs and get the rest.
func (l *txnLog) handler(h slog.Handler) slog.Handler { return &txnHandler{h: h, log: l} }

type txnHandler struct {
	h    slog.Handler
	log  *txnLog
	have map[string]bool // keys set by WithAttrs, not to be repeated
}

func (t *txnHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return t.h.Enabled(ctx, level)
}

func (t *txnHandler) Handle(ctx context.Context, r slog.Record) error {
	a := t.log.cur.Load()
	if a == nil {
		return t.h.Handle(ctx, r)
	}
	fields := [...][2]string{
		{"txn", a.id}, {"group", a.group}, {"commit", a.commit}, {"from", a.from},
		{"service", a.service}, {"step", a.step},
	}
	r.Attrs(func(at slog.Attr) bool {
		for i := range fields {
			if fields[i][0] == at.Key {
				fields[i][1] = "" // the record's own value stands
			}
		}
		return true
	})
	r = r.Clone()
	for _, kv := range fields {
		if kv[1] != "" && !t.have[kv[0]] {
			r.AddAttrs(slog.String(kv[0], kv[1]))
		}
	}
	return t.h.Handle(ctx, r)
}

func (t *txnHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	have := map[string]bool{}
	for k := range t.have {
		have[k] = true
	}
	for _, a := range attrs {
		have[a.Key] = true
	}
	return &txnHandler{h: t.h.WithAttrs(attrs), log: t.log, have: have}
}

func (t *txnHandler) WithGroup(name string) slog.Handler {
	return &txnHandler{h: t.h.WithGroup(name), log: t.log, have: t.have}
}
