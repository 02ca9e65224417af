package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/urfave/cli/v2"
	"gopkg.in/yaml.v3"

	"dcroll/coordinator"
	"dcroll/examples/examplebuild"
	"dcroll/integration/zktest"
	"dcroll/spec"
	"dcroll/znodes"
)

// composePath is the compose file, from this package's directory.
const composePath = "../../docker-compose.yml"

// composeFile is the part of docker-compose.yml the tests read.
type composeFile struct {
	Services map[string]composeService `yaml:"services"`
	Networks map[string]struct {
		IPAM struct {
			Config []struct {
				Subnet  string `yaml:"subnet"`
				IPRange string `yaml:"ip_range"`
			} `yaml:"config"`
		} `yaml:"ipam"`
	} `yaml:"networks"`
	Volumes map[string]any `yaml:"volumes"`
}

type composeService struct {
	Image   string    `yaml:"image"`
	Build   string    `yaml:"build"`
	Command []string  `yaml:"command"`
	Volumes []string  `yaml:"volumes"`
	Nets    yaml.Node `yaml:"networks"` // a list of names, or a map name -> {ipv4_address}
	Depends map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
}

// addresses returns the service's fixed addresses by network (none for a
// list of networks).
func (s composeService) addresses() (map[string]string, error) {
	if s.Nets.Kind != yaml.MappingNode {
		return nil, nil
	}
	var m map[string]struct {
		IPv4 string `yaml:"ipv4_address"`
	}
	if err := s.Nets.Decode(&m); err != nil {
		return nil, err
	}
	out := map[string]string{}
	for n, v := range m {
		out[n] = v.IPv4
	}
	return out, nil
}

// cmdLine is one dcroll command line of a service, parsed against the CLI.
type cmdLine struct {
	Service string
	Argv    []string            // as written, "dcroll" first
	Path    []string            // command names, e.g. [blob publish]
	Flags   map[string][]string // every flag given (global and command), by name
	Args    []string            // positional arguments of the command
}

func (v cmdLine) command() string { return strings.Join(v.Path, " ") }

// flag is the last value of a flag ("" when absent).
func (v cmdLine) flag(name string) string {
	if vs := v.Flags[name]; len(vs) > 0 {
		return vs[len(vs)-1]
	}
	return ""
}

func loadCompose(t *testing.T) composeFile {
	t.Helper()
	b, err := os.ReadFile(composePath)
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatalf("docker-compose.yml does not parse: %v", err)
	}
	return c
}

// commandLines returns a service's dcroll command lines: its command, or
// each line of an `sh -c`/`sh -ec` script. A script may hold only dcroll
// lines without shell quoting or operators, so that splitting on white
// space is what sh does (and the loopback test can run them as they are).
func commandLines(svc composeService) ([][]string, error) {
	cmd := svc.Command
	switch {
	case len(cmd) == 0:
		return nil, nil
	case cmd[0] == "dcroll":
		return [][]string{cmd}, nil
	case cmd[0] == "sh" && len(cmd) == 3 && (cmd[1] == "-c" || cmd[1] == "-ec"):
		var out [][]string
		for _, line := range strings.Split(cmd[2], "\n") {
			if strings.TrimSpace(line) == "" {
				continue
			}
			if strings.ContainsAny(line, "'\"\\$;|&<>`*?()") {
				return nil, fmt.Errorf("script line %q: no quoting, variables or shell operators, please", line)
			}
			f := strings.Fields(line)
			if f[0] != "dcroll" {
				return nil, fmt.Errorf("script line %q: only dcroll command lines", line)
			}
			out = append(out, f)
		}
		if cmd[1] != "-ec" && len(out) > 1 {
			return nil, fmt.Errorf("a script of %d commands needs sh -ec (stop at the first failure)", len(out))
		}
		return out, nil
	case strings.Contains(strings.Join(cmd, " "), "dcroll"):
		return nil, fmt.Errorf("command %v: run dcroll directly or from sh -ec", cmd)
	}
	return nil, nil
}

