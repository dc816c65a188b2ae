package fleet

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
)

// The parsers of the values stored in etcd. Any client of etcd may have written
// them (an older or newer baton, an operator's etcdctl): they accept what such a
// writer plausibly meant, such as spaces and a newline around a number, and
// refuse the rest with an error that quotes a bounded part of the value.

// maxQuote bounds how much of a bad value an error quotes.
const maxQuote = 64

func quote(v []byte) string {
	if len(v) > maxQuote {
		return strconv.Quote(string(v[:maxQuote])) + "..."
	}
	return strconv.Quote(string(v))
}

// ParseSlots reads a group's maxParallel value: a count of slots in decimal,
// with spaces or a newline around it (`etcdctl put` of "2\n" is 2). Negative
// counts, signs other than +, fractions and anything else are refused. The lease
// and the fleet view both read the key with it, so they never disagree.
func ParseSlots(value []byte) (int, error) {
	v := bytes.TrimSpace(value)
	n, err := strconv.Atoi(string(v))
	if err != nil || n < 0 {
		return 0, fmt.Errorf("maxParallel %s is not a count of slots", quote(value))
	}
	return n, nil
}

// parseMark reads a pause or a promotion. An empty value is a mark with no
// reason: the key is what counts.
func parseMark(value []byte) (Mark, error) {
	var m Mark
	if len(bytes.TrimSpace(value)) == 0 {
		return m, nil
	}
	if err := json.Unmarshal(value, &m); err != nil {
		return Mark{Reason: "unreadable record"}, fmt.Errorf("mark %s: %v", quote(value), err)
	}
	return m, nil
}

// parseHost reads the record of host. The key names the host: a record that
// names another is taken for the key's.
func parseHost(host string, value []byte) (Host, error) {
	var h Host
	if err := json.Unmarshal(value, &h); err != nil {
		return Host{}, fmt.Errorf("host record %s: %v", quote(value), err)
	}
	h.Host = host
	return h, nil
}

// parseFailure reads the halt on commit. A halt that does not parse still halts:
// the Failure returned with the error says its record is unreadable.
func parseFailure(commit string, value []byte) (Failure, error) {
	var f Failure
	if err := json.Unmarshal(value, &f); err != nil {
		return Failure{Commit: commit, Host: "?", Reason: "the halt record is unreadable"}, fmt.Errorf("halt record %s: %v", quote(value), err)
	}
	f.Commit = commit
	return f, nil
}

// parseBadRelease reads the halt of a group on a release. An unreadable one still
// halts, as an unreadable halt on a commit does.
func parseBadRelease(value []byte) (Failure, error) {
	var f Failure
	if err := json.Unmarshal(value, &f); err != nil {
		return Failure{Host: "?", Reason: "the halt record is unreadable"}, fmt.Errorf("halt record %s: %v", quote(value), err)
	}
	return f, nil
}

// parseCanaries reads the hosts that took a canary spot.
func parseCanaries(value []byte) ([]string, error) {
	var hosts []string
	if err := json.Unmarshal(value, &hosts); err != nil {
		return nil, fmt.Errorf("canary list %s: %v", quote(value), err)
	}
	return hosts, nil
}
