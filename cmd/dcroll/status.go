package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"
	"gopkg.in/yaml.v3"

	"dcroll/coordinator"
	"dcroll/internal/units"
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
queue is done or halted (or Ctrl-C): the live view of a rollout, with the time
elapsed since HEAD moved. With --json, --watch prints one JSON object (the
status plus "outcome" and "elapsed") on one line each time something changes.

Exit status with --watch (with or without --json):
   0    the deploy queue is done (or empty)
   3    an entry is halted: the halt reason and the next commands are printed
        (dcroll resume to retry, dcroll rollback SPEC to go back)
   4    an entry was halted by its service's progress_deadline (no progress)
   130  interrupted (Ctrl-C, SIGINT; 143 for SIGTERM)
   1    ZooKeeper or another failure; 2 a usage error

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
					return runStatus(c.Context, conn, c.App.Writer, statusOptions{JSON: c.Bool("json"), Watch: c.Bool("watch"), Interval: c.Duration("interval")})
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
			Name:      "promote",
			Usage:     "end a service's canary phase now: the rest of its machines may step",
			ArgsUsage: "SERVICE",
			Description: `A service whose spec has a canary phase, e.g.

   canary: {machines: 1, bake: 10m}

steps its first machines (the canaries), then holds the rest until every
canary has stayed healthy on the new version for the bake time; the leading
coordinator then promotes the deploy entry by itself. dcroll promote does it
now, for example once you have checked the canaries' dashboards. A spec with
canary but no bake waits for dcroll promote. A canary that fails halts the
rollout as any step does (dcroll resume retries, dcroll rollback moves back).

The BLOCKED BY column of dcroll status shows the canary phase.

Examples:
   dcroll promote store`,
			Flags: []cli.Flag{jsonFlag()},
			Action: func(c *cli.Context) error {
				if err := needArgs(c, 1, 1, "one SERVICE"); err != nil {
					return err
				}
				return withConn(c, func(conn *znodes.Conn) error {
					e, err := coordinator.Promote(conn, c.Args().First(), "")
					if err != nil {
						return err
					}
					if c.Bool("json") {
						return printJSON(c.App.Writer, e)
					}
					fmt.Fprintf(c.App.Writer, "promoted %s %s: the rest of its machines may step\n", e.Service, e.Version)
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
		printQueue(w, st, time.Now())
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

// printQueue prints the deploy queue with, from the leading coordinator's
// night record, each entry's progress, ETA and what blocks it, and the
// night's ETA. Without a record (no coordinator running) it says so.
func printQueue(w io.Writer, st *coordinator.Status, now time.Time) {
	r := st.Rollout
	by := map[string]znodes.ServiceRollout{}
	if r != nil {
		for _, s := range r.Services {
			by[s.Entry] = s
		}
	}
	fmt.Fprintln(w, "\nDeploy queue:")
	switch {
	case r == nil:
		fmt.Fprintln(w, "  (no ETA or blocked-by: no coordinator has written the night record; run dcroll coordinator)")
	case r.HeadID != "" && st.Head != nil && r.HeadID != st.Head.SpecID:
		fmt.Fprintf(w, "  (the night record is of HEAD %s, written %s ago by %s: the coordinator has not caught up)\n",
			spec.ShortID(r.HeadID), ago(now, r.At), dash(r.By))
	default:
		line := "  night: " + r.State
		if !r.ETA.IsZero() {
			line += fmt.Sprintf(", ETA %s (in %s)", r.ETA.Local().Format("15:04:05"), until(now, r.ETA))
		} else if r.State == znodes.NightBlocked || r.State == znodes.NightRolling {
			line += ", no ETA while blocked"
		}
		if r.Remaining > 0 {
			line += fmt.Sprintf(", %d member step(s) left", r.Remaining)
		}
		fmt.Fprintf(w, "%s  [record by %s, %s ago]\n", line, dash(r.By), ago(now, r.At))
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  #\tSERVICE\tCHANGE\tKIND\tSTATE\tDONE\tSTEP\tETA\tBLOCKED BY")
	for i, e := range st.Queue {
		s, ok := by[e.Node]
		done, step, eta, blocked := "-", "-", "-", "-"
		if ok && e.State != znodes.DeployDone && e.Kind != string(spec.ChangeNew) {
			done = fmt.Sprintf("%s %d/%d", progressBar(s.Done, s.Members, 10), s.Done, s.Members)
			if s.StepSeconds > 0 {
				step = (time.Duration(s.StepSeconds * float64(time.Second))).Round(100 * time.Millisecond).String()
				if !s.Measured {
					step = "~" + step
				}
			}
			if !s.ETA.IsZero() {
				eta = s.ETA.Local().Format("15:04:05")
			}
		}
		if ok {
			blocked = dash(s.BlockedBy)
		}
		if e.State == znodes.DeployHalted && !ok {
			blocked = haltLine(e)
		}
		state := strings.ToUpper(e.State)
		if open := strings.Trim(e.Wave+"/"+e.Domain, "/"); open != "" && e.State != znodes.DeployDone {
			state += " " + open // the wave and domain the coordinator opened
		}
		fmt.Fprintf(tw, "  %d\t%s\t%s -> %s\t%s\t%s\t%s\t%s\t%s\t%s\n", i+1, e.Service, dash(e.FromVersion), dash(e.Version), e.Kind,
			state, done, step, eta, blocked)
	}
	tw.Flush()
}

// progressBar is "[####......]": n of total in width characters.
func progressBar(n, total, width int) string {
	k := 0
	if total > 0 {
		k = min(n*width/total, width)
	}
	return "[" + strings.Repeat("#", k) + strings.Repeat(".", width-k) + "]"
}

func ago(now, t time.Time) string   { return max(0, now.Sub(t)).Round(time.Second).String() }
func until(now, t time.Time) string { return max(0, t.Sub(now)).Round(time.Second).String() }

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

// Exit statuses of dcroll status --watch (see its --help), returned as
// exitStatus (plan.go): main exits with them and prints nothing more.
const (
	exitHalted      = 3
	exitNoProgress  = 4
	exitInterrupted = 130 // 128 + SIGINT
	exitTerminated  = 143 // 128 + SIGTERM
)

// interrupted is the exitStatus of a watch ended by ctx (a signal).
func interrupted(ctx context.Context) error {
	// signal.NotifyContext's cause is "<signal> signal received".
	if c := context.Cause(ctx); c != nil && strings.HasPrefix(c.Error(), syscall.SIGTERM.String()+" ") {
		return exitStatus{exitTerminated}
	}
	return exitStatus{exitInterrupted}
}

type statusOptions struct {
	JSON, Watch bool
	Interval    time.Duration // between reads with Watch
}

// Watch outcomes in watchLine.Outcome.
const (
	watchRolling    = "rolling"
	watchDone       = "done"
	watchHalted     = "halted"
	watchNoProgress = "no progress"
)

// watchLine is one line of dcroll status --watch --json.
type watchLine struct {
	*coordinator.Status
	// Outcome is rolling, done, halted or no progress.
	Outcome string `json:"outcome"`
	// Elapsed since HEAD moved (Go duration, whole seconds) while rolling.
	Elapsed string `json:"elapsed,omitempty"`
}

// outcome says whether the rollout st shows is over, and the exitStatus
// dcroll status --watch ends with (nil for done).
func outcome(st *coordinator.Status) (string, error) {
	e := coordinator.Active(st.Queue)
	switch {
	case e == nil:
		return watchDone, nil
	case e.State != znodes.DeployHalted:
		return watchRolling, nil
	}
	if strings.HasPrefix(e.Reason, coordinator.ProgressDeadlinePrefix) {
		return watchNoProgress, exitStatus{exitNoProgress}
	}
	return watchHalted, exitStatus{exitHalted}
}

// haltLine is "store 2.0.0: REASON on m2".
func haltLine(e coordinator.QueueEntry) string {
	s := e.Service + " " + dash(e.Version) + ": " + dash(e.Reason)
	if e.Machine != "" {
		s += " on " + e.Machine
	}
	return s
}

// elapsed is the time since HEAD moved, in whole seconds ("" without HEAD).
func elapsed(st *coordinator.Status, now time.Time) time.Duration {
	if st.Head == nil {
		return 0
	}
	return max(0, now.Sub(st.Head.At)).Round(time.Second)
}

// runStatus prints the status once or, with Watch, until the rollout's
// outcome is known (see the exit statuses in dcroll status --help).
func runStatus(ctx context.Context, conn *znodes.Conn, w io.Writer, o statusOptions) error {
	var last []byte
	for {
		st, err := coordinator.ReadStatus(conn)
		if err != nil {
			if ctx.Err() != nil {
				return interrupted(ctx)
			}
			return err
		}
		state, end := outcome(st)
		switch {
		case o.JSON && o.Watch:
			l := watchLine{Status: st, Outcome: state}
			if state == watchRolling && st.Head != nil {
				l.Elapsed = elapsed(st, time.Now()).String()
			}
			// Compare without the elapsed time and the record's write
			// time: a line per change.
			keyed := *st
			if r := st.Rollout; r != nil {
				rc := *r
				rc.At, rc.By = time.Time{}, ""
				keyed.Rollout = &rc
			}
			key, err := json.Marshal(watchLine{Status: &keyed, Outcome: state})
			if err != nil {
				return err
			}
			if !bytes.Equal(key, last) {
				last = key
				b, err := json.Marshal(l)
				if err != nil {
					return err
				}
				if _, err := fmt.Fprintf(w, "%s\n", b); err != nil {
					return err
				}
			}
		case o.JSON:
			if err := printJSON(w, st); err != nil {
				return err
			}
		default:
			if o.Watch {
				fmt.Fprint(w, "\033[H\033[2J")
			}
			printStatus(w, st)
			if o.Watch {
				printOutcome(w, st, state)
			}
		}
		if !o.Watch {
			return nil
		}
		if state != watchRolling {
			return end
		}
		select {
		case <-ctx.Done():
			return interrupted(ctx)
		case <-time.After(o.Interval):
		}
	}
}

// printOutcome is the footer of dcroll status --watch: the time the
// rollout has taken, or how it ended and what to do next.
func printOutcome(w io.Writer, st *coordinator.Status, state string) {
	switch state {
	case watchRolling:
		if st.Head != nil {
			eta := ""
			if r := st.Rollout; r != nil && !r.ETA.IsZero() {
				eta = fmt.Sprintf("; ETA %s (in %s)", r.ETA.Local().Format("15:04:05"), until(time.Now(), r.ETA))
			}
			fmt.Fprintf(w, "\nRolling for %s (HEAD moved at %s)%s\n", elapsed(st, time.Now()), st.Head.At.Local().Format(time.DateTime), eta)
		}
	case watchDone:
		fmt.Fprintln(w, "\nDone: the deploy queue is finished.")
	default:
		e := coordinator.Active(st.Queue)
		fmt.Fprintf(w, "\nHALTED: %s\n", haltLine(*e))
		fmt.Fprintln(w, "Next: dcroll resume (retry it) or dcroll rollback SPEC (move HEAD back; see dcroll history)")
	}
}

// printHistory prints history lines as the dcroll history table, with
// each move's outcome.
func printHistory(w io.Writer, h []coordinator.HistoryLine) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "WHEN\tACTION\tFROM\tTO\tNAME\tBY\tSERVICES\tOUTCOME\tNOTES")
	for _, e := range h {
		var notes []string
		if e.Superseded {
			notes = append(notes, "superseded an unfinished rollout")
		}
		for _, s := range e.SupersededHalts {
			notes = append(notes, "superseded halted "+s)
		}
		if len(e.Forced) > 0 {
			notes = append(notes, "forced past bad builds "+strings.Join(e.Forced, ","))
		}
		out := e.Outcome
		if e.OutcomeService != "" {
			out += " (" + e.OutcomeService + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.At.Local().Format(time.DateTime), e.Action,
			dash(spec.ShortID(e.From)), spec.ShortID(e.To), e.Name, e.By, dash(strings.Join(e.Services, ",")), out, dash(strings.Join(notes, "; ")))
	}
	return tw.Flush()
}
