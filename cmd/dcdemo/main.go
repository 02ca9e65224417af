// Command dcdemo runs a whole local data center on a real local ZooKeeper
// and narrates a night's work: a seeder, 6 agents in 2 racks running two
// services (web depends on store), publish and push v1, then v2 with a live
// progress view, then a rollback. It ends by itself and prints what happened.
//
// It runs secured, as a fleet should: ZooKeeper only over TLS (a test CA
// under .demo/tls), the tree initialized with ACLs per role (dcroll init;
// credentials under .demo/creds), and every HEAD signed (dcroll keygen,
// push --sign) with agents that trust only that key (--trust).
//
//	go run ./cmd/dcdemo -dcroll bin/dcroll -dir .demo      (make demo)
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"dcroll/coordinator"
	"dcroll/examples/examplebuild"
	"dcroll/integration/zkserver"
	"dcroll/znodes"
)

type demo struct {
	bin, dir string
	zk       string
	procs    []*exec.Cmd
	conn     *znodes.Conn
	start    time.Time

	// The secured fleet: the CA ZooKeeper's certificate chains to, the
	// roles' credential files, the signing key.
	ca    string
	creds map[string]string
	key   string
}

// roleOf is the role whose credential a demo command runs with.
func roleOf(cmd string) string {
	switch cmd {
	case "origin", "blob", "push", "rollback":
		return znodes.RoleRelease
	case "coordinator":
		return znodes.RoleCoordinator
	case "agent":
		return znodes.RoleAgent
	case "init":
		return znodes.RoleAdmin
	}
	return "" // reads: the tree is world-readable
}

// argv is a dcroll command line of the secured demo: TLS, the command's
// credential, --sign for HEAD moves and --trust for agents.
func (d *demo) argv(args []string) []string {
	out := []string{"--zk", d.zk, "--zk-tls-ca", d.ca}
	if cred := d.creds[roleOf(args[0])]; cred != "" {
		out = append(out, "--zk-auth", cred)
	}
	out = append(out, args...)
	switch args[0] {
	case "push", "rollback":
		out = append(out, "--sign", d.key)
	case "agent":
		out = append(out, "--trust", d.key+".pub")
	}
	return out
}

func main() {
	bin := flag.String("dcroll", "bin/dcroll", "the dcroll binary")
	dir := flag.String("dir", ".demo", "working directory (wiped first)")
	racks := flag.Int("racks", 2, "racks")
	perRack := flag.Int("machines", 3, "machines per rack")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	d := &demo{bin: *bin, dir: *dir, start: time.Now()}
	err := d.run(ctx, *racks, *perRack)
	if err != nil {
		fmt.Fprintln(os.Stderr, "dcdemo:", err)
		os.Exit(1)
	}
}

func (d *demo) say(format string, args ...any) {
	fmt.Printf("[%6.1fs] %s\n", time.Since(d.start).Seconds(), fmt.Sprintf(format, args...))
}

