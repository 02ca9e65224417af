package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"dcroll/coordinator"
	"dcroll/internal/sign"
	"dcroll/spec"
	"dcroll/znodes"
)

func specCommands() []*cli.Command {
	return []*cli.Command{
		{
			Name:      "push",
			Usage:     "make a staging spec HEAD and queue its rollout (atomic)",
			ArgsUsage: "SPEC.yaml",
			Description: `Validates SPEC (YAML or JSON), checks that every blob it names is published,
then in ONE ZooKeeper transaction stores the immutable spec under its sha256 id,
moves HEAD, records history and writes the deploy queue: the changed services
in dependency order. If anything fails, nothing changes.

Pushing the spec HEAD already points to changes nothing. While a rollout is
unfinished a push is refused; --supersede replaces the unfinished queue. A
superseded service keeps an entry even when the new spec does not change it,
and a halted one stays halted when the same build is pushed again (until
dcroll resume): a halt is never dropped silently.

A push is also refused (and --dry-run says so) when:
  - a build in SPEC halted a rollout before (dcroll bad list): push a fixed
    build, or --force to try that build again (its bad record is deleted and
    the history entry names it);
  - a service's quorum is larger than its members (dcroll machine list):
    lower the quorum, or add machines;
  - --if-head ID is given and HEAD is not ID ("none": no HEAD yet).

--dry-run prints the night plan of dcroll plan (batches, timing, warnings),
then what the push would write.

--sign KEY signs the new HEAD (its spec id and sequence number) with a key
from dcroll keygen; agents started with --trust KEY.pub run nothing else.
Pushing the spec HEAD already names with --sign signs HEAD again (how a
running fleet starts requiring signatures). DCROLL_SIGN_KEY works too.

Examples:
   dcroll push --dry-run nightly.yaml   # print the plan, write nothing
   dcroll push nightly.yaml
   dcroll push --if-head 3f2a9c nightly.yaml   # only if HEAD is still 3f2a9c (see dcroll plan)
   dcroll push --supersede hotfix.yaml  # replace the unfinished rollout
   dcroll push --supersede --force nightly.yaml   # retry a build that halted
   dcroll push --sign ~/.dcroll/release.key nightly.yaml`,
			Flags: []cli.Flag{
				&cli.BoolFlag{Name: "dry-run", Aliases: []string{"n"}, Usage: "print the plan and write nothing"},
				&cli.BoolFlag{Name: "supersede", Usage: "replace an unfinished rollout's queue"},
				&cli.StringFlag{Name: "if-head", Usage: "refuse unless HEAD is `ID` (4+ hex digits, or none): apply a reviewed dcroll plan"},
				forceFlag(),
				signFlag(),
				jsonFlag(),
			},
			Action: func(c *cli.Context) error {
				if err := needArgs(c, 1, 1, "one spec file"); err != nil {
					return err
				}
				if h := c.String("if-head"); h != "" {
					if err := coordinator.ValidIfHead(h); err != nil {
						return usagef(c.Command.HelpName, "%v", err)
					}
				}
				sp, err := spec.Load(c.Args().First())
				if err != nil {
					return err
				}
				signer, err := loadSigner(c)
				if err != nil {
					return err
				}
				return movePointer(c, func(conn *znodes.Conn) (*coordinator.PushResult, error) {
					var night *coordinator.NightPlan
					if c.Bool("dry-run") {
						if night, err = coordinator.PlanNight(c.Context, conn, sp, time.Now()); err != nil {
							return nil, err
						}
						if !c.Bool("json") {
							printDryRunPlan(c.App.Writer, night)
						}
					}
					res, err := coordinator.Push(c.Context, conn, sp, coordinator.PushOptions{DryRun: c.Bool("dry-run"), Supersede: c.Bool("supersede"), Force: c.Bool("force"), IfHead: c.String("if-head"), Signer: signer})
					if res != nil {
						res.Night = night
					}
					return res, err
				})
			},
		},
		{
			Name:      "rollback",
			Usage:     "move HEAD back to the previous spec (or SPEC_ID)",
			ArgsUsage: "[SPEC_ID]",
			Description: `Rolling back is moving a pointer: the old spec is still stored, the agents
still hold its blobs. The move goes through the same atomic path as a push,
is recorded in history, and replaces any unfinished (or halted) rollout.
SPEC_ID may be a unique prefix of at least 4 hex digits (see dcroll history).

Rolling back to a spec whose build halted a rollout (dcroll bad list) is
refused like a push; --force tries it again.

A rollback signed with --sign is a new HEAD with a higher sequence number
that names the old spec: agents started with --trust accept it, and refuse
the old signed HEAD itself if someone writes it back (a replay).

Examples:
   dcroll rollback              # HEAD back to the previous spec
   dcroll rollback 3f2a9c       # to a spec of dcroll history
   dcroll rollback --force 3f2a9c`,
			Flags: []cli.Flag{jsonFlag(), &cli.BoolFlag{Name: "dry-run", Aliases: []string{"n"}, Usage: "print the plan and write nothing"}, forceFlag(), signFlag()},
			Action: func(c *cli.Context) error {
				if err := needArgs(c, 0, 1, "at most one spec id"); err != nil {
					return err
				}
				signer, err := loadSigner(c)
				if err != nil {
					return err
				}
				return movePointer(c, func(conn *znodes.Conn) (*coordinator.PushResult, error) {
					return coordinator.Rollback(c.Context, conn, c.Args().First(), coordinator.PushOptions{DryRun: c.Bool("dry-run"), Force: c.Bool("force"), Signer: signer})
				})
			},
		},
		{
			Name:  "history",
			Usage: "list every HEAD move (push and rollback), oldest first, with its outcome",
			Flags: []cli.Flag{jsonFlag()},
			Action: func(c *cli.Context) error {
				return withConn(c, func(conn *znodes.Conn) error {
					h, err := coordinator.ReadHistory(conn)
					if err != nil {
						return err
					}
					if c.Bool("json") {
						return printJSON(c.App.Writer, h) // an empty history is "[]"
					}
					return printHistory(c.App.Writer, h)
				})
			},
		},
		{
			Name:  "spec",
			Usage: "validate specs and read stored ones",
			Subcommands: []*cli.Command{
				{
					Name:      "validate",
					Usage:     "check spec files offline and print their ids and deploy order",
					ArgsUsage: "SPEC.yaml...",
					Flags:     []cli.Flag{jsonFlag()},
					Action: func(c *cli.Context) error {
						if err := needArgs(c, 1, -1, "one or more spec files"); err != nil {
							return err
						}
						type out struct {
							File  string   `json:"file"`
							ID    string   `json:"id"`
							Order []string `json:"order"`
						}
						var outs []out
						for _, f := range c.Args().Slice() {
							sp, err := spec.Load(f)
							if err != nil {
								return err
							}
							order, err := sp.Order()
							if err != nil {
								return err
							}
							outs = append(outs, out{f, sp.ID(), order})
						}
						if c.Bool("json") {
							return printJSON(c.App.Writer, outs)
						}
						for _, o := range outs {
							fmt.Fprintf(c.App.Writer, "%s: ok, id %s, order %s\n", o.File, o.ID, strings.Join(o.Order, " -> "))
						}
						return nil
					},
				},
				{
					Name:      "show",
					Usage:     "print a stored spec (HEAD when no id is given)",
					ArgsUsage: "[SPEC_ID]",
					Flags:     []cli.Flag{jsonFlag()},
					Action: func(c *cli.Context) error {
						if err := needArgs(c, 0, 1, "at most one spec id"); err != nil {
							return err
						}
						return withConn(c, func(conn *znodes.Conn) error {
							id := c.Args().First()
							if id == "" {
								h, _, err := coordinator.ReadHead(conn)
								if err != nil {
									return err
								}
								if h == nil {
									return fmt.Errorf("no spec pushed yet: push one with dcroll push SPEC")
								}
								id = h.SpecID
							} else {
								var err error
								if id, err = coordinator.ResolveSpecID(conn, id); err != nil {
									return err
								}
							}
							sp, err := coordinator.LoadSpec(conn, id)
							if err != nil {
								return err
							}
							if c.Bool("json") {
								return printJSON(c.App.Writer, map[string]any{"id": id, "spec": sp})
							}
							fmt.Fprintf(c.App.Writer, "# spec %s\n", id)
							return printYAML(c.App.Writer, sp)
						})
					},
				},
			},
		},
	}
}

