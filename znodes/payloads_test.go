package znodes

import "testing"

func TestDeployEntryCompletedBy(t *testing.T) {
	e := DeployEntry{Service: "db", Version: "2", SpecID: "s2"}
	run := func(v, id string, healthy bool) Current {
		return Current{Version: v, SpecID: id, Healthy: healthy, State: StateRunning}
	}
	cases := []struct {
		name string
		cur  []Current
		down int
		want bool
	}{
		{"all upgraded", []Current{run("2", "s2", true), run("2", "s2", true)}, 0, true},
		{"one behind", []Current{run("2", "s2", true), run("1", "s1", true)}, 0, false},
		{"one unhealthy", []Current{run("2", "s2", true), run("2", "s2", false)}, 0, false},
		{"old spec id", []Current{run("2", "s1", true)}, 0, false},
		{"down marker left", []Current{run("2", "s2", true)}, 1, false},
		{"no machines", nil, 0, false},
	}
	for _, tc := range cases {
		if got := e.CompletedBy(tc.cur, tc.down); got != tc.want {
			t.Errorf("%s: CompletedBy = %v, want %v", tc.name, got, tc.want)
		}
	}
}
