package api

import (
	"github.com/baton-fleet/baton/events"
	"github.com/baton-fleet/baton/internal/redact"
)

// redactState returns st with every URL in its free text shown by the redact policy,
// and its lists empty rather than null, for jq. The Backend is to keep secrets out of
// what it reports; this is the last line.
func redactState(st State) State {
	svcs := make([]ServiceState, len(st.Services))
	for i, s := range st.Services {
		if s.Units == nil {
			s.Units = []UnitState{}
		}
		svcs[i] = s
	}
	st.Services = svcs
	st.Phase = redact.Text(st.Phase)
	if st.Txn != nil {
		t := *st.Txn
		t.Reason = redact.Text(t.Reason)
		st.Txn = &t
	}
	if st.LastResult != nil {
		r := *st.LastResult
		r.Message, r.Output = redact.Text(r.Message), redact.Text(r.Output)
		st.LastResult = &r
	}
	if st.Rejected != nil {
		r := *st.Rejected
		r.Reason = redact.Text(r.Reason)
		st.Rejected = &r
	}
	qs := make([]Quarantined, len(st.Quarantined))
	for i, q := range st.Quarantined {
		q.Reason = redact.Text(q.Reason)
		qs[i] = q
	}
	st.Quarantined = qs
	st.Fetch.Error = redact.Text(st.Fetch.Error)
	evs := make([]events.Event, len(st.Events))
	for i, e := range st.Events {
		e.Message = redact.Text(e.Message)
		if e.Fields != nil {
			f := make(map[string]string, len(e.Fields))
			for k, v := range e.Fields {
				f[k] = redact.Text(v)
			}
			e.Fields = f
		}
		evs[i] = e
	}
	st.Events = evs
	return st
}