func signFlag() *cli.StringFlag {
	return &cli.StringFlag{Name: "sign", EnvVars: []string{"DCROLL_SIGN_KEY"}, Usage: "sign the new HEAD with the private `KEY` of dcroll keygen (agents with --trust require it)"}
}

// loadSigner reads --sign's key (nil without --sign).
func loadSigner(c *cli.Context) (*sign.Signer, error) {
	if c.String("sign") == "" {
		return nil, nil
	}
	return sign.LoadSigner(c.String("sign"))
}

func forceFlag() *cli.BoolFlag {
	return &cli.BoolFlag{Name: "force", Usage: "push past builds that halted a rollout (dcroll bad list), deleting their records; a halted service pushed again with the same build is not kept halted"}
}

// movePointer runs a push or rollback and prints its result.
func movePointer(c *cli.Context, move func(*znodes.Conn) (*coordinator.PushResult, error)) error {
	return withConn(c, func(conn *znodes.Conn) error {
		res, err := move(conn)
		if err != nil {
			return err
		}
		if c.Bool("json") {
			return printJSON(c.App.Writer, res)
		}
		printPush(c.App.Writer, res)
		return nil
	})
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func printPush(w io.Writer, res *coordinator.PushResult) {
	switch {
	case res.Resigned:
		fmt.Fprintf(w, "HEAD %s (%s) signed again: seq %d, key %s\n", spec.ShortID(res.SpecID), res.Name, res.Seq, res.KeyID)
		return
	case res.Unchanged:
		fmt.Fprintf(w, "HEAD already points to %s (%s): nothing to do\n", spec.ShortID(res.SpecID), res.Name)
		return
	case res.DryRun:
		fmt.Fprintf(w, "dry run: %s would move HEAD %s -> %s (%s)\n", res.Action, dash(spec.ShortID(res.PrevID)), spec.ShortID(res.SpecID), res.Name)
	default:
		fmt.Fprintf(w, "%s: HEAD %s -> %s (%s)\n", res.Action, dash(spec.ShortID(res.PrevID)), spec.ShortID(res.SpecID), res.Name)
	}
	if res.KeyID != "" {
		fmt.Fprintf(w, "signed with key %s (HEAD seq %d)\n", res.KeyID, res.Seq)
	}
	if res.Superseded {
		fmt.Fprintln(w, "the unfinished rollout is superseded")
	}
	for _, h := range res.SupersededHalts {
		on := ""
		if h.Machine != "" {
			on = " on " + h.Machine
		}
		fmt.Fprintf(w, "superseded halted %s %s (halted%s: %s)\n", h.Service, dash(h.Version), on, h.Reason)
		if h.StillHalted {
			fmt.Fprintf(w, "  %s stays halted: the same build is pushed again; dcroll resume retries it (or push --force)\n", h.Service)
		}
	}
	for _, k := range res.Forced {
		fmt.Fprintf(w, "forced past bad build %s: its record is deleted\n", k)
	}
	if len(res.Entries) == 0 {
		fmt.Fprintln(w, "no service changes: agents only record the new spec id")
		return
	}
	reasons := map[string]string{}
	for _, ch := range res.Plan {
		reasons[ch.Service] = strings.Join(ch.Reasons, ", ")
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STEP\tSERVICE\tCHANGE\tFROM\tTO\tWHY")
	for i, e := range res.Entries {
		why, planned := reasons[e.Service]
		if !planned {
			why = "unfinished in the superseded rollout"
		}
		if e.State == znodes.DeployHalted {
			why += "; HALTED: " + e.Reason
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", i+1, e.Service, e.Kind, dash(e.FromVersion), dash(e.Version), why)
	}
	tw.Flush()
}
