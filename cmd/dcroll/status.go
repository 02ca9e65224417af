package main

import (
	"dcroll/internal/units"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"
	"gopkg.in/yaml.v3"

	"dcroll/coordinator"
	"dcroll/spec"
	"dcroll/znodes"
)

func statusCommands() []*cli.Command {
	return []*cli.Command{
		{
			Name:  "status",
			Usage: "show HEAD, the deploy queue and what runs where",
			Description: `Reads /dc/head, /dc/deploy, /dc/members, /dc/current, /dc/down, /dc/staging
and the agents' download progress. --watch redraws every --interval until the
queue is done (or Ctrl-C): the live view of a rollout.

Every member of a service is listed, including absent ones (their agent is
gone, frozen or cut off): an absent member counts as unavailable and holds its
service's rollout back until it returns or an operator removes it (dcroll
machine remove). "3/5 available (quorum 3)" is counted over members.

Examples:
   dcroll status
   dcroll status --watch
   dcroll status --json | jq '.services[] | {service, members}'`,
			Flags: []cli.Flag{
				jsonFlag(),
				&cli.BoolFlag{Name: "watch", Aliases: []string{"w"}, Usage: "redraw until the rollout is finished"},
				&cli.DurationFlag{Name: "interval", Value: time.Second, Usage: "redraw period with --watch"},
			},
			Action: func(c *cli.Context) error {
				return withConn(c, func(conn *znodes.Conn) error {
					for {
						st, err := coordinator.ReadStatus(conn)
						if err != nil {
							return err
						}
						if c.Bool("json") {
							if err := printJSON(c.App.Writer, st); err != nil {
								return err
							}
						} else {
							if c.Bool("watch") {
								fmt.Fprint(c.App.Writer, "\033[H\033[2J")
							}
							printStatus(c.App.Writer, st)
						}
						if !c.Bool("watch") || coordinator.Active(st.Queue) == nil {
							return nil
						}
						select {
						case <-c.Context.Done():
							return nil
						case <-time.After(c.Duration("interval")):
						}
					}
				})
			},
		},
		{
			Name:      "pause",
			Usage:     "stop machines from starting new upgrade steps (steps under way finish)",
			ArgsUsage: "[REASON...]",
			Action: func(c *cli.Context) error {
				return withConn(c, func(conn *znodes.Conn) error {
					if err := coordinator.Pause(conn, "", strings.Join(c.Args().Slice(), " ")); err != nil {
						return err
					}
					fmt.Fprintln(c.App.Writer, "paused: no machine starts a new upgrade step until dcroll resume")
					return nil
				})
			},
		},
		{
			Name:  "resume",
			Usage: "lift a pause and retry a halted rollout",
			Flags: []cli.Flag{jsonFlag()},
			Action: func(c *cli.Context) error {
				return withConn(c, func(conn *znodes.Conn) error {
					res, err := coordinator.Resume(conn, "")
					if err != nil {
						return err
					}
					if c.Bool("json") {
						return printJSON(c.App.Writer, res)
					}
					switch {
					case len(res.Retried) > 0:
						fmt.Fprintf(c.App.Writer, "resumed: retrying %s\n", strings.Join(res.Retried, ", "))
						if len(res.Cleared) > 0 {
							fmt.Fprintf(c.App.Writer, "bad-build records cleared: %s\n", strings.Join(res.Cleared, ", "))
						}
					case res.Unpaused:
						fmt.Fprintln(c.App.Writer, "resumed")
					default:
						fmt.Fprintln(c.App.Writer, "nothing was paused or halted")
					}
					return nil
				})
			},
		},
	}
}

func printStatus(w io.Writer, st *coordinator.Status) {
	if st.Head == nil {
		fmt.Fprintln(w, "HEAD: none (push a spec with dcroll push SPEC)")
	} else {
		fmt.Fprintf(w, "HEAD: %s %s (%s by %s at %s)\n", spec.ShortID(st.Head.SpecID), st.Head.Name, st.Head.Action, st.Head.By, st.Head.At.Local().Format(time.DateTime))
	}
	if st.Control.Paused {
		fmt.Fprintf(w, "PAUSED by %s: %s\n", st.Control.By, dash(st.Control.Reason))
	}
	if len(st.Queue) > 0 {
		fmt.Fprintln(w, "\nDeploy queue:")
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for i, e := range st.Queue {
			extra := ""
			if e.State == znodes.DeployHalted {
				extra = "  " + e.Reason
				if e.Machine != "" {
					extra += " on " + e.Machine
				}
			}
			fmt.Fprintf(tw, "  %d\t%s\t%s -> %s\t%s\t%s%s\n", i+1, e.Service, dash(e.FromVersion), e.Version, e.Kind, strings.ToUpper(e.State), extra)
		}
		tw.Flush()
	}
	fmt.Fprintln(w, "\nServices:")
	for _, s := range st.Services {
		var vs []string
		for v, n := range s.Versions {
			vs = append(vs, fmt.Sprintf("%s×%d", v, n))
		}
		sort.Strings(vs)
		fmt.Fprintf(w, "  %s  target %s  %d/%d available (quorum %d)  %d mid-step  %d staged  %s\n", s.Service, dash(s.Target), s.Available, s.Total, s.Quorum, len(s.Down), s.Staged, strings.Join(vs, " "))
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for _, m := range s.Members {
			fmt.Fprintf(tw, "    %s\t%s/%s\t%s\t%s\t%s\n", m.Machine, dash(m.DC), dash(m.Rack), dash(m.Version), memberState(m), m.Detail)
		}
		tw.Flush()
	}
	for _, p := range st.Progress {
		for _, b := range p.Blobs {
			if b.Done {
				continue
			}
			fmt.Fprintf(w, "  %s %s %s\n", p.Machine, shortBlob(b.Blob), bar(b.Bytes, b.Total, b.RateBps, b.Peers, b.Source))
		}
	}
}

// memberState is "available", or why not: "absent (last seen 1.0.0 at ...)",
// "mid-step (upgrade 1.0.0 -> 2.0.0 since ...)", "failed", ...
func memberState(m coordinator.MemberStatus) string {
	if m.Available {
		return "available"
	}
	return dash(m.Why)
}

func shortBlob(id string) string {
	if len(id) > 19 {
		return id[:19]
	}
	return id
}

// bar renders a progress bar line: [#####.....] 42% 12.3 MiB/s 5 peers swarm.
func bar(done, total int64, rate float64, peers int, source string) string {
	const width = 30
	frac := 0.0
	if total > 0 {
		frac = float64(done) / float64(total)
	}
	n := int(frac * width)
	return fmt.Sprintf("[%s%s] %3.0f%% %s/s %d peers %s", strings.Repeat("#", n), strings.Repeat(".", width-n), frac*100, units.HumanBytes(int64(rate)), peers, source)
}

func printYAML(w io.Writer, v any) error {
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	defer enc.Close()
	return enc.Encode(v)
}