func (d *demo) run(ctx context.Context, racks, perRack int) error {
	bin, err := filepath.Abs(d.bin)
	if err != nil {
		return err
	}
	d.bin = bin
	if err := os.RemoveAll(d.dir); err != nil {
		return err
	}
	for _, sub := range []string{"zk", "build", "origin", "specs", "logs"} {
		if err := os.MkdirAll(filepath.Join(d.dir, sub), 0o755); err != nil {
			return err
		}
	}

	d.say("starting a real ZooKeeper 3.8 (Debian package) on loopback, TLS only for dcroll (a test CA in %s)", filepath.Join(d.dir, "tls"))
	pki, err := zkserver.NewTestPKI(filepath.Join(d.dir, "tls"))
	if err != nil {
		return err
	}
	d.ca = pki.CA
	srv, err := zkserver.Start(ctx, zkserver.Options{Dir: filepath.Join(d.dir, "zk"), MaxSessionTimeout: 60 * time.Second, TLS: pki.TLS(zkserver.ClientAuthNone)})
	if err != nil {
		return err
	}
	// Daemons stop first, while ZooKeeper still serves their goodbyes.
	defer func() {
		d.shutdown()
		srv.Stop()
	}()
	d.zk = srv.SecureAddr()
	d.say("ZooKeeper serving TLS at %s", d.zk)
	if err := d.secure(ctx); err != nil {
		return err
	}
	zo := znodes.Options{Servers: d.zk, Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))}
	if err := (znodes.Security{TLSCA: d.ca}).Apply(&zo); err != nil {
		return err
	}
	d.conn, err = znodes.Dial(ctx, zo)
	if err != nil {
		return err
	}

	d.say("building the example service: hello v1.0.0, v2.0.0")
	build := filepath.Join(d.dir, "build")
	v1, err := examplebuild.Build(ctx, build, "1.0.0", false)
	if err != nil {
		return err
	}
	v2, err := examplebuild.Build(ctx, build, "2.0.0", false)
	if err != nil {
		return err
	}

	originHTTP := fmt.Sprintf("127.0.0.1:%d", freePort())
	d.spawn("origin", "origin", "--store", filepath.Join(d.dir, "origin"), "--listen", "127.0.0.1:0", "--http", originHTTP, "--members-only")
	dash := fmt.Sprintf("127.0.0.1:%d", freePort())
	d.spawn("coordinator", "coordinator", "--http", dash)
	d.say("origin (seeder, web seed, rack-aware tracker) at http://%s; dashboard at http://%s/", originHTTP, dash)

	// From built files to a spec ready to push: one command per release.
	specs := map[string]string{}
	for _, r := range []struct{ name, exe string }{{"demo-v1", v1}, {"demo-v2", v2}} {
		b, err := os.ReadFile(filepath.Join("examples", "specs", r.name+".yaml"))
		if err != nil {
			return err
		}
		p := filepath.Join(d.dir, "specs", r.name+".yaml")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			return err
		}
		specs[r.name] = p
		out, err := d.dcroll(ctx, "blob", "publish", "--json", "--store", filepath.Join(d.dir, "origin"), "--origin", "http://"+originHTTP,
			"--spec", p, "store="+r.exe, "web="+r.exe)
		if err != nil {
			return err
		}
		var blobs []znodes.Blob
		if err := json.Unmarshal([]byte(out), &blobs); err != nil {
			return fmt.Errorf("publish output: %w", err)
		}
		d.say("dcroll blob publish --spec %s store=%s web=%s: %s", p, filepath.Base(r.exe), filepath.Base(r.exe), blobs[0].ID[:19])
	}

	out, err := d.dcroll(ctx, "push", specs["demo-v1"])
	if err != nil {
		return err
	}
	fmt.Print(indent(out))

	d.say("starting %d agents in %d racks, each running store and web", racks*perRack, racks)
	var machines []string
	for r := 1; r <= racks; r++ {
		for m := 1; m <= perRack; m++ {
			name := fmt.Sprintf("r%d-m%d", r, m)
			machines = append(machines, name)
			ip := fmt.Sprintf("127.0.%d.%d", r, m)
			storePort, webPort := freePort(), freePort()
			d.spawn(name, "agent", "--machine", name, "--rack", fmt.Sprintf("rack%d", r), "--dc", "demo1",
				"--service", "store", "--service", "web", "--data-dir", filepath.Join(d.dir, "agents", name),
				"--peer-listen", ip+":0", "--session-timeout", "4s", "--stop-services-on-exit",
				"--env", fmt.Sprintf("store:DCROLL_PORT=%d", storePort), "--env", fmt.Sprintf("web:DCROLL_PORT=%d", webPort))
		}
	}
	if err := d.waitRollout(ctx, "v1", 3*time.Minute); err != nil {
		return err
	}
	d.printStatus()

	d.say("pushing v2: agents fetch it through the swarm, then upgrade store first, one machine at a time, then web")
	out, err = d.dcroll(ctx, "push", specs["demo-v2"])
	if err != nil {
		return err
	}
	fmt.Print(indent(out))
	steps, err := d.follow(ctx, "v2", 5*time.Minute)
	if err != nil {
		return err
	}
	d.printStatus()

	d.say("rolling back: HEAD moves back to v1; the v1 blobs are still on every machine, nothing is downloaded")
	out, err = d.dcroll(ctx, "rollback")
	if err != nil {
		return err
	}
	fmt.Print(indent(out))
	back, err := d.follow(ctx, "rollback", 5*time.Minute)
	if err != nil {
		return err
	}
	d.printStatus()
	out, _ = d.dcroll(ctx, "history")
	fmt.Print(indent(out))
	d.summary(append(steps, back...))
	return nil
}

// step is one machine's observed upgrade of one service.
type step struct {
	machine, service, from, to string
	down, up                   time.Time
}

