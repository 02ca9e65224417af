package agent

import (
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"dcroll/znodes"
)

// TestFetchBytesBySource: bytes by source come from the progress reports
// of a fetch; a blob reported again (already present, or fetched by
// another service) is not counted twice.
func TestFetchBytesBySource(t *testing.T) {
	m := newMetrics()
	m.fetched("sha256:a", time.Second, &znodes.BlobProgress{FromRack: 100, FromDC: 20, FromOther: 3}, nil)
	m.fetched("sha256:a", time.Millisecond, &znodes.BlobProgress{FromRack: 100, FromDC: 20, FromOther: 3}, nil)
	m.fetched("sha256:b", time.Second, &znodes.BlobProgress{FromRack: 1, FromOther: 7}, nil)
	m.fetched("sha256:c", time.Second, nil, errors.New("stalled"))
	for source, want := range map[string]float64{"rack": 101, "dc": 20, "other": 10} {
		if got := value(t, m.fetchBytes.WithLabelValues(source)); got != want {
			t.Errorf("fetch bytes from %s = %v, want %v", source, got, want)
		}
	}
	if n := count(m.fetchSeconds); n != 2 {
		t.Errorf("fetch duration series = %d, want 2 (ok, error)", n)
	}
}

// TestStepDuration: a step's duration runs from stepBegan to stepDone and
// is labelled with its service, kind and result.
func TestStepDuration(t *testing.T) {
	m := newMetrics()
	t0 := time.Unix(1000, 0)
	m.stepBegan("web", t0)
	m.stepDone("web", StepUpgrade, "reverted", t0.Add(90*time.Second))
	if got := value(t, m.steps.WithLabelValues("web", "reverted")); got != 1 {
		t.Errorf("steps{web,reverted} = %v, want 1", got)
	}
	var d dto.Metric
	if err := m.stepSeconds.WithLabelValues("web", StepUpgrade, "reverted").(prometheus.Histogram).Write(&d); err != nil {
		t.Fatal(err)
	}
	if h := d.GetHistogram(); h.GetSampleCount() != 1 || h.GetSampleSum() != 90 {
		t.Errorf("step duration: %d samples, sum %v; want 1, 90", h.GetSampleCount(), h.GetSampleSum())
	}
	if n := count(m.stepSeconds); n != 1 {
		t.Errorf("step duration series = %d, want 1", n)
	}
}

func value(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var d dto.Metric
	if err := c.Write(&d); err != nil {
		t.Fatal(err)
	}
	return d.GetCounter().GetValue()
}

func count(c prometheus.Collector) int {
	ch := make(chan prometheus.Metric, 100)
	c.Collect(ch)
	close(ch)
	return len(ch)
}
