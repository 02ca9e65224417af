package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/urfave/cli/v2"

	"dcroll/internal/buildinfo"
	"dcroll/internal/logx"
	"dcroll/spec"
	"dcroll/znodes"
)

// usageError marks a bad invocation: unknown command or flag, wrong
// number of arguments, bad flag value. It exits with status 2; every other
// failure exits with status 1.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// usagef returns a usageError ending with where to read more.
func usagef(helpName, format string, a ...any) error {
	msg := fmt.Sprintf(format, a...)
	if helpName != "dcroll" { // main prefixes every error with "dcroll: "
		msg = helpName + ": " + msg
	}
	return usageError{msg: fmt.Sprintf("%s (see %s --help)", msg, helpName)}
}

func exitCode(err error) int {
	var u usageError
	if errors.As(err, &u) {
		return 2
	}
	var st exitStatus // a command's own status (dcroll plan)
	if errors.As(err, &st) {
		return st.code
	}
	return 1
}

func oneLine(err error) string {
	return strings.ReplaceAll(strings.TrimSpace(err.Error()), "\n", "; ")
}

// Run runs the command line args (args[0] is the program name) the way main
// does: tests run the same code in-process.
func Run(ctx context.Context, stdout, stderr io.Writer, args []string) error {
	return (&App{NewApp(stdout, stderr)}).RunContext(ctx, args)
}

// App is the dcroll command tree. Its RunContext resolves the command line
// against the tree before urfave/cli sees it (see resolve): completion
// requests are answered without running any command, flags are accepted
// anywhere, usage errors are reported uniformly.
type App struct{ *cli.App }

// RunContext runs the command line args (args[0] is the program name).
func (a *App) RunContext(ctx context.Context, args []string) error {
	if words, ok := completionWords(args); ok {
		return a.complete(ctx, a.Writer, words)
	}
	inv, err := a.resolve(args[1:])
	if err != nil {
		return err
	}
	err = a.App.RunContext(ctx, inv.argv(args[0]))
	if znodes.IsNoAuth(err) {
		return notAuthorized(inv, err)
	}
	return err
}

// commandRoles names the role whose credential a command needs in a
// secured tree (dcroll init); the others need only read access.
var commandRoles = map[string]string{
	"push": znodes.RoleRelease, "rollback": znodes.RoleRelease, "pause": znodes.RoleRelease, "resume": znodes.RoleRelease,
	"promote": znodes.RoleRelease, "blob publish": znodes.RoleRelease, "machine remove": znodes.RoleRelease,
	"machine clear": znodes.RoleRelease, "origin": znodes.RoleRelease, "coordinator": znodes.RoleCoordinator,
	"agent": znodes.RoleAgent, "init": znodes.RoleAdmin,
}

// notAuthorized is the one line of a write ZooKeeper refused for the
// client's identity (NOAUTH): what was refused, and whose credential does it.
func notAuthorized(inv *invocation, err error) error {
	var names []string
	for _, c := range inv.path {
		names = append(names, c.Name)
	}
	cmd := strings.Join(names, " ")
	role := commandRoles[cmd]
	if role == "" {
		role = znodes.RoleReader
	}
	return fmt.Errorf("not authorized to %s (%v): run with the %s credentials (--zk-auth FILE or %s; see dcroll init --help)",
		cmd, err, role, znodes.EnvAuth)
}

