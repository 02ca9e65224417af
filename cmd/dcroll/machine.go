package main

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"dcroll/coordinator"
	"dcroll/spec"
	"dcroll/znodes"
)

func serviceFlag() *cli.StringFlag {
	return &cli.StringFlag{Name: "service", Aliases: []string{"s"}, Usage: "only this `SERVICE`"}
}

func machineCommand() *cli.Command {
	return &cli.Command{
		Name:  "machine",
		Usage: "list the members of services; remove dead machines, clear stuck steps",
		Description: `A machine becomes a member of a service (/dc/members/<service>/<machine>) the
first time its agent registers it, and stays one until an operator removes it:
a machine that stops answering is "absent", counts as unavailable for the
quorum and holds its service's rollout back, because nobody knows whether it
will come back on the old version. When you know it will not, say so.

Examples:
   dcroll machine list                       # every member, with its state
   dcroll machine list --service store
   dcroll machine remove m5                  # m5 is gone for good (all services)
   dcroll machine remove m5 --service store
   dcroll machine clear m2 --service store   # m2 died mid-step: the step is over`,
		Subcommands: []*cli.Command{
			{
				Name:  "list",
				Usage: "list every member of every service (or of --service)",
				Description: `Prints each member's rack, data center, state (available, or why not:
absent, mid-step, starting, failed, unhealthy), version (for an absent member:
the one it last reported), when it joined and when it was last seen.

Examples:
   dcroll machine list
   dcroll machine list --service store --json`,
				Flags: []cli.Flag{serviceFlag(), jsonFlag()},
				Action: func(c *cli.Context) error {
					if err := needArgs(c, 0, 0, "no arguments"); err != nil {
						return err
					}
					return withConn(c, func(conn *znodes.Conn) error {
						rows, err := coordinator.Machines(conn, c.String("service"))
						if err != nil {
							return err
						}
						if c.Bool("json") {
							return printJSON(c.App.Writer, rows)
						}
						if len(rows) == 0 {
							fmt.Fprintln(c.App.Writer, "no members yet: agents make their machine a member when they first register (dcroll agent --service S)")
							return nil
						}
						tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
						fmt.Fprintln(tw, "SERVICE\tMACHINE\tDC/RACK\tSTATE\tVERSION\tJOINED\tLAST SEEN")
						for _, r := range rows {
							fmt.Fprintf(tw, "%s\t%s\t%s/%s\t%s\t%s\t%s\t%s\n", r.Service, r.Machine, dash(r.DC), dash(r.Rack),
								memberState(r.MemberStatus), dash(r.Version), when(r.Joined), when(r.Seen))
						}
						return tw.Flush()
					})
				},
			},
			{
				Name:      "remove",
				Usage:     "forget a machine: delete its member and step records",
				ArgsUsage: "MACHINE",
				Description: `Deletes MACHINE's member records and step records, of every service or of
--service, in one transaction: it no longer counts against availability nor
holds a rollout back. Use it for a machine that is gone for good. Refused,
changing nothing, while the machine's agent is registered (it would simply
register the machine again): stop the agent first, or --force.

Examples:
   dcroll machine remove m5
   dcroll machine remove m5 --service store`,
				Flags: []cli.Flag{serviceFlag(),
					&cli.BoolFlag{Name: "force", Usage: "remove the records although the machine's agent is registered now"},
					jsonFlag()},
				Action: func(c *cli.Context) error {
					if err := needArgs(c, 1, 1, "one machine"); err != nil {
						return err
					}
					machine := c.Args().First()
					return withConn(c, func(conn *znodes.Conn) error {
						res, err := coordinator.RemoveMachine(conn, machine, coordinator.RemoveOptions{Service: c.String("service"), Force: c.Bool("force")})
						if err != nil {
							return err
						}
						if c.Bool("json") {
							return printJSON(c.App.Writer, res)
						}
						fmt.Fprintf(c.App.Writer, "removed %s from %s (%d records deleted)\n", res.Machine, strings.Join(res.Services, ", "), len(res.Deleted))
						return nil
					})
				},
			},
			{
				Name:      "clear",
				Usage:     "end a machine's step: delete its step record of --service",
				ArgsUsage: "MACHINE",
				Description: `A machine that spends quorum budget writes a step record
(/dc/down/<service>/<machine>) and deletes it once healthy again. A machine
that died mid-step and will not come back keeps it forever, so the service's
budget stays spent. Clearing says "this machine's step is over": it counts as
an absent member again (remove it too if it is gone for good). Refused when
there is no step record, and while the machine's agent is registered (it owns
the step): stop the agent first, or --force.

Examples:
   dcroll machine clear m2 --service store
   dcroll machine clear m2 --service store && dcroll machine remove m2`,
				Flags: []cli.Flag{&cli.StringFlag{Name: "service", Aliases: []string{"s"}, Usage: "the `SERVICE` of the step (required)"},
					&cli.BoolFlag{Name: "force", Usage: "clear the step although the machine's agent is registered now"},
					jsonFlag()},
				Action: func(c *cli.Context) error {
					if err := needArgs(c, 1, 1, "one machine"); err != nil {
						return err
					}
					machine := c.Args().First()
					if c.String("service") == "" {
						return usageError{msg: fmt.Sprintf("%s: --service is required: a step belongs to one service (see %s --help)", c.Command.HelpName, c.Command.HelpName)}
					}
					return withConn(c, func(conn *znodes.Conn) error {
						d, err := coordinator.ClearStep(conn, machine, c.String("service"), c.Bool("force"))
						if err != nil {
							return err
						}
						if c.Bool("json") {
							return printJSON(c.App.Writer, d)
						}
						kind := d.Kind
						if kind == "" {
							kind = "upgrade"
						}
						fmt.Fprintf(c.App.Writer, "cleared %s's %s step in %s (%s -> %s, since %s)\n", d.Machine, kind, c.String("service"), dash(d.From), dash(d.To), when(d.At))
						return nil
					})
				},
			},
		},
	}
}

