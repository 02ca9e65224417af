package agent_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"dcroll/agent"
	"dcroll/integration/zktest"
	"dcroll/internal/obs/obstest"
	"dcroll/spec"
)

// TestMetricsForPrometheus: the agent's /metrics passes promtool, has the
// build, Go and process families, step and fetch histograms, bytes by
// source and one name for the mlocked bytes; /healthz says whether the
// ZooKeeper session is connected.
func TestMetricsForPrometheus(t *testing.T) {
	obstest.Promtool(t)
	h := newHarness(t)
	h.start("m1", "r1")
	one := func(sp *spec.Spec) *spec.Spec { sp.Services["web"].Quorum = spec.Quorum{Count: 0}; return sp }
	v1 := h.push(one(h.spec("v1", "v1", nil)), false)
	h.waitAll(1, "1.0.0", v1.SpecID)
	v2 := h.push(one(h.spec("v2", "v2", nil)), false)
	h.waitAll(1, "2.0.0", v2.SpecID)

	base := "http://" + h.http["m1"]
	text := obstest.Scrape(t, base, obstest.With(map[string]string{
		"dcroll_agent_step_duration_seconds":  "histogram",
		"dcroll_agent_fetch_duration_seconds": "histogram",
		"dcroll_agent_fetch_bytes_total":      "counter",
		"dcroll_agent_mlocked_bytes":          "gauge",
		"dcroll_agent_upgrade_steps_total":    "counter",
	}), "dcroll_agent_locked_bytes")
	for _, want := range []string{
		`dcroll_agent_step_duration_seconds_count{kind="upgrade",result="ok",service="web"} 1`,
		`dcroll_agent_fetch_duration_seconds_count{result="ok"}`,
		`dcroll_agent_fetch_bytes_total{source="rack"}`,
		`dcroll_agent_fetch_bytes_total{source="dc"}`,
		`dcroll_agent_fetch_bytes_total{source="other"}`,
		`dcroll_build_info{commit=`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	obstest.Healthz(t, base, http.StatusOK)

	// An agent that cannot reach ZooKeeper serves its metrics, and /healthz
	// says 503 and why.
	h.start("m2", "r1", func(c *agent.Config) { c.ZK = "127.0.0.1:1" })
	zktest.WaitFor(t, 10*time.Second, "m2 serving http", func() (bool, error) {
		resp, err := http.Get("http://" + h.http["m2"] + "/healthz")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil, err
	})
	body := obstest.Healthz(t, "http://"+h.http["m2"], http.StatusServiceUnavailable)
	if !strings.Contains(body, "zookeeper") {
		t.Errorf("/healthz of an agent without ZooKeeper says %q, want the reason", body)
	}
	obstest.Scrape(t, "http://"+h.http["m2"], obstest.Common)
}
