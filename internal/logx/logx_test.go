package logx

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"testing"
	"time"
)

// TestReplaceAttrDurations: with ReplaceAttr the JSON handler writes
// durations as strings, at the top level and in groups.
func TestReplaceAttrDurations(t *testing.T) {
	var b bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&b, &slog.HandlerOptions{ReplaceAttr: ReplaceAttr}))
	log.With("retry_in", 5*time.Second).Info("x", "timeout", 1500*time.Millisecond,
		slog.Group("g", "grace", 10*time.Second), "n", 3, "any", any(time.Minute))
	var rec struct {
		RetryIn string `json:"retry_in"`
		Timeout string `json:"timeout"`
		G       struct {
			Grace string `json:"grace"`
		} `json:"g"`
		N   int    `json:"n"`
		Any string `json:"any"`
	}
	if err := json.Unmarshal(b.Bytes(), &rec); err != nil {
		t.Fatalf("%v: %s", err, b.String())
	}
	if rec.RetryIn != "5s" || rec.Timeout != "1.5s" || rec.G.Grace != "10s" || rec.N != 3 || rec.Any != "1m0s" {
		t.Errorf("record = %s", b.String())
	}
}