// NewApp builds the dcroll command tree writing to stdout and stderr. Run
// it with Run: urfave/cli alone stops parsing flags at the first argument.
func NewApp(stdout, stderr io.Writer) *cli.App {
	app := &cli.App{
		Name:  "dcroll",
		Usage: "ZooKeeper-coordinated rollouts for a data center",
		Description: `dcroll pushes a staging spec (services, versions, blobs, dependencies, quorum)
to ZooKeeper. Agents on every machine fetch the blobs through a rack-aware
BitTorrent swarm, mlock them, and upgrade themselves one machine at a time per
service, in dependency order, never below the service's quorum.

A typical night:
   dcroll blob publish --origin http://build1:7070 build/db.tar.gz build/api.tar.gz
                                         # prints the blob ids for the spec
   dcroll push --dry-run nightly.yaml    # see the plan
   dcroll push nightly.yaml              # HEAD moves, agents roll
   dcroll status --watch                 # follow it
   dcroll rollback                       # HEAD back to the previous spec

Flags go anywhere after the command (dcroll status --zk zk1:2181), and "--"
ends them. ZooKeeper is found with --zk (or DCROLL_ZK); everything lives
under --root. Help on one command: dcroll help push, dcroll blob publish -h.
Shell completion: source <(dcroll completion bash).`,
		Writer:          stdout,
		ErrWriter:       stderr,
		HideHelpCommand: true,
		HideVersion:     true,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "zk", Value: "127.0.0.1:2181", EnvVars: []string{"DCROLL_ZK"}, Usage: "ZooKeeper connect string `HOST:PORT[,HOST:PORT...]`"},
			&cli.StringFlag{Name: "root", Value: znodes.DefaultRoot, EnvVars: []string{"DCROLL_ROOT"}, Usage: "root `ZNODE` of this data center"},
			&cli.StringFlag{Name: "zk-auth", EnvVars: []string{"DCROLL_ZK_AUTH_FILE"}, Usage: "digest credential `FILE` (first line user:password, mode 600) for ZooKeeper; or set DCROLL_ZK_AUTH=user:password"},
			&cli.StringFlag{Name: "zk-tls-ca", EnvVars: []string{"DCROLL_ZK_TLS_CA"}, Usage: "connect to ZooKeeper over TLS, trusting the CA bundle `PEM` (the servers' secureClientPort)"},
			&cli.StringFlag{Name: "zk-tls-cert", EnvVars: []string{"DCROLL_ZK_TLS_CERT"}, Usage: "client certificate `PEM` for ZooKeeper TLS (with --zk-tls-key)"},
			&cli.StringFlag{Name: "zk-tls-key", EnvVars: []string{"DCROLL_ZK_TLS_KEY"}, Usage: "client key `PEM` for ZooKeeper TLS"},
			&cli.DurationFlag{Name: "zk-timeout", Value: 5 * time.Second, EnvVars: []string{"DCROLL_ZK_TIMEOUT"}, Usage: "how long to wait for a ZooKeeper session before giving up"},
			&cli.StringFlag{Name: "log-level", Value: "info", EnvVars: []string{"DCROLL_LOG_LEVEL"}, Usage: "`LEVEL`: " + strings.Join(logLevels, ", "),
				Action: oneOf("log-level", logLevels)},
			&cli.StringFlag{Name: "log-format", Value: "text", EnvVars: []string{"DCROLL_LOG_FORMAT"}, Usage: "`FORMAT` of the structured logs on stderr: " + strings.Join(logFormats, ", "),
				Action: oneOf("log-format", logFormats)},
			&cli.BoolFlag{Name: "version", Usage: "print the version and exit (same as dcroll version)"},
		},
		Commands:       commands(),
		Reader:         os.Stdin,
		ExitErrHandler: func(*cli.Context, error) {},
		OnUsageError: func(c *cli.Context, err error, isSubcommand bool) error {
			name := "dcroll"
			if c.Command != nil && c.Command.HelpName != "" {
				name = c.Command.HelpName
			}
			return usagef(name, "%v", err)
		},
	}
	setUsageErrors(app.Commands, app.OnUsageError)
	return app
}

// flagValues lists the values of the enumerated flags, for validation and
// completion.
var flagValues = map[string][]string{
	"log-level":  logLevels,
	"log-format": logFormats,
}

var (
	logLevels  = []string{"debug", "info", "warn", "error"}
	logFormats = []string{"text", "json"}
)

// oneOf is the Action of an enumerated string flag.
func oneOf(name string, values []string) func(*cli.Context, string) error {
	return func(c *cli.Context, v string) error {
		if slices.Contains(values, v) {
			return nil
		}
		return usagef("dcroll", "invalid value %q for --%s: want %s", v, name, strings.Join(values, "|"))
	}
}

// setUsageErrors makes every command report usage errors alike, and hides
// urfave's per-command help subcommand: dcroll help CMD... is resolved
// before urfave runs (see resolve), and "help" must not appear among the
// subcommands offered by completion.
func setUsageErrors(cmds []*cli.Command, h cli.OnUsageErrorFunc) {
	for _, c := range cmds {
		if c.OnUsageError == nil {
			c.OnUsageError = h
		}
		c.HideHelpCommand = true
		setUsageErrors(c.Subcommands, h)
	}
}

