// Package room decides whether a host has the memory for a second copy of a service, as a bluegreen upgrade needs.
package room

import (
	"fmt"
	"strings"
)

// ReserveDivisor is the share of MemTotal that a second copy must leave free:
// 1/20, 5%, for the kernel's caches and everything else on the host.
const ReserveDivisor = 20

// Running is what the running copy of a service uses, as systemd accounts it
// (units.Systemd.MemoryCurrent of its units, summed).
type Running struct {
	Units []string // the running color's units, such as shop@blue.service
	Bytes uint64   // their memory, MemoryCurrent
	Known bool     // false when systemd does not account their memory (MemoryAccounting=no)
}

// Usage is one unit's memory as systemd reports it (units.Systemd.MemoryCurrent):
// Known is false where systemd does not account it (MemoryCurrent "[not set]").
type Usage struct {
	Unit  string
	Bytes uint64
	Known bool
}

// RunningOf is the running copy made of the usages of its units: their memory
// summed, known only when every unit's is. It is a pure function of its argument.
func RunningOf(usages []Usage) Running {
	r := Running{Known: true}
	for _, u := range usages {
		r.Units = append(r.Units, u.Unit)
		r.Bytes += u.Bytes
		r.Known = r.Known && u.Known
	}
	if !r.Known {
		r.Bytes = 0
	}
	return r
}

// Verdict is whether a second copy fits, with the figures it was decided on.
type Verdict struct {
	OK        bool
	Need      uint64 // what the second copy is expected to take: the running copy's memory
	Available uint64 // MemAvailable
	Reserve   uint64 // MemTotal / ReserveDivisor, left free
	Known     bool   // whether Need is measured; when not, only the reserve is asked for
	Units     []string
}

// Check decides whether a second copy of a service fits beside the running one:
// it does when MemAvailable holds the running copy's memory again and still leaves
// the reserve free. A running copy whose memory systemd does not account is taken
// as using nothing, so that such hosts are not blocked forever; Verdict.Known
// says so, and Reason names it. No running copy (a first install) is Running{Known:
// true}. It is a pure function of its arguments.
func Check(running Running, mem MemInfo) Verdict {
	v := Verdict{Available: mem.Available, Reserve: mem.Total / ReserveDivisor, Known: running.Known, Units: running.Units}
	if running.Known {
		v.Need = running.Bytes
	}
	v.OK = v.Available >= v.Reserve && v.Available-v.Reserve >= v.Need
	return v
}

// Reason is "" when the copy fits and has known figures; "blocked: ..." with the
// figures when it does not fit; a note when its memory is not measured.
func (v Verdict) Reason() string {
	units := strings.Join(v.Units, ", ")
	switch {
	case !v.OK && v.Known:
		return fmt.Sprintf("blocked: no room for a second copy: the running copy (%s) uses %s, MemAvailable is %s and %s (1/%d of MemTotal) stays free",
			units, mib(v.Need), mib(v.Available), mib(v.Reserve), ReserveDivisor)
	case !v.OK:
		return fmt.Sprintf("blocked: no room for a second copy: MemAvailable is %s, less than the %s (1/%d of MemTotal) that stays free",
			mib(v.Available), mib(v.Reserve), ReserveDivisor)
	case !v.Known:
		return fmt.Sprintf("memory of %s not accounted by systemd (MemoryAccounting=no): a second copy is started with only %s (1/%d of MemTotal) known to stay free",
			units, mib(v.Reserve), ReserveDivisor)
	}
	return ""
}

// mib writes a byte count in MiB, rounded down, such as "812 MiB".
func mib(b uint64) string { return fmt.Sprintf("%d MiB", b>>20) }
