// Package simnode builds a vramseal node inside one process for the
// collector's tools (the metrics page generator and the scrape benchmark):
// simulated GPUs, and a real sealer whose shards are sealed from files in a
// temporary folder, with an Observer and audit Counters to hand to the
// collectors.
package simnode