func badCommand() *cli.Command {
	return &cli.Command{
		Name:  "bad",
		Usage: "list the builds that halted a rollout",
		Description: `When a machine's upgrade to a build fails (or a settings change on it), its
agent halts the rollout and records the build in /dc/bad. A push or rollback
naming that build again is refused until it is pushed with --force (which
deletes the record), and a returning machine never starts it.

Examples:
   dcroll bad list
   dcroll push --supersede --force fixed-settings.yaml`,
		Subcommands: []*cli.Command{
			{
				Name:  "list",
				Usage: "list the recorded bad builds, oldest first",
				Flags: []cli.Flag{jsonFlag()},
				Action: func(c *cli.Context) error {
					if err := needArgs(c, 0, 0, "no arguments"); err != nil {
						return err
					}
					return withConn(c, func(conn *znodes.Conn) error {
						bad, err := coordinator.BadBuilds(conn)
						if err != nil {
							return err
						}
						if c.Bool("json") {
							return printJSON(c.App.Writer, bad)
						}
						if len(bad) == 0 {
							fmt.Fprintln(c.App.Writer, "no bad builds recorded")
							return nil
						}
						tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
						fmt.Fprintln(tw, "WHEN\tSERVICE\tVERSION\tBUILD\tKIND\tMACHINE\tSPEC\tREASON")
						for _, b := range bad {
							fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", when(b.At), b.Service, dash(b.Version), dash(b.Key), dash(b.Kind),
								dash(b.Machine), dash(spec.ShortID(b.SpecID)), dash(b.Reason))
						}
						return tw.Flush()
					})
				},
			},
		},
	}
}

// when formats a time for tables ("-" when unknown).
func when(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format(time.DateTime)
}