// parseInvocation walks argv (after "dcroll") through the CLI's commands and
// flags, as urfave/cli would, and reports every name that does not exist.
func parseInvocation(app *cli.App, argv []string) (cmdLine, []string) {
	inv := cmdLine{Argv: argv, Flags: map[string][]string{}}
	var errs []string
	args := argv[1:]
	flags := app.Flags
	var cmd *cli.Command
	for i := 0; i < len(args); i++ {
		a := args[i]
		if strings.HasPrefix(a, "-") {
			name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
			f := findFlag(flags, name)
			if f == nil {
				errs = append(errs, fmt.Sprintf("%q is not a flag of %s", a, cmdName(cmd)))
				continue
			}
			name = f.Names()[0]
			if _, isBool := f.(*cli.BoolFlag); isBool {
				if !hasVal {
					val = "true"
				}
			} else if !hasVal {
				if i+1 >= len(args) {
					errs = append(errs, fmt.Sprintf("%q of %s needs a value", a, cmdName(cmd)))
					break
				}
				i++
				val = args[i]
			}
			inv.Flags[name] = append(inv.Flags[name], val)
			continue
		}
		if cmd != nil && len(cmd.Subcommands) == 0 {
			inv.Args = append(inv.Args, a)
			continue
		}
		var sub []*cli.Command
		if cmd == nil {
			sub = app.Commands
		} else {
			sub = cmd.Subcommands
		}
		next := findCommand(sub, a)
		if next == nil {
			errs = append(errs, fmt.Sprintf("%q is not a command of %s", a, cmdName(cmd)))
			break
		}
		cmd = next
		inv.Path = append(inv.Path, cmd.Name)
		flags = cmd.Flags
	}
	if cmd == nil {
		errs = append(errs, fmt.Sprintf("no dcroll command in %v", argv))
	}
	return inv, errs
}

// cmdLines parses every dcroll command line of the compose file.
func cmdLines(t *testing.T, c composeFile) []cmdLine {
	t.Helper()
	app := NewApp(io.Discard, io.Discard)
	var out []cmdLine
	for _, name := range sortedKeys(c.Services) {
		lines, err := commandLines(c.Services[name])
		if err != nil {
			t.Errorf("service %s: %v", name, err)
			continue
		}
		for _, argv := range lines {
			inv, errs := parseInvocation(app, argv)
			for _, e := range errs {
				t.Errorf("service %s: %s", name, e)
			}
			inv.Service = name
			out = append(out, inv)
		}
	}
	return out
}

// TestDockerComposeNamesRealCommands parses docker-compose.yml and checks
// that every dcroll command line in it names a real command and real flags.
func TestDockerComposeNamesRealCommands(t *testing.T) {
	c := loadCompose(t)
	invs := cmdLines(t, c)
	services := map[string]bool{}
	for _, inv := range invs {
		services[inv.Service] = true
		if inv.Path == nil {
			continue
		}
		if c.Services[inv.Service].Image != "dcroll:dev" {
			t.Errorf("service %s runs dcroll but its image is %q, not dcroll:dev (the Dockerfile's)", inv.Service, c.Services[inv.Service].Image)
		}
	}
	if len(services) < 3 {
		t.Fatalf("only %d dcroll services in docker-compose.yml", len(services))
	}
}

// composeTopology is what docker-compose.yml deploys, read from its
// command lines.
type composeTopology struct {
	c           composeFile
	origin      cmdLine
	coordinator cmdLine
	publish     cmdLine
	push        cmdLine
	agents      []cmdLine
}

