package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"dcroll/znodes"
)

// usageError marks a bad invocation (exit status 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func exitCode(err error) int {
	var u usageError
	if errors.As(err, &u) {
		return 2
	}
	return 1
}

func oneLine(err error) string {
	return strings.ReplaceAll(strings.TrimSpace(err.Error()), "\n", "; ")
}

// NewApp builds the dcroll command tree writing to stdout and stderr.
func NewApp(stdout, stderr io.Writer) *cli.App {
	app := &cli.App{
		Name:  "dcroll",
		Usage: "ZooKeeper-coordinated rollouts for a data center",
		Description: `dcroll pushes a staging spec (services, versions, blobs, dependencies, quorum)
to ZooKeeper. Agents on every machine fetch the blobs through a rack-aware
BitTorrent swarm, mlock them, and upgrade themselves one machine at a time per
service, in dependency order, never below the service's quorum.

A typical night:
   dcroll blob publish build/api.tar.gz build/db.tar.gz   # prints blob ids for the spec
   dcroll push --dry-run nightly.yaml                      # see the plan
   dcroll push nightly.yaml                                # HEAD moves, agents roll
   dcroll status --watch                                   # follow it
   dcroll rollback                                         # HEAD back to the previous spec

ZooKeeper is found with --zk (or DCROLL_ZK); everything lives under --root.`,
		Writer:               stdout,
		ErrWriter:            stderr,
		EnableBashCompletion: true,
		HideHelpCommand:      true,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "zk", Value: "127.0.0.1:2181", EnvVars: []string{"DCROLL_ZK"}, Usage: "ZooKeeper connect string `HOST:PORT[,HOST:PORT...]`"},
			&cli.StringFlag{Name: "root", Value: znodes.DefaultRoot, EnvVars: []string{"DCROLL_ROOT"}, Usage: "root `ZNODE` of this data center"},
			&cli.DurationFlag{Name: "zk-timeout", Value: 5 * time.Second, EnvVars: []string{"DCROLL_ZK_TIMEOUT"}, Usage: "how long to wait for a ZooKeeper session before giving up"},
			&cli.StringFlag{Name: "log-level", Value: "info", EnvVars: []string{"DCROLL_LOG_LEVEL"}, Usage: "debug, info, warn or error"},
			&cli.StringFlag{Name: "log-format", Value: "text", EnvVars: []string{"DCROLL_LOG_FORMAT"}, Usage: "text or json (structured logs on stderr)"},
		},
		Commands:       commands(),
		Reader:         os.Stdin,
		ExitErrHandler: func(*cli.Context, error) {},
		OnUsageError: func(c *cli.Context, err error, isSubcommand bool) error {
			return usageError{msg: err.Error() + " (see --help)"}
		},
	}
	setUsageErrors(app.Commands, app.OnUsageError)
	return app
}

func setUsageErrors(cmds []*cli.Command, h cli.OnUsageErrorFunc) {
	for _, c := range cmds {
		if c.OnUsageError == nil {
			c.OnUsageError = h
		}
		setUsageErrors(c.Subcommands, h)
	}
}

func commands() []*cli.Command {
	var cmds []*cli.Command
	cmds = append(cmds, specCommands()...)
	cmds = append(cmds, statusCommands()...)
	cmds = append(cmds, agentCommand(), blobCommand(), originCommand(), coordinatorCommand())
	cmds = append(cmds, machineCommand(), badCommand())
	cmds = append(cmds, extraCommands()...)
	cmds = append(cmds, completionCommand())
	return cmds
}

// extraCommands is extended by the daemon files (agent, origin, coordinator).
var extraCommands = func() []*cli.Command { return nil }

func logger(c *cli.Context) *slog.Logger {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.String("log-level"))); err != nil {
		level = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: level}
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
	return znodes.Dial(c.Context, znodes.Options{
		Servers:        c.String("zk"),
		Root:           c.String("root"),
		ConnectTimeout: c.Duration("zk-timeout"),
		Logger:         quietLogger(c),
	})
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

var jsonFlag = &cli.BoolFlag{Name: "json", Usage: "print JSON instead of text"}

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
