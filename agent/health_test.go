package agent

import (
	"testing"
	"time"
)

// TestStepProbeInterval: a step's probes are a quarter of min_healthy
// apart, within [DefaultStepProbeMin, DefaultStepProbeMax] (the rule of
// health itself is supervise.Tracker's, tested there).
func TestStepProbeInterval(t *testing.T) {
	if d := stepProbeInterval(0); d != DefaultStepProbeMin {
		t.Errorf("step interval of min_healthy 0: %s", d)
	}
	if d := stepProbeInterval(time.Hour); d != DefaultStepProbeMax {
		t.Errorf("step interval of min_healthy 1h: %s", d)
	}
	if d := stepProbeInterval(time.Second); d != 250*time.Millisecond {
		t.Errorf("step interval of min_healthy 1s: %s", d)
	}
}
