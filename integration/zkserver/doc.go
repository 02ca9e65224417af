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
// With Options.TLS a server (or every member of an ensemble) also listens on
// a secureClientPort (SecureAddr, Ensemble.SecureConnectString) with the
// Netty connection factory and the key and trust stores given, PEM, PKCS12
// or JKS; ssl.clientAuth is none, want or need; TLS.Quorum encrypts the
// traffic between ensemble members too (sslQuorum). The plain client port stays
// for the four-letter words Start probes with; Start also completes one TLS
// handshake, so a started server serves TLS clients at once. NewTestPKI
// makes what such a server and its clients need: a CA (the PEM clients
// trust), a PEM key store for 127.0.0.1 and localhost, a client
// certificate; IssueServer and IssueClient make more, KeytoolStores makes
// PKCS12 stores with keytool. See docs/security.md.
//
//	pki, _ := zkserver.NewTestPKI(filepath.Join(dir, "pki"))
//	s, _ := zkserver.Start(ctx, zkserver.Options{Dir: dir, TLS: pki.TLS(zkserver.ClientAuthNeed)})
//	// dcroll --zk s.SecureAddr() --zk-tls-ca pki.CA --zk-tls-cert pki.ClientCert --zk-tls-key pki.ClientKey
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