func readTopology(t *testing.T) composeTopology {
	t.Helper()
	top := composeTopology{c: loadCompose(t)}
	one := func(dst *cmdLine, inv cmdLine) {
		if dst.Service != "" {
			t.Errorf("two %q command lines: services %s and %s", inv.command(), dst.Service, inv.Service)
		}
		*dst = inv
	}
	for _, inv := range cmdLines(t, top.c) {
		switch inv.command() {
		case "origin":
			one(&top.origin, inv)
		case "coordinator":
			one(&top.coordinator, inv)
		case "blob publish":
			one(&top.publish, inv)
		case "push":
			one(&top.push, inv)
		case "agent":
			top.agents = append(top.agents, inv)
		default:
			t.Errorf("service %s: unexpected command %q", inv.Service, inv.command())
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	for what, inv := range map[string]cmdLine{"origin": top.origin, "coordinator": top.coordinator, "blob publish": top.publish, "push": top.push} {
		if inv.Service == "" {
			t.Fatalf("no service runs dcroll %s", what)
		}
	}
	return top
}

// fixedIP is a service's fixed address on the compose network.
func (top composeTopology) fixedIP(t *testing.T, service string) netip.Addr {
	t.Helper()
	addrs, err := top.c.Services[service].addresses()
	if err != nil {
		t.Fatalf("service %s: networks: %v", service, err)
	}
	if len(addrs) != 1 {
		t.Fatalf("service %s: want one network with an ipv4_address, have %v", service, addrs)
	}
	for _, a := range addrs {
		ip, err := netip.ParseAddr(a)
		if err != nil {
			t.Fatalf("service %s: ipv4_address %q: %v", service, a, err)
		}
		return ip
	}
	panic("unreachable")
}

// reachable parses a BitTorrent address that is handed to other peers: an
// ip:port with an address another machine can connect to.
func reachable(addr string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return ap, fmt.Errorf("%q: want an IP literal and a port (dcroll takes no hostname): %w", addr, err)
	}
	if ip := ap.Addr(); ip.IsUnspecified() || ip.IsLoopback() {
		return ap, fmt.Errorf("%q: peers cannot reach %s", addr, ip)
	}
	if ap.Port() == 0 {
		return ap, fmt.Errorf("%q: a fixed port, please", addr)
	}
	return ap, nil
}

// TestDockerComposeTopology checks that the compose data center can roll:
// peers and the origin have addresses the tracker can hand out, the health
// ports of the example specs are set, and publish-and-push publishes into
// the origin's store before the agents start.
func TestDockerComposeTopology(t *testing.T) {
	top := readTopology(t)
	c := top.c

	// The network: fixed addresses inside the subnet, outside the range
	// Docker assigns dynamically.
	if len(c.Networks) != 1 {
		t.Fatalf("want one network, have %d", len(c.Networks))
	}
	var subnet, dynamic netip.Prefix
	for name, n := range c.Networks {
		if len(n.IPAM.Config) != 1 {
			t.Fatalf("network %s: want one ipam config", name)
		}
		var err error
		if subnet, err = netip.ParsePrefix(n.IPAM.Config[0].Subnet); err != nil {
			t.Fatalf("network %s: subnet: %v", name, err)
		}
		if dynamic, err = netip.ParsePrefix(n.IPAM.Config[0].IPRange); err != nil {
			t.Fatalf("network %s: ip_range: %v", name, err)
		}
	}
	fixed := map[netip.Addr]string{}
	checkFixed := func(service string) netip.Addr {
		ip := top.fixedIP(t, service)
		if !subnet.Contains(ip) || dynamic.Contains(ip) {
			t.Errorf("service %s: %s must be in %s and outside the dynamic range %s", service, ip, subnet, dynamic)
		}
		if other, dup := fixed[ip]; dup && other != service {
			t.Errorf("services %s and %s share %s", other, service, ip)
		}
		fixed[ip] = service
		return ip
	}

	// One ZooKeeper for everyone.
	zkAddr := top.origin.flag("zk")
	for _, inv := range append([]cmdLine{top.origin, top.coordinator, top.publish, top.push}, top.agents...) {
		if inv.flag("zk") != zkAddr {
			t.Errorf("service %s: --zk %q, the origin has %q", inv.Service, inv.flag("zk"), zkAddr)
		}
	}
	if host, _, _ := strings.Cut(zkAddr, ":"); c.Services[host].Image == "" {
		t.Errorf("--zk %q does not name a compose service", zkAddr)
	}

	// The origin: a BitTorrent address the tracker can hand out, the
	// container's own; publish names the origin's URL as agents reach it.
	originIP := checkFixed(top.origin.Service)
	ol, err := reachable(top.origin.flag("listen"))
	if err != nil {
		t.Errorf("origin --listen: %v", err)
	} else if ol.Addr() != originIP {
		t.Errorf("origin --listen %s is not the origin's address %s", ol, originIP)
	}
	u, err := url.Parse(top.publish.flag("origin"))
	if err != nil {
		t.Fatalf("blob publish --origin: %v", err)
	}
	_, httpPort, _ := strings.Cut(top.origin.flag("http"), ":")
	if (u.Hostname() != originIP.String() && u.Hostname() != top.origin.Service) || u.Port() != httpPort {
		t.Errorf("blob publish --origin %s: want http://%s:%s (the origin's --http %s)", u, originIP, httpPort, top.origin.flag("http"))
	}

	// Publish writes into the store the origin seeds from: the same path on
	// the same volume.
	store := top.origin.flag("store")
	if store == "" || top.publish.flag("store") != store {
		t.Errorf("blob publish --store %q, origin --store %q: they must share one store", top.publish.flag("store"), store)
	}
	volumeAt := func(service string) string {
		for _, v := range c.Services[service].Volumes {
			if src, dst, _ := strings.Cut(v, ":"); dst == store {
				return src
			}
		}
		return ""
	}
	if v := volumeAt(top.origin.Service); v == "" || volumeAt(top.publish.Service) != v {
		t.Errorf("services %s and %s must mount one volume at %s", top.origin.Service, top.publish.Service, store)
	} else if _, ok := c.Volumes[v]; !ok {
		t.Errorf("volume %s is not declared", v)
	}

	// Push pushes the spec publish wrote the ids into.
	if top.publish.Service != top.push.Service {
		t.Errorf("blob publish (%s) and push (%s) run in different services", top.publish.Service, top.push.Service)
	}
	if specFile := top.publish.flag("spec"); len(top.push.Args) != 1 || top.push.Args[0] != specFile {
		t.Errorf("push %v, but blob publish --spec %q", top.push.Args, specFile)
	}
	pubIdx, pushIdx := -1, -1
	for i, inv := range cmdLines(t, c) {
		switch inv.command() {
		case "blob publish":
			pubIdx = i
		case "push":
			pushIdx = i
		}
	}
	if pushIdx < pubIdx {
		t.Errorf("push runs before blob publish")
	}
	spc := exampleSpec(t, top.push.Args[0])
	published := map[string]bool{}
	for _, a := range top.publish.Args {
		svc, _, ok := strings.Cut(a, "=")
		if !ok {
			t.Errorf("blob publish --spec argument %q: want SERVICE=FILE", a)
		}
		published[svc] = true
	}
	for name := range spc.Services {
		if !published[name] {
			t.Errorf("blob publish --spec does not publish an artifact for service %s of %s", name, top.push.Args[0])
		}
	}

	// Agents: distinct machines and reachable peer addresses (their own),
	// at least two racks, and they start once the spec is HEAD.
	if len(top.agents) < 2 {
		t.Fatalf("%d agents", len(top.agents))
	}
	racks := map[string][]string{}
	machines := map[string]string{}
	peers := map[netip.AddrPort]string{}
	for _, a := range top.agents {
		ip := checkFixed(a.Service)
		m := a.flag("machine")
		if m == "" {
			t.Errorf("service %s: no --machine (the container's hostname would be random)", a.Service)
		} else if other, dup := machines[m]; dup {
			t.Errorf("services %s and %s are both machine %s", other, a.Service, m)
		}
		machines[m] = a.Service
		if a.flag("rack") == "" || a.flag("dc") == "" || a.flag("data-dir") == "" {
			t.Errorf("service %s: --rack, --dc and --data-dir are required", a.Service)
		}
		racks[a.flag("rack")] = append(racks[a.flag("rack")], m)
		pl, err := reachable(a.flag("peer-listen"))
		if err != nil {
			t.Errorf("service %s: --peer-listen: %v", a.Service, err)
			continue
		}
		if pl.Addr() != ip {
			t.Errorf("service %s: --peer-listen %s is not its address %s", a.Service, pl, ip)
		}
		if other, dup := peers[pl]; dup {
			t.Errorf("services %s and %s both listen on %s", other, a.Service, pl)
		}
		peers[pl] = a.Service
		if d := c.Services[a.Service].Depends[top.push.Service]; d.Condition != "service_completed_successfully" {
			t.Errorf("service %s: depends_on %s: condition %q, want service_completed_successfully (agents start once HEAD is set)", a.Service, top.push.Service, d.Condition)
		}
	}
	if len(racks) < 2 {
		t.Errorf("agents in %d racks (%v), want at least 2", len(racks), racks)
	}

	// Every example spec can run on these agents: each ${VAR} its health
	// checks and command lines read is set (--env) for every service on
	// every agent that runs it, ports are distinct within an agent (its
	// services share the container's 127.0.0.1), and quorums leave a
	// machine free to step.
	specs, err := filepath.Glob("../../examples/specs/*.yaml")
	if err != nil || len(specs) == 0 {
		t.Fatalf("no example specs: %v", err)
	}
	for _, f := range specs {
		sp := exampleSpec(t, f)
		for name, svc := range sp.Services {
			vars := specVars(svc)
			runners := 0
			for _, a := range top.agents {
				if !contains(agentServices(a), name) {
					continue
				}
				runners++
				env := agentEnv(a, name)
				for _, v := range vars {
					if env[v] == "" {
						t.Errorf("%s: service %s reads ${%s}, which agent %s does not set (--env %s:%s=...)", filepath.Base(f), name, v, a.Service, name, v)
					}
				}
			}
			if runners == 0 {
				t.Errorf("%s: no agent runs service %s", filepath.Base(f), name)
			} else if q := svc.Quorum.Min(runners); q >= runners {
				t.Errorf("%s: service %s: quorum %s of %d agents leaves none free to step", filepath.Base(f), name, svc.Quorum, runners)
			}
		}
	}
	for _, a := range top.agents {
		ports := map[string]string{}
		for _, svc := range agentServices(a) {
			p := agentEnv(a, svc)["DCROLL_PORT"]
			if other, dup := ports[p]; dup && p != "" {
				t.Errorf("agent %s: services %s and %s both have DCROLL_PORT=%s", a.Service, other, svc, p)
			}
			ports[p] = svc
		}
	}

	// The coordinator's dashboard is published.
	checkFixed(top.coordinator.Service)
	checkFixed(top.publish.Service)
}

// exampleSpec loads a spec named in the compose file (an image path) or in
// examples/specs.
func exampleSpec(t *testing.T, path string) *spec.Spec {
	t.Helper()
	local := filepath.Join("../../examples/specs", filepath.Base(path))
	sp, err := spec.Load(local)
	if err != nil {
		t.Fatalf("spec %s (as %s): %v", path, local, err)
	}
	return sp
}

var specVarRE = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// specVars lists the ${VAR}s a service's health check and command read.
func specVars(svc *spec.Service) []string {
	texts := append([]string(nil), svc.Run...)
	if h := svc.Health; h != nil {
		texts = append(append(texts, h.HTTP, h.TCP), h.Command...)
	}
	seen := map[string]bool{}
	var out []string
	for _, s := range texts {
		for _, m := range specVarRE.FindAllStringSubmatch(s, -1) {
			if !seen[m[1]] {
				seen[m[1]] = true
				out = append(out, m[1])
			}
		}
	}
	sort.Strings(out)
	return out
}

// agentServices is the agent's --service list (repeated or comma-separated).
func agentServices(a cmdLine) []string {
	var out []string
	for _, v := range a.Flags["service"] {
		out = append(out, strings.Split(v, ",")...)
	}
	return out
}

// agentEnv is what the agent's --env flags set for service.
func agentEnv(a cmdLine, service string) map[string]string {
	env := map[string]string{}
	for _, e := range a.Flags["env"] {
		svc, kv, _ := strings.Cut(e, ":")
		if svc == service || svc == "*" {
			k, v, _ := strings.Cut(kv, "=")
			env[k] = v
		}
	}
	return env
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func findFlag(flags []cli.Flag, name string) cli.Flag {
	for _, f := range flags {
		for _, n := range f.Names() {
			if n == name {
				return f
			}
		}
	}
	return nil
}

func findCommand(cmds []*cli.Command, name string) *cli.Command {
	for _, c := range cmds {
		for _, n := range c.Names() {
			if n == name {
				return c
			}
		}
	}
	return nil
}

func cmdName(c *cli.Command) string {
	if c == nil {
		return "dcroll"
	}
	return c.Name
}

// TestDockerComposeOnLoopback runs the compose file's dcroll command lines,
// as they are written, on this machine against a real ZooKeeper: the
// origin, the coordinator, publish-and-push (which publishes and pushes the
// example spec), then the agents, and waits until every agent runs the
// pushed version, healthy. What a container would have differently is
// substituted: its fixed address 10.77.x.y becomes 127.77.x.y (0.0.0.0 its
// own address), zookeeper:2181 the test server, the image's examples a
// fresh examples/build.sh output, volumes and container-local directories
// temporary ones, and each agent's DCROLL_PORTs free ports (containers have
// a 127.0.0.1 each; here the agents share one). Agents also get
// --stop-services-on-exit, so that the test leaves nothing running.
func TestDockerComposeOnLoopback(t *testing.T) {
	if testing.Short() {
		t.Skip("starts ZooKeeper, the origin, a coordinator and agents: skipped with -short")
	}
	top := readTopology(t)
	if ln, err := net.Listen("tcp", "127.77.0.1:0"); err != nil {
		t.Skipf("cannot listen on 127.77.0.1 (need the whole 127/8 on loopback): %v", err)
	} else {
		ln.Close()
	}
	zks := zktest.Start(t)
	bin := buildDcroll(t)
	tmp := t.TempDir()

	// The image's /usr/local/share/dcroll/examples (see the Dockerfile).
	examples := filepath.Join(tmp, "image", "examples")
	if out, err := exec.Command("sh", "../../examples/build.sh", examples).CombinedOutput(); err != nil {
		t.Fatalf("examples/build.sh: %v\n%s", err, out)
	}
	specFiles, _ := filepath.Glob("../../examples/specs/*.yaml")
	if err := os.MkdirAll(filepath.Join(examples, "specs"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range specFiles {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(examples, "specs", filepath.Base(f)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	ports := map[string]map[string]int{} // agent service -> dcroll service -> DCROLL_PORT
	portRE := regexp.MustCompile(`^([^:]+):DCROLL_PORT=[0-9]+$`)
	onLoopback := func(inv cmdLine) []string {
		loop := "127." + strings.TrimPrefix(top.fixedIP(t, inv.Service).String(), "10.")
		svc := top.c.Services[inv.Service]
		var args []string
		for _, a := range inv.Argv[1:] {
			a = strings.ReplaceAll(a, "zookeeper:2181", zks.Addr())
			a = strings.ReplaceAll(a, "0.0.0.0:", loop+":")
			a = strings.ReplaceAll(a, "10.77.", "127.77.")
			a = strings.ReplaceAll(a, "/usr/local/share/dcroll/examples", examples)
			for _, v := range svc.Volumes {
				if src, dst, ok := strings.Cut(v, ":"); ok && strings.HasPrefix(a, dst) {
					a = filepath.Join(tmp, "volumes", src) + strings.TrimPrefix(a, dst)
				}
			}
			if strings.HasPrefix(a, "/var/lib/dcroll") {
				a = filepath.Join(tmp, "containers", inv.Service) + a
			}
			if m := portRE.FindStringSubmatch(a); m != nil {
				if ports[inv.Service] == nil {
					ports[inv.Service] = map[string]int{}
				}
				p := freeTCPPort(t)
				ports[inv.Service][m[1]] = p
				a = fmt.Sprintf("%s:DCROLL_PORT=%d", m[1], p)
			}
			args = append(args, a)
		}
		if inv.command() == "agent" {
			args = append(args, "--stop-services-on-exit")
		}
		return args
	}

	logs := filepath.Join(tmp, "logs")
	if err := os.MkdirAll(logs, 0o755); err != nil {
		t.Fatal(err)
	}
	start := func(inv cmdLine) {
		args := onLoopback(inv)
		f, err := os.Create(filepath.Join(logs, inv.Service+".log"))
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, args...)
		cmd.Stdout, cmd.Stderr = f, f
		if err := cmd.Start(); err != nil {
			t.Fatalf("service %s: %v", inv.Service, err)
		}
		t.Logf("service %s: dcroll %s", inv.Service, strings.Join(args, " "))
		t.Cleanup(func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			done := make(chan struct{})
			go func() { _ = cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(15 * time.Second):
				_ = cmd.Process.Kill()
				<-done
			}
			f.Close()
			if t.Failed() {
				b, _ := os.ReadFile(f.Name())
				t.Logf("--- %s log (tail):\n%s", inv.Service, tail(string(b), 30))
			}
		})
	}

	start(top.origin)
	start(top.coordinator)
	// publish-and-push: its lines in order, each to completion.
	for _, inv := range []cmdLine{top.publish, top.push} {
		args := onLoopback(inv)
		out, err := exec.Command(bin, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("service %s: dcroll %s: %v\n%s", inv.Service, strings.Join(args, " "), err, out)
		}
		t.Logf("service %s: dcroll %s\n%s", inv.Service, strings.Join(args, " "), out)
	}
	for _, a := range top.agents {
		start(a)
	}

	conn, err := znodes.Dial(context.Background(), znodes.Options{Servers: zks.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	sp := exampleSpec(t, top.push.Args[0])
	runners := map[string]int{}
	for _, a := range top.agents {
		for _, s := range agentServices(a) {
			runners[s]++
		}
	}
	var last string
	zktest.WaitFor(t, 3*time.Minute, sp.Name+" rolled out on every agent", func() (bool, error) {
		st, err := coordinator.ReadStatus(conn)
		if err != nil {
			return false, err
		}
		last = "queue"
		for _, e := range st.Queue {
			last += fmt.Sprintf(" %s:%s", e.Service, e.State)
		}
		if st.Head == nil || coordinator.Active(st.Queue) != nil || len(st.Agents) != len(top.agents) {
			return false, nil
		}
		for _, ss := range st.Services {
			want := sp.Services[ss.Service]
			if want == nil {
				continue
			}
			last += fmt.Sprintf(" %s%v healthy %d", ss.Service, ss.Versions, ss.Healthy)
			if ss.Versions[want.Version] != runners[ss.Service] || ss.Healthy != runners[ss.Service] {
				return false, nil
			}
		}
		return true, nil
	})
	t.Logf("converged: %s", last)

	// Each agent registered the peer address it was given, and its services
	// answer on their ports with the pushed version.
	st, err := coordinator.ReadStatus(conn)
	if err != nil {
		t.Fatal(err)
	}
	registered := map[string]string{}
	for _, a := range st.Agents {
		registered[a.Machine] = a.PeerAddr
	}
	for _, a := range top.agents {
		want := strings.ReplaceAll(a.flag("peer-listen"), "10.77.", "127.77.")
		if got := registered[a.flag("machine")]; got != want {
			t.Errorf("agent %s registered peer address %q, want %q", a.Service, got, want)
		}
		for svc, port := range ports[a.Service] {
			hs, err := examplebuild.Hello(port)
			if err != nil {
				t.Errorf("agent %s: %s on port %d: %v", a.Service, svc, port, err)
			} else if want := sp.Services[svc].Version; hs.Version != want {
				t.Errorf("agent %s: %s runs %s, want %s", a.Service, svc, hs.Version, want)
			}
		}
	}
}

func freeTCPPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
