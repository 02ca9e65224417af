package zkserver

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// JarDir is where Debian installs the ZooKeeper jars and their dependencies.
// zookeeper.jar names its dependencies in its manifest's Class-Path, so the
// class path is that jar plus a logging binding (slf4j-log4j12, log4j 1.2);
// putting all of JarDir on the class path would bring in several competing
// slf4j bindings.
const JarDir = "/usr/share/java"

// ErrNotInstalled is returned when java or the ZooKeeper jars are missing.
var ErrNotInstalled = errors.New("zookeeper not installed: apt-get install -y zookeeper")

// ErrNotServing is returned by Mode when the server is up but not serving
// clients (an ensemble member without a quorum, or still starting).
var ErrNotServing = errors.New("zookeeper is not serving requests")

// Defaults applied by Options.withDefaults.
const (
	DefaultJava     = "java"
	DefaultTickTime = 200 * time.Millisecond
)

// How long Start, Restart and StartEnsemble wait for servers to serve, at
// most; a deadline in the context can make it shorter.
const (
	startTimeout    = 30 * time.Second
	ensembleTimeout = 45 * time.Second
	stopGrace       = 5 * time.Second
	pollInterval    = 50 * time.Millisecond
	bindAttempts    = 3
)

// Options configures a server or each member of an ensemble.
type Options struct {
	// Dir is the root for configuration, data and logs. Required. Start uses
	// it directly; StartEnsemble puts node i in Dir/node<i>. Existing data
	// in it is kept, so a server started twice on the same Dir (and Port)
	// finds its znodes again.
	Dir string
	// Java is the java executable (default "java", looked up in PATH).
	Java string
	// TickTime is ZooKeeper's time unit (default 200ms, whole milliseconds),
	// small so that tests can use short sessions: session timeouts negotiate
	// to 2x..20x TickTime unless MinSessionTimeout/MaxSessionTimeout say
	// otherwise.
	TickTime time.Duration
	// MinSessionTimeout and MaxSessionTimeout bound negotiated session
	// timeouts (default 2x and 20x TickTime, ZooKeeper's own defaults).
	MinSessionTimeout, MaxSessionTimeout time.Duration
	// Log receives the server's stdout and stderr. nil appends them to
	// Dir/zookeeper.log. Writes come from a goroutine of this package until
	// the process has exited.
	Log io.Writer
	// Port is the client port for Start (0 picks a free loopback port and
	// retries on a bind clash). StartEnsemble ignores it.
	Port int
	// TLS, when set, adds a secureClientPort (TLS, Netty connection
	// factory) next to the plain client port, which stays for the
	// four-letter words this package probes with. See TLS.
	TLS *TLS
	// SecurePort is the secure client port for Start with TLS (0 picks a
	// free one). StartEnsemble ignores it.
	SecurePort int
	// ExtraConfig are more zoo.cfg lines (key=value), written after the
	// package's own, in key order; Java properties keep the last value of
	// a repeated key, so an entry here overrides a default (e.g.
	// "globalOutstandingLimit": "5000", "jute.maxbuffer": "4194304").
	ExtraConfig map[string]string
	// JVMArgs are appended to the JVM flags, after the package's own
	// (-Xmx256m, C1 only, serial GC); HotSpot keeps the last of a repeated
	// flag, so e.g. "-Xmx2g" raises the heap (bench/scale does, for a
	// thousand sessions).
	JVMArgs []string
}

// withDefaults fills in defaults and validates; it is the only place where
// defaults are applied.
func (o Options) withDefaults() (Options, error) {
	if o.Dir == "" {
		return o, errors.New("zkserver: Options.Dir is required")
	}
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return o, fmt.Errorf("zkserver: %w", err)
	}
	o.Dir = dir
	if o.Java == "" {
		o.Java = DefaultJava
	}
	if o.TickTime == 0 {
		o.TickTime = DefaultTickTime
	}
	if o.TickTime < time.Millisecond {
		return o, fmt.Errorf("zkserver: TickTime %v is below 1ms", o.TickTime)
	}
	if o.MinSessionTimeout == 0 {
		o.MinSessionTimeout = 2 * o.TickTime
	}
	if o.MaxSessionTimeout == 0 {
		o.MaxSessionTimeout = 20 * o.TickTime
	}
	if o.MaxSessionTimeout < o.MinSessionTimeout {
		return o, fmt.Errorf("zkserver: MaxSessionTimeout %v < MinSessionTimeout %v", o.MaxSessionTimeout, o.MinSessionTimeout)
	}
	if o.Port < 0 || o.Port > 65535 {
		return o, fmt.Errorf("zkserver: bad port %d", o.Port)
	}
	if o.SecurePort < 0 || o.SecurePort > 65535 || (o.SecurePort != 0 && o.SecurePort == o.Port) {
		return o, fmt.Errorf("zkserver: bad secure port %d", o.SecurePort)
	}
	if o.TLS != nil {
		t, err := o.TLS.withDefaults()
		if err != nil {
			return o, err
		}
		o.TLS = &t
	}
	return o, nil
}

