// Command dcroll is the release engineer's CLI and the agent/origin/
// coordinator daemons of a dcroll data center. See `dcroll --help`.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"dcroll/internal/buildinfo"
)

// version and commit may be set at link time (-ldflags "-X main.version=v1.4.0
// -X main.commit=3f2a9c1"); by default they come from the Go build
// information (see internal/buildinfo, which dcroll_build_info reads too).
var version, commit string

func main() {
	if version != "" {
		buildinfo.Version = version
	}
	if commit != "" {
		buildinfo.Commit = commit
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := Run(ctx, os.Stdout, os.Stderr, os.Args); err != nil {
		if _, quiet := err.(exitStatus); !quiet { // a status, not a failure: already reported
			fmt.Fprintf(os.Stderr, "dcroll: %v\n", oneLine(err))
		}
		stop()
		os.Exit(exitCode(err))
	}
}
