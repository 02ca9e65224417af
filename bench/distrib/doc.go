// Command distrib benchmarks blob distribution on real test hosts: racks of
// network namespaces joined by tc-shaped links (package integration/netns).
//
// One run creates one random blob and measures, on the same fabric and blob:
//
//  1. rack: the dcroll swarm (distrib origin + rack-aware tracker + agents);
//  2. random: the same swarm with the tracker's rack ordering off;
//  3. central: every host GETs the blob from the seeder over HTTP at once.
//
// For each mode it reports the time until every host holds the verified blob,
// that time over the lower bound, and the bytes that entered the racks over
// their uplinks. The seeder sits on the core switch, so every rack must pull
// at least one copy through its uplink: the cross-rack anchor is S x racks
// (not S x (racks-1)).
//
// Usage (as root):
//
//	go run ./bench/distrib [-quick] [-size 128MiB] [-racks 3] [-hosts 8]
//	    [-host-mbit 16] [-uplink-mbit 32] [-seeder-mbit 48] [-out bench/results]
//	    [-modes rack,random,central] [-piece-length 0] [-keep] [-v]
//
// See bench/README.md for the fabric, the metrics and why these rates.
//
// The program re-executes itself inside the namespaces with hidden
// subcommands: "origin" (seeder), "host" (one machine's fetch) and "zk"
// (ZooKeeper reachable on the fabric). A host prints one JSON line when ready,
// waits for "go" on stdin, fetches, prints a "done" line, keeps seeding until
// "stop", then re-hashes the blob and prints a "verified" line.
package main
