//go:build race

package sim

// The race detector slows a seed tenfold: the run of every package with it checks a
// few hundred seeds; the simulation's own run (scripts/test, make sim) checks the rest.
func init() { defaultSeeds = 300 }