func commands() []*cli.Command {
	var cmds []*cli.Command
	cmds = append(cmds, specCommands()...)
	cmds = append(cmds, planCommand())
	cmds = append(cmds, statusCommands()...)
	cmds = append(cmds, agentCommand(), blobCommand(), originCommand(), coordinatorCommand())
	cmds = append(cmds, machineCommand(), badCommand(), dashboardCommand(), keygenCommand(), initCommand())
	cmds = append(cmds, extraCommands()...)
	cmds = append(cmds, completionCommand(), versionCommand())
	return cmds
}

// extraCommands is extended by the daemon files (agent, origin, coordinator).
var extraCommands = func() []*cli.Command { return nil }

func logger(c *cli.Context) *slog.Logger {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.String("log-level"))); err != nil {
		level = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: logx.ReplaceAttr} // durations as strings
	w := c.App.ErrWriter
	if c.String("log-format") == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// quietLogger keeps connection chatter out of interactive commands unless
// --log-level=debug.
func quietLogger(c *cli.Context) *slog.Logger {
	if c.String("log-level") == "debug" {
		return logger(c)
	}
	return slog.New(slog.NewTextHandler(c.App.ErrWriter, &slog.HandlerOptions{Level: slog.LevelError}))
}

// dial connects to ZooKeeper with the global flags.
func dial(c *cli.Context) (*znodes.Conn, error) {
	return dialWith(c, quietLogger(c), 0)
}

// zkSecurity is the global flags' ZooKeeper credentials and TLS files.
func zkSecurity(c *cli.Context) znodes.Security {
	return znodes.Security{AuthFile: c.String("zk-auth"), Auth: os.Getenv(znodes.EnvAuth),
		TLSCA: c.String("zk-tls-ca"), TLSCert: c.String("zk-tls-cert"), TLSKey: c.String("zk-tls-key")}
}

// dialWith connects with the global flags, log and a session timeout (0:
// the default).
func dialWith(c *cli.Context, log *slog.Logger, sessionTimeout time.Duration) (*znodes.Conn, error) {
	o := znodes.Options{
		Servers:        c.String("zk"),
		Root:           c.String("root"),
		ConnectTimeout: c.Duration("zk-timeout"),
		SessionTimeout: sessionTimeout,
		Logger:         log,
	}
	if err := zkSecurity(c).Apply(&o); err != nil {
		return nil, err
	}
	if err := probeZK(c.String("zk"), c.Duration("zk-timeout")); err != nil {
		return nil, err
	}
	return znodes.Dial(c.Context, o)
}

// probeZK dials every server of the connect string once so that nobody
// listening is reported at once, as refused, instead of as "no session"
// after --zk-timeout. It fails only when every server refused: a server
// that accepts, or a dial that times out, leaves the verdict to the
// session wait of znodes.Dial.
func probeZK(servers string, timeout time.Duration) error {
	var refused []string
	for _, s := range zk.FormatServers(strings.Split(servers, ",")) {
		nc, err := net.DialTimeout("tcp", s, min(timeout, time.Second))
		if err == nil {
			nc.Close()
			return nil
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return nil
		}
		refused = append(refused, s)
	}
	return fmt.Errorf("%w: connection refused at %s (%s)", znodes.ErrUnreachable, strings.Join(refused, ","), znodes.UnreachableHint(servers))
}

// withConn runs fn with a connection closed afterwards.
func withConn(c *cli.Context, fn func(*znodes.Conn) error) error {
	conn, err := dial(c)
	if err != nil {
		return err
	}
	defer conn.Close()
	return fn(conn)
}