// follow prints a compact progress line whenever the state changes and
// records each machine's upgrade step, until the queue is done.
func (d *demo) follow(ctx context.Context, label string, limit time.Duration) ([]step, error) {
	deadline := time.Now().Add(limit)
	open := map[string]*step{}
	lastRunning := map[string]string{}
	var done []step
	last := ""
	for {
		st, err := coordinator.ReadStatus(d.conn)
		if err != nil {
			return nil, err
		}
		now := time.Now()
		var parts []string
		for _, s := range st.Services {
			var vs []string
			for v, n := range s.Versions {
				vs = append(vs, fmt.Sprintf("%s×%d", v, n))
			}
			sort.Strings(vs)
			parts = append(parts, fmt.Sprintf("%s[%s healthy %d/%d down %d staged %d]", s.Service, strings.Join(vs, " "), s.Healthy, len(s.Machines), len(s.Down), s.Staged))
			for _, m := range s.Machines {
				key := s.Service + "/" + m.Machine
				busy := m.State == znodes.StateUpgrading || m.State == znodes.StateReverting || !m.Healthy
				if busy && open[key] == nil {
					open[key] = &step{machine: m.Machine, service: s.Service, from: lastRunning[key], down: now}
				}
				if !busy {
					lastRunning[key] = m.Version
				}
				if !busy && open[key] != nil && m.State == znodes.StateRunning {
					stp := open[key]
					stp.to, stp.up = m.Version, now
					done = append(done, *stp)
					delete(open, key)
				}
			}
		}
		var q []string
		for _, e := range st.Queue {
			q = append(q, e.Service+":"+e.State)
		}
		var dl []string
		for _, p := range st.Progress {
			for _, b := range p.Blobs {
				if !b.Done && b.Total > 0 {
					dl = append(dl, fmt.Sprintf("%s %d%%", p.Machine, b.Bytes*100/b.Total))
				}
			}
		}
		line := fmt.Sprintf("queue [%s] %s", strings.Join(q, " "), strings.Join(parts, " "))
		if len(dl) > 0 {
			line += " downloading: " + strings.Join(dl, ", ")
		}
		if line != last {
			d.say("%s: %s", label, line)
			last = line
		}
		if a := coordinator.Active(st.Queue); a == nil && len(open) == 0 {
			return done, nil
		} else if a != nil && a.State == znodes.DeployHalted {
			return done, fmt.Errorf("rollout halted: %s on %s", a.Reason, a.Machine)
		}
		if now.After(deadline) {
			return done, fmt.Errorf("%s did not finish within %s", label, limit)
		}
		select {
		case <-ctx.Done():
			return done, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (d *demo) waitRollout(ctx context.Context, label string, limit time.Duration) error {
	_, err := d.follow(ctx, label, limit)
	return err
}

func (d *demo) summary(steps []step) {
	fmt.Println()
	d.say("summary: %d upgrade steps observed", len(steps))
	var total time.Duration
	for _, s := range steps {
		dur := s.up.Sub(s.down)
		total += dur
		fmt.Printf("    %-6s %-6s %s -> %s  %5.2fs\n", s.service, s.machine, s.from, s.to, dur.Seconds())
	}
	if len(steps) > 0 {
		d.say("mean time per upgrade step (machine down until healthy on the new version): %.2fs", total.Seconds()/float64(len(steps)))
	}
}

func (d *demo) printStatus() {
	out, err := d.dcroll(context.Background(), "status")
	if err != nil {
		fmt.Println("   status:", err)
		return
	}
	fmt.Print(indent(out))
}

// secure makes the administrator's credential, runs dcroll init (ACLs per
// role, a credential per role) and dcroll keygen.
func (d *demo) secure(ctx context.Context) error {
	dir := filepath.Join(d.dir, "creds")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	admin, err := znodes.NewCredential(znodes.RoleAdmin)
	if err != nil {
		return err
	}
	d.creds = map[string]string{znodes.RoleAdmin: filepath.Join(dir, "admin.cred")}
	if err := os.WriteFile(d.creds[znodes.RoleAdmin], []byte(admin+"\n"), 0o600); err != nil {
		return err
	}
	out, err := d.dcroll(ctx, "init", "--credentials", dir)
	if err != nil {
		return err
	}
	d.say("dcroll init: the tree has ACLs per role; credentials in %s", dir)
	fmt.Print(indent(out))
	for _, r := range znodes.Roles[1:] {
		d.creds[r] = filepath.Join(dir, r+".cred")
	}
	d.key = filepath.Join(d.dir, "keys", "release.key")
	if err := os.MkdirAll(filepath.Dir(d.key), 0o700); err != nil {
		return err
	}
	out, err = d.dcroll(ctx, "keygen", d.key)
	if err != nil {
		return err
	}
	d.say("dcroll keygen: %s", strings.TrimSpace(out))
	d.say("every push and rollback is signed with it; agents run with --trust %s.pub", d.key)
	return nil
}

func (d *demo) dcroll(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, d.bin, d.argv(args)...)
	out, err := cmd.Output()
	if err != nil {
		msg := ""
		if ee, ok := err.(*exec.ExitError); ok {
			msg = strings.TrimSpace(string(ee.Stderr))
		}
		return string(out), fmt.Errorf("dcroll %s: %v: %s", strings.Join(args, " "), err, msg)
	}
	return string(out), nil
}

// freePort returns a port on 127.0.0.1 that was free a moment ago.
func freePort() int {
	ports, err := zkserver.FreePorts(1)
	if err != nil {
		return 0
	}
	return ports[0]
}

// spawn starts a long-running dcroll daemon with its log in logs/<name>.log.
func (d *demo) spawn(name string, args ...string) {
	logf, err := os.Create(filepath.Join(d.dir, "logs", name+".log"))
	if err != nil {
		d.say("log %s: %v", name, err)
		return
	}
	cmd := exec.Command(d.bin, d.argv(args)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		d.say("start %s: %v", name, err)
		return
	}
	d.procs = append(d.procs, cmd)
}

func (d *demo) shutdown() {
	for i := len(d.procs) - 1; i >= 0; i-- {
		_ = d.procs[i].Process.Signal(syscall.SIGTERM)
	}
	for _, p := range d.procs {
		done := make(chan struct{})
		go func() { _ = p.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = syscall.Kill(-p.Process.Pid, syscall.SIGKILL)
			<-done
		}
	}
	if d.conn != nil {
		d.conn.Close()
	}
	d.say("demo data center stopped; logs are in %s/logs", d.dir)
}

func indent(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		b.WriteString("    " + l + "\n")
	}
	return b.String()
}
