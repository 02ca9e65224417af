// Package logx holds the slog settings every dcroll command shares.
//
//	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: logx.ReplaceAttr}
package logx

import (
	"log/slog"
	"time"
)

// ReplaceAttr is a slog.HandlerOptions.ReplaceAttr that writes durations as
// strings ("1.5s"): slog's JSON handler writes a time.Duration as integer
// nanoseconds, which nobody reading a log line expects.
func ReplaceAttr(groups []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		return slog.String(a.Key, a.Value.Duration().String())
	}
	if a.Value.Kind() == slog.KindAny {
		if d, ok := a.Value.Any().(time.Duration); ok {
			return slog.String(a.Key, d.String())
		}
	}
	return a
}
