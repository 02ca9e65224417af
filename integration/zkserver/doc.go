// Package zkserver runs the real Apache ZooKeeper server (Debian package
// "zookeeper", 3.8) as child processes on loopback ports, for integration
// tests and the local demo. It does not depend on package testing; the
// testing.TB wrappers are in dcroll/integration/zktest.
//
// One Server is one JVM running QuorumPeerMain with a zoo.cfg written by this
// package into its own directory:
//
//	DIR/zoo.cfg            tickTime, dataDir, clientPort on 127.0.0.1, 4lw whitelist, ...
//	DIR/log4j.properties   console logging at INFO
//	DIR/data/              dataDir (and DIR/data/myid in an ensemble)
//	DIR/zookeeper.log      the server's stdout and stderr, unless Options.Log is set
//
// Start picks a free port (retrying on a bind clash), spawns the JVM and polls
// the four-letter word `srvr` until the server answers with a Mode, and `conf`
// to check that the answer comes from this server's dataDir. StartEnsemble
// does the same for n nodes, node i in DIR/node<i> with myid i, and also waits
// for a leader. The JVMs are started in their own process group and with
// Pdeathsig SIGKILL, so they die with the process that started them even if it
// never calls Stop.
//
// Proxy is a TCP proxy in front of a server: Cut drops every connection and
// black-holes new ones until Restore, which is how tests make a client lose
// its connection long enough for the server to expire its session.
//
// Typical use outside tests (cmd/dczk):
//
//	s, err := zkserver.Start(ctx, zkserver.Options{Dir: dir, Port: 2181})
//	if err != nil { ... }
//	defer s.Stop()
//	fmt.Println(s.Addr())
//
// The ZooKeeper installation is found at fixed Debian paths (JarDir); when it
// or java is missing, Start returns ErrNotInstalled.
package zkserver
