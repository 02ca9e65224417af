// Command dcroll is the release engineer's CLI and the agent/origin/
// coordinator daemons of a dcroll data center. See `dcroll --help`.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := NewApp(os.Stdout, os.Stderr).RunContext(ctx, os.Args); err != nil {
		fmt.Fprintf(os.Stderr, "dcroll: %v\n", oneLine(err))
		os.Exit(exitCode(err))
	}
}