// installation is what is needed to run a server.
type installation struct {
	java      string   // absolute path of the java executable
	classPath []string // jars
}

// nettyJars are what NettyServerCnxnFactory needs beyond zookeeper.jar's
// manifest Class-Path: Debian's manifest lists netty-handler but not the
// codec its handlers extend, so without it the factory fails to load
// (ClassNotFoundException: io.netty.handler.codec.ByteToMessageDecoder)
// and the server never serves.
var nettyJars = []string{"netty-codec.jar"}

// findInstallation checks that java and the jars are present.
func findInstallation(javaName string) (installation, error) {
	java, err := exec.LookPath(javaName)
	if err != nil {
		return installation{}, fmt.Errorf("%w (no %s in PATH)", ErrNotInstalled, javaName)
	}
	main := filepath.Join(JarDir, "zookeeper.jar")
	if _, err := os.Stat(main); err != nil {
		return installation{}, fmt.Errorf("%w (no %s)", ErrNotInstalled, main)
	}
	cp := []string{main}
	for _, j := range []string{"slf4j-log4j12.jar", "log4j-1.2.jar"} {
		if p := filepath.Join(JarDir, j); fileExists(p) {
			cp = append(cp, p) // without them the server runs, but silently
		}
	}
	for _, j := range nettyJars {
		if p := filepath.Join(JarDir, j); fileExists(p) {
			cp = append(cp, p) // only the Netty factory (TLS) loads it
		}
	}
	return installation{java: java, classPath: cp}, nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// peer is one server.N line of an ensemble.
type peer struct {
	id                    int
	quorumPort, electPort int
	clientPort            int
	securePort            int // 0 without TLS
}

// nodeConfig is everything that goes into one server's zoo.cfg.
type nodeConfig struct {
	opts       Options
	dir        string // this node's directory
	clientPort int
	securePort int    // secureClientPort; 0 without TLS
	id         int    // myid; 0 for a standalone server
	peers      []peer // empty for a standalone server
}

func (c nodeConfig) dataDir() string   { return filepath.Join(c.dir, "data") }
func (c nodeConfig) cfgPath() string   { return filepath.Join(c.dir, "zoo.cfg") }
func (c nodeConfig) log4jPath() string { return filepath.Join(c.dir, "log4j.properties") }
func (c nodeConfig) addr() string      { return fmt.Sprintf("127.0.0.1:%d", c.clientPort) }

// secureAddr is the TLS client address, "" without TLS.
func (c nodeConfig) secureAddr() string {
	if c.securePort == 0 {
		return ""
	}
	return fmt.Sprintf("127.0.0.1:%d", c.securePort)
}

// zooCfg renders zoo.cfg.
func (c nodeConfig) zooCfg() string {
	ms := func(d time.Duration) int64 { return d.Milliseconds() }
	var b strings.Builder
	w := func(k string, v any) { fmt.Fprintf(&b, "%s=%v\n", k, v) }
	b.WriteString("# written by dcroll integration/zkserver; rewritten on every start\n")
	w("tickTime", ms(c.opts.TickTime))
	w("initLimit", 10)
	w("syncLimit", 5)
	w("dataDir", c.dataDir())
	w("clientPort", c.clientPort)
	w("clientPortAddress", "127.0.0.1")
	w("minSessionTimeout", ms(c.opts.MinSessionTimeout))
	w("maxSessionTimeout", ms(c.opts.MaxSessionTimeout))
	w("maxClientCnxns", 0)
	w("admin.enableServer", false)
	// conf is used by this package to tell its own server from another
	// process that took the port.
	w("4lw.commands.whitelist", "srvr,ruok,mntr,cons,wchs,conf")
	w("reconfigEnabled", false)
	// Tests and the demo do not need durability against power loss; data
	// still survives a killed process (it is written, just not fsynced).
	w("forceSync", "no")
	if c.opts.TLS != nil {
		c.opts.TLS.zooCfg(w, c.securePort)
	}
	for _, k := range slices.Sorted(maps.Keys(c.opts.ExtraConfig)) {
		w(k, c.opts.ExtraConfig[k])
	}
	if len(c.peers) == 0 {
		w("standaloneEnabled", true)
		return b.String()
	}
	// A one-node "ensemble" must run in quorum mode to have a leader.
	w("standaloneEnabled", len(c.peers) > 1)
	for _, p := range c.peers {
		w(fmt.Sprintf("server.%d", p.id), fmt.Sprintf("127.0.0.1:%d:%d", p.quorumPort, p.electPort))
	}
	if c.opts.TLS != nil && c.opts.TLS.Quorum {
		c.opts.TLS.quorumCfg(w)
	}
	return b.String()
}

const log4jProperties = `# written by dcroll integration/zkserver
log4j.rootLogger=INFO, CONSOLE
log4j.appender.CONSOLE=org.apache.log4j.ConsoleAppender
log4j.appender.CONSOLE.layout=org.apache.log4j.PatternLayout
log4j.appender.CONSOLE.layout.ConversionPattern=%d{ISO8601} [myid:%X{myid}] %-5p [%t] %c{1} - %m%n
`

// write creates the node's directory, zoo.cfg, log4j.properties and myid.
func (c nodeConfig) write() error {
	if err := os.MkdirAll(c.dataDir(), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(c.cfgPath(), []byte(c.zooCfg()), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(c.log4jPath(), []byte(log4jProperties), 0o644); err != nil {
		return err
	}
	if c.id > 0 {
		myid := fmt.Sprintf("%d\n", c.id)
		if err := os.WriteFile(filepath.Join(c.dataDir(), "myid"), []byte(myid), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// javaArgs is the JVM command line (without the executable). The flags make
// a small JVM that starts fast on two cores.
func (c nodeConfig) javaArgs(inst installation) []string {
	args := []string{
		"-Xmx256m",
		"-XX:+UseSerialGC",
		"-XX:TieredStopAtLevel=1",
		"-XX:-UsePerfData",
		"-XX:+ExitOnOutOfMemoryError",
		"-Djava.net.preferIPv4Stack=true",
		"-Dzookeeper.log.dir=" + c.dir,
		"-Dzookeeper.root.logger=INFO,CONSOLE",
		"-Dlog4j.configuration=file:" + c.log4jPath(),
		"-Dzookeeper.jmx.log4j.disable=true",
	}
	if c.opts.TLS != nil {
		// zoo.cfg's serverCnxnFactory becomes this system property when
		// the configuration is parsed; setting it here too does not depend
		// on that copy (ServerCnxnFactory reads only the property).
		args = append(args, "-Dzookeeper.serverCnxnFactory="+nettyFactory)
	}
	args = append(args, c.opts.JVMArgs...)
	return append(args,
		"-cp", strings.Join(inst.classPath, ":"),
		"org.apache.zookeeper.server.quorum.QuorumPeerMain",
		c.cfgPath(),
	)
}

// pickPorts is freePorts, replaced in tests to force a port clash.
var pickPorts = FreePorts

// FreePorts returns n distinct ports that were free on 127.0.0.1 a moment
// ago, chosen at random below the kernel's ephemeral range: a port picked
// by bind(0) comes from that range, and outgoing connections (ZooKeeper
// clients, BitTorrent peers) can take it before a server binds it. All
// listeners are held until all ports are chosen, so they differ; another
// process can still take one before the server binds it, which Start
// detects and retries.
func FreePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	lo, hi := portWindow()
	for tries := 0; len(ports) < n; tries++ {
		if tries > 1000 {
			return nil, fmt.Errorf("find free port: none free in %d-%d", lo, hi)
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", lo+rand.IntN(hi-lo)))
		if err != nil {
			continue
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// portWindow is where FreePorts looks: the 20000 ports below the ephemeral
// range (/proc/sys/net/ipv4/ip_local_port_range), never below 1024.
func portWindow() (lo, hi int) {
	ephemeralLow := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if v, err := strconv.Atoi(f[0]); err == nil && v > 2048 {
				ephemeralLow = v
			}
		}
	}
	return max(1024, ephemeralLow-20000), ephemeralLow
}
