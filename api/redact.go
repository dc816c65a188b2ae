package api

import (
	"net/url"
	"regexp"

	"github.com/baton-fleet/baton/events"
)

// urlPattern finds URLs in free text: error messages quote the URLs they failed on.
var urlPattern = regexp.MustCompile(`[a-zA-Z][a-zA-Z0-9+.-]*://[^\s"'<>]+`)

// redactText replaces, in every URL of s, the user info (but a bare "git" user) and
// the query values with "REDACTED". The Backend is to keep secrets out of what it
// reports; this is the last line.
func redactText(s string) string {
	return urlPattern.ReplaceAllStringFunc(s, redactURL)
}

func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	changed := false
	if u.User != nil {
		if _, hasPassword := u.User.Password(); hasPassword || u.User.Username() != "git" {
			u.User = url.User("REDACTED")
			changed = true
		}
	}
	if u.RawQuery != "" {
		q := u.Query()
		for k := range q {
			q[k] = []string{"REDACTED"}
		}
		u.RawQuery = q.Encode()
		changed = true
	}
	if !changed {
		return raw
	}
	return u.String()
}

// redactState returns st with redactText applied to its free text, and its lists
// empty rather than null, for jq.
func redactState(st State) State {
	svcs := make([]ServiceState, len(st.Services))
	for i, s := range st.Services {
		if s.Units == nil {
			s.Units = []UnitState{}
		}
		svcs[i] = s
	}
	st.Services = svcs
	st.Phase = redactText(st.Phase)
	if st.Txn != nil {
		t := *st.Txn
		t.Reason = redactText(t.Reason)
		st.Txn = &t
	}
	if st.LastResult != nil {
		r := *st.LastResult
		r.Message, r.Output = redactText(r.Message), redactText(r.Output)
		st.LastResult = &r
	}
	if st.Rejected != nil {
		r := *st.Rejected
		r.Reason = redactText(r.Reason)
		st.Rejected = &r
	}
	qs := make([]Quarantined, len(st.Quarantined))
	for i, q := range st.Quarantined {
		q.Reason = redactText(q.Reason)
		qs[i] = q
	}
	st.Quarantined = qs
	st.Fetch.Error = redactText(st.Fetch.Error)
	evs := make([]events.Event, len(st.Events))
	for i, e := range st.Events {
		e.Message = redactText(e.Message)
		if e.Fields != nil {
			f := make(map[string]string, len(e.Fields))
			for k, v := range e.Fields {
				f[k] = redactText(v)
			}
			e.Fields = f
		}
		evs[i] = e
	}
	st.Events = evs
	return st
}
