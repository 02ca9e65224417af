// Package netns builds throw-away test networks out of Linux network
// namespaces, veth pairs, bridges and tc shaping, so that integration tests
// and benchmarks can run real processes on "hosts" that each have their own
// IP address and link speed.
//
// The fabric is a two-level tree, all of it inside namespaces whose names
// start with Config.Prefix (default "dcb-"); nothing is created in the root
// namespace:
//
//	            [seeder]   [zk]
//	               |         |
//	fabric ns:  ------ br-core ------
//	             |dn-r0        |dn-r1       (rack uplinks: veth pairs,
//	             |up-r0        |up-r1        shaped at UplinkMbit each way)
//	          br-r0          br-r1
//	          |    |         |    |         (host links: shaped at HostMbit
//	       [r0h0] [r0h1]  [r1h0] [r1h1]      each way)
//
// Every host (and the seeder and ZooKeeper host) is a namespace with one
// interface, eth0, in the flat subnet 10.77.0.0/16: rack r host h is
// 10.77.(r+1).(h+1), the seeder 10.77.0.2, ZooKeeper 10.77.0.3. Bridges live
// in the fabric namespace (Prefix+"fab"). Shaping is a tbf qdisc on the egress
// of both ends of every link, so each direction is limited on its own.
//
// Bytes that enter a rack from the core are the tx counter of dn-<rack> in
// the fabric namespace (see Topology.Uplinks); they include Ethernet, IP and
// TCP headers.
//
// Typical use:
//
//	_ = netns.Cleanup(ctx, netns.DefaultPrefix) // leftovers of a crashed run
//	topo, err := netns.Build(ctx, netns.Config{Racks: 3, HostsPerRack: 8, Seeder: true, ZK: true,
//		Rates: netns.Rates{HostMbit: 50, UplinkMbit: 50, SeederMbit: 100}})
//	defer topo.Close()
//	cmd := topo.Command(ctx, topo.Hosts[0], "/path/to/prog", "arg")
//
// Host.Do runs a Go function with its sockets in a host's namespace, which is
// how in-process tests open listeners and connections on a host.
//
// Everything requires root and the iproute2 tools (ip, tc); Available reports
// whether they are usable so tests can skip.
package netns
