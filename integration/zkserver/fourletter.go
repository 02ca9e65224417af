package zkserver

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"time"
)

// FourLetter sends a four-letter word (srvr, ruok, mntr, cons, wchs, conf)
// to the server at addr and returns its answer. Without a deadline in ctx it
// gives up after 5s. A command outside the server's whitelist is an error.
func FourLetter(ctx context.Context, addr, cmd string) (string, error) {
	if len(cmd) != 4 {
		return "", fmt.Errorf("zkserver: four-letter word %q has %d letters", cmd, len(cmd))
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", fmt.Errorf("4lw %s %s: %w", cmd, addr, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := io.WriteString(c, cmd); err != nil {
		return "", fmt.Errorf("4lw %s %s: %w", cmd, addr, err)
	}
	b, err := io.ReadAll(c)
	if err != nil {
		return "", fmt.Errorf("4lw %s %s: %w", cmd, addr, err)
	}
	out := string(b)
	if strings.Contains(out, "not in the whitelist") || strings.Contains(out, "not executed because") {
		return "", fmt.Errorf("4lw %s %s: %s", cmd, addr, strings.TrimSpace(out))
	}
	return out, nil
}
