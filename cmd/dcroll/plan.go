package main

import (
	"fmt"
	"io"
	"time"

	"github.com/urfave/cli/v2"

	"dcroll/coordinator"
	"dcroll/spec"
	"dcroll/znodes"
)

// Exit statuses of dcroll plan (0 no changes, 1 error, 2 usage error).
const (
	exitPlanChanges  = 10 // changes planned, nothing blocks them
	exitPlanWarnings = 11 // changes planned, with warnings
)

// exitStatus ends a command that succeeded with a status other than 0:
// main exits with code and prints nothing (the command already printed).
type exitStatus struct{ code int }

func (e exitStatus) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func planCommand() *cli.Command {
	return &cli.Command{
		Name:      "plan",
		Usage:     "simulate tonight's push of SPEC against ZooKeeper: order, batches, timing, blockers",
		ArgsUsage: "SPEC.yaml",
		Description: `Reads HEAD, the deploy queue, the members of every service, the pause switch
and the bad builds, and prints what pushing SPEC now would do, writing nothing:
the deploy order (the queue push would write), per service its members and
their state, the batches (max_parallel machines of one rack, racks one after
another; with the spec's waves, data center after data center; with its
domain, whole domains one after another, as many of one at once as
max_parallel and the quorum allow, listed with their member counts) with
the quorum headroom left during each (available members after
the batch minus the quorum), when each batch would run in the window (a step
takes the health min_healthy plus a fixed overhead; a batch that does not fit
before the window closes resumes at the next opening), and warnings for
everything that would block or hold it back: window closed, pause, a quorum
that leaves no member free, absent or unavailable members, bad builds, an
unfinished rollout (push would need --supersede). Downgrades are labelled.

Apply exactly the reviewed plan with dcroll push --if-head HEAD_ID SPEC: it
refuses if HEAD moved since.

Exit status:
   0   no changes (HEAD already is SPEC, or nothing to roll)
   1   error
   2   usage error
   10  changes planned, no warnings
   11  changes planned, with warnings

Examples:
   dcroll plan nightly.yaml
   dcroll plan --json nightly.yaml`,
		Flags: []cli.Flag{jsonFlag()},
		Action: func(c *cli.Context) error {
			if err := needArgs(c, 1, 1, "one spec file"); err != nil {
				return err
			}
			sp, err := spec.Load(c.Args().First())
			if err != nil {
				return err
			}
			return withConn(c, func(conn *znodes.Conn) error {
				np, err := coordinator.PlanNight(c.Context, conn, sp, time.Now())
				if err != nil {
					return err
				}
				if c.Bool("json") {
					err = printJSON(c.App.Writer, np)
				} else {
					err = np.WriteText(c.App.Writer)
				}
				if err != nil {
					return err
				}
				return planStatus(np)
			})
		},
	}
}

// planStatus is dcroll plan's exit status as an error (nil: 0).
func planStatus(np *coordinator.NightPlan) error {
	switch {
	case !np.HasChanges():
		return nil
	case len(np.Warnings) > 0:
		return exitStatus{exitPlanWarnings}
	default:
		return exitStatus{exitPlanChanges}
	}
}

// printDryRunPlan prints the night plan ahead of push --dry-run's result.
func printDryRunPlan(w io.Writer, np *coordinator.NightPlan) {
	if np.Unchanged {
		return // printPush says so
	}
	np.WriteText(w)
	fmt.Fprintln(w)
}