func jsonFlag() *cli.BoolFlag {
	return &cli.BoolFlag{Name: "json", Usage: "print JSON instead of text"}
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func needArgs(c *cli.Context, min, max int, what string) error {
	n := c.NArg()
	if n < min || (max >= 0 && n > max) {
		return usageError{msg: fmt.Sprintf("%s: expected %s (see %s --help)", c.Command.HelpName, what, c.Command.HelpName)}
	}
	return nil
}

func ctxOf(c *cli.Context) context.Context { return c.Context }

// invocation is a command line resolved against the command tree.
type invocation struct {
	path    []*cli.Command // the commands named, outermost first
	globals []string       // the app's flags, one token each (--zk=HOST)
	flags   []string       // the last command's flags, one token each
	args    []string       // positional arguments
	help    bool           // -h, --help, or dcroll help CMD...
	version bool           // --version
}

func (inv *invocation) leaf() *cli.Command {
	if len(inv.path) == 0 {
		return nil
	}
	return inv.path[len(inv.path)-1]
}

// helpName is "dcroll push", "dcroll blob publish", or "dcroll".
func (inv *invocation) helpName() string {
	name := "dcroll"
	for _, c := range inv.path {
		name += " " + c.Name
	}
	return name
}

// argv is the command line in the order urfave/cli parses: global flags,
// commands, the command's flags, then "--" and the arguments.
func (inv *invocation) argv(prog string) []string {
	out := append([]string{prog}, inv.globals...)
	if inv.version {
		return append(out, "version")
	}
	for _, c := range inv.path {
		out = append(out, c.Name)
	}
	out = append(out, inv.flags...)
	if inv.help {
		return append(out, "--help")
	}
	if len(inv.args) > 0 {
		out = append(append(out, "--"), inv.args...)
	}
	return out
}

// resolve splits a command line (without the program name) into commands,
// flags and arguments, wherever the flags are: urfave/cli stops parsing
// flags at the first argument, and only knows the app's flags before the
// command name. It knows every command's flags and which take a value, so
// `dcroll pause investigating --json` is a reason and a flag, and
// `dcroll status --zk zk1:2181` sets the global --zk. "--" ends the flags;
// "-" alone is an argument. It returns a usageError for an unknown command
// or flag, a flag without its value, a missing subcommand, arguments to a
// command that takes none, and a required flag not set.
func (a *App) resolve(argv []string) (*invocation, error) {
	inv := &invocation{}
	type pending struct{ name, tok string } // a flag written before its command
	var early []pending
	for i := 0; i < len(argv); i++ {
		tok := argv[i]
		if tok == "--" {
			inv.args = append(inv.args, argv[i+1:]...)
			break
		}
		if !isFlag(tok) {
			subs := a.subcommands(inv.leaf())
			if len(subs) == 0 || len(inv.args) > 0 {
				inv.args = append(inv.args, tok)
				continue
			}
			if tok == "help" {
				inv.help = true
				continue
			}
			c := lookupCommand(subs, tok)
			if c == nil {
				return nil, usagef(inv.helpName(), "unknown command %q: %s", tok, spec.Suggest(tok, visibleNames(subs), "commands"))
			}
			inv.path = append(inv.path, c)
			continue
		}
		name, _, hasValue := splitFlag(tok)
		if name == "h" || name == "help" {
			inv.help = true
			continue
		}
		f, global := a.flagOf(inv.leaf(), name)
		isEarly := false
		if f == nil {
			if f = descendantFlag(a.subcommands(inv.leaf()), name); f == nil {
				return nil, a.unknownFlag(inv, name)
			}
			isEarly = true
		}
		if takesValue(f) && !hasValue {
			if i+1 == len(argv) {
				return nil, usagef(inv.helpName(), "flag %s needs a value", tok)
			}
			i++
			tok += "=" + argv[i]
		}
		switch {
		case global && name == "version":
			inv.version = true
		case global:
			inv.globals = append(inv.globals, tok)
		case isEarly:
			early = append(early, pending{name, tok})
		default:
			inv.flags = append(inv.flags, tok)
		}
	}
	leaf := inv.leaf()
	for j := len(early) - 1; j >= 0; j-- {
		if f, _ := a.flagOf(leaf, early[j].name); f == nil {
			return nil, a.unknownFlag(inv, early[j].name)
		}
		inv.flags = append([]string{early[j].tok}, inv.flags...)
	}
	if inv.help || inv.version || leaf == nil {
		return inv, nil
	}
	if len(leaf.Subcommands) > 0 {
		return nil, usagef(inv.helpName(), "missing command: %s", strings.Join(visibleNames(leaf.Subcommands), ", "))
	}
	if leaf.ArgsUsage == "" && len(inv.args) > 0 {
		return nil, usagef(inv.helpName(), "takes no arguments, got %q", strings.Join(inv.args, " "))
	}
	for _, f := range leaf.Flags {
		if r, ok := f.(cli.RequiredFlag); !ok || !r.IsRequired() || inv.sets(f) {
			continue
		}
		env := ""
		if d, ok := f.(cli.DocGenerationFlag); ok && len(d.GetEnvVars()) > 0 {
			env = " (or " + d.GetEnvVars()[0] + ")"
		}
		return nil, usagef(inv.helpName(), "--%s is required%s", f.Names()[0], env)
	}
	return inv, nil
}

// sets says whether the command line or the environment sets f.
func (inv *invocation) sets(f cli.Flag) bool {
	for _, tok := range inv.flags {
		name, _, _ := splitFlag(tok)
		if slices.Contains(f.Names(), name) {
			return true
		}
	}
	if d, ok := f.(cli.DocGenerationFlag); ok {
		for _, e := range d.GetEnvVars() {
			if _, set := os.LookupEnv(e); set {
				return true
			}
		}
	}
	return false
}

func (a *App) unknownFlag(inv *invocation, name string) error {
	var known []string
	if leaf := inv.leaf(); leaf != nil {
		known = flagNames(leaf.Flags)
	}
	known = append(known, flagNames(a.Flags)...)
	dashes := "--"
	if len(name) == 1 {
		dashes = "-"
	}
	hint := spec.Suggest("--"+name, known, "flags")
	var prefixed []string // --dry for --dry-run
	for _, k := range known {
		if strings.HasPrefix(k, "--"+name) {
			prefixed = append(prefixed, k)
		}
	}
	if len(prefixed) == 1 {
		hint = fmt.Sprintf("did you mean %q?", prefixed[0])
	}
	return usagef(inv.helpName(), "unknown flag %s%s: %s", dashes, name, hint)
}

// subcommands of c, or the app's commands for nil.
func (a *App) subcommands(c *cli.Command) []*cli.Command {
	if c == nil {
		return a.Commands
	}
	return c.Subcommands
}

// flagOf finds the flag name of command c (nil: the app), else the app's
// global flag of that name.
func (a *App) flagOf(c *cli.Command, name string) (f cli.Flag, global bool) {
	if c != nil {
		if f := lookupFlag(c.Flags, name); f != nil {
			return f, false
		}
	}
	if f := lookupFlag(a.Flags, name); f != nil {
		return f, true
	}
	return nil, false
}

// descendantFlag finds a flag of a command below cmds, for flags written
// before their command (dcroll machine --service db list).
func descendantFlag(cmds []*cli.Command, name string) cli.Flag {
	for _, c := range cmds {
		if f := lookupFlag(c.Flags, name); f != nil {
			return f
		}
		if f := descendantFlag(c.Subcommands, name); f != nil {
			return f
		}
	}
	return nil
}

func isFlag(tok string) bool { return len(tok) > 1 && tok[0] == '-' }

// splitFlag splits "--name=value" (or -name, -n=value).
func splitFlag(tok string) (name, value string, hasValue bool) {
	name = strings.TrimPrefix(strings.TrimPrefix(tok, "-"), "-")
	name, value, hasValue = strings.Cut(name, "=")
	return name, value, hasValue
}

func takesValue(f cli.Flag) bool {
	d, ok := f.(cli.DocGenerationFlag)
	return ok && d.TakesValue()
}

func lookupFlag(flags []cli.Flag, name string) cli.Flag {
	for _, f := range flags {
		if slices.Contains(f.Names(), name) {
			return f
		}
	}
	return nil
}

func lookupCommand(cmds []*cli.Command, name string) *cli.Command {
	for _, c := range cmds {
		if c.HasName(name) {
			return c
		}
	}
	return nil
}

func visibleNames(cmds []*cli.Command) []string {
	var names []string
	for _, c := range cmds {
		if !c.Hidden {
			names = append(names, c.Name)
		}
	}
	return names
}

// flagNames lists "--name" for every visible flag.
func flagNames(flags []cli.Flag) []string {
	var names []string
	for _, f := range flags {
		if v, ok := f.(cli.VisibleFlag); ok && !v.IsVisible() {
			continue
		}
		names = append(names, "--"+f.Names()[0])
	}
	return names
}

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print the version, commit and Go version of this build",
		Description: `The same as dcroll --version; --json for scripts. The coordinator, origin and
agents export the same as the dcroll_build_info metric.

Examples:
   dcroll version
   dcroll version --json`,
		Flags: []cli.Flag{jsonFlag()},
		Action: func(c *cli.Context) error {
			bi := buildinfo.Get()
			if c.Bool("json") {
				return printJSON(c.App.Writer, bi)
			}
			fmt.Fprintf(c.App.Writer, "dcroll %s (commit %s, %s)\n", bi.Version, bi.Commit, bi.GoVersion)
			return nil
		},
	}
}
