package checker

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// synthLog writes event log lines: "t machine version kind" with t in
// seconds after t0, service store.
func synthLog(lines ...string) []byte {
	t0 := time.Date(2026, 12, 2, 1, 0, 0, 0, time.UTC)
	var b strings.Builder
	for i, l := range lines {
		var sec float64
		var m, v, k string
		if _, err := fmt.Sscanf(l, "%g %s %s %s", &sec, &m, &v, &k); err != nil {
			panic(l)
		}
		at := t0.Add(time.Duration(sec * float64(time.Second)))
		fmt.Fprintf(&b, "%s store %s %s %s pid=%d\n", at.Format(time.RFC3339Nano), m, v, k, 100+i)
	}
	b.WriteString("garbage line\n") // skipped: Judge reports it
	return []byte(b.String())
}

var racks3 = []Group{{"r1", []string{"m1", "m2"}}, {"r2", []string{"m3", "m4"}}, {"r3", []string{"m5", "m6"}}}

// step is one instance's step from 1.0.0 to 2.0.0: down at a, up at b.
func step(m string, a, b float64) []string {
	return []string{fmt.Sprintf("%g %s 1.0.0 down", a, m), fmt.Sprintf("%g %s 2.0.0 up", b, m)}
}

func steps(ss ...[]string) []string {
	var out []string
	for _, s := range ss {
		out = append(out, s...)
	}
	return out
}

func TestCheckDomains(t *testing.T) {
	for _, tc := range []struct {
		name   string
		log    []string
		settle time.Duration
		want   []string // substrings, one per violation; nil: none
	}{
		{"racks whole, one after another, in order",
			steps(step("m1", 1, 3), step("m2", 1.2, 3.1), step("m3", 4, 6), step("m4", 4.1, 6.2), step("m5", 7, 9), step("m6", 7.5, 9.5)), 0, nil},
		{"a rack not as a whole: m2 went after m1 was back",
			steps(step("m1", 1, 2), step("m2", 2.5, 3.5), step("m3", 4, 6), step("m4", 4.1, 6.2), step("m5", 7, 9), step("m6", 7.5, 9.5)), 0,
			[]string{"domain r1 did not go as a whole: a step of m1,m2 was over at 01:00:02.000 before the last went down at 01:00:02.500"}},
		{"quick restarts: the steps overlap within the settle time",
			steps(step("m1", 1, 1.1), step("m2", 1.3, 1.4), step("m3", 3, 3.1), step("m4", 3.05, 3.2), step("m5", 5, 5.1), step("m6", 5.5, 5.6)), time.Second, nil},
		{"quick restarts without the settle time: not whole",
			steps(step("m1", 1, 1.1), step("m2", 1.3, 1.4), step("m3", 3, 3.1), step("m4", 3.05, 3.2), step("m5", 5, 5.1), step("m6", 5.5, 5.6)), 0,
			[]string{"domain r1 did not go as a whole", "domain r3 did not go as a whole"}},
		{"the next rack within the settle time of the last",
			steps(step("m1", 1, 1.1), step("m2", 1.2, 1.3), step("m3", 1.8, 1.9), step("m4", 1.85, 1.95), step("m5", 5, 5.1), step("m6", 5.5, 5.6)), time.Second,
			[]string{"two domains at once: store/m1 (domain r1) stepping 01:00:01.000-01:00:02.100 and store/m3 (domain r2) stepping 01:00:01.800-01:00:02.900",
				"store/m1 (domain r1)", "store/m2 (domain r1)", "store/m2 (domain r1)"}},
		{"two racks down at once",
			steps(step("m1", 1, 3), step("m2", 1.2, 3.1), step("m3", 2, 6), step("m4", 2.1, 6.2), step("m5", 7, 9), step("m6", 7.5, 9.5)), 0,
			[]string{"two domains at once: store/m1 (domain r1)", "store/m1 (domain r1)", "store/m2 (domain r1)", "store/m2 (domain r1)"}},
		{"racks out of order",
			steps(step("m3", 1, 3), step("m4", 1.2, 3.1), step("m1", 4, 6), step("m2", 4.1, 6.2), step("m5", 7, 9), step("m6", 7.5, 9.5)), 0,
			[]string{"domains out of order: r2 went down at 01:00:01.000, before r1"}},
		{"a rack never went down",
			steps(step("m1", 1, 3), step("m2", 1.2, 3.1), step("m3", 4, 6), step("m4", 4.1, 6.2), step("m5", 7, 9)), 0,
			[]string{"domain r3: store/m6 never went down"}},
		{"an outage never over still counts against the next rack",
			append(steps(step("m1", 1, 3), step("m2", 1.2, 3.1), step("m4", 4.1, 6.2), step("m5", 7, 9), step("m6", 7.5, 9.5)), "4 m3 1.0.0 unhealthy"), 0,
			[]string{"two domains at once: store/m3 (domain r2) stepping 01:00:04.000-(not yet) and store/m5", "store/m3 (domain r2) stepping 01:00:04.000-(not yet) and store/m6"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := CheckDomains(ParseEvents(synthLog(tc.log...)), "store", time.Time{}, tc.settle, racks3)
			if len(got) != len(tc.want) {
				t.Fatalf("violations %d, want %d:\n%s", len(got), len(tc.want), strings.Join(got, "\n"))
			}
			for i, w := range tc.want {
				if !strings.Contains(got[i], w) {
					t.Errorf("violation %d %q, want it to contain %q", i, got[i], w)
				}
			}
		})
	}
	// since: an earlier outage does not count.
	log := steps(step("m5", 0.1, 0.2), step("m1", 1, 3), step("m2", 1.2, 3.1), step("m3", 4, 6), step("m4", 4.1, 6.2), step("m5", 7, 9), step("m6", 7.5, 9.5))
	evs := ParseEvents(synthLog(log...))
	if got := CheckDomains(evs, "store", evs[0].At.Add(500*time.Millisecond), 0, racks3); len(got) != 0 {
		t.Errorf("since: %v", got)
	}
	if got := CheckDomains(evs, "store", time.Time{}, 0, racks3); len(got) == 0 {
		t.Error("without since, m5's early outage must be out of order")
	}
}

func TestCheckWaves(t *testing.T) {
	waves := []Group{{"dc-1", []string{"m1", "m2", "m3", "m4"}}, {"dc-2", []string{"m5", "m6"}}}
	for _, tc := range []struct {
		name string
		log  []string
		want []string
	}{
		{"dc-2 after every dc-1 instance is up",
			steps(step("m1", 1, 2), step("m2", 2, 3), step("m3", 3, 4), step("m4", 4, 5), step("m5", 5.5, 6), step("m6", 6, 7)), nil},
		{"dc-2 started while m4 was down",
			steps(step("m1", 1, 2), step("m2", 2, 3), step("m3", 3, 4), step("m4", 4, 5), step("m5", 4.5, 6), step("m6", 6, 7)),
			[]string{"wave dc-2 started early: store/m5 went down at 01:00:04.500; wave(s) dc-1 were all up on 2.0.0 at 01:00:05.000"}},
		{"a dc-1 instance never came up on the target",
			steps(step("m1", 1, 2), step("m2", 2, 3), step("m3", 3, 4), []string{"4 m4 1.0.0 down", "5 m4 1.0.0 up"}, step("m5", 5.5, 6), step("m6", 6, 7)),
			[]string{"wave dc-1: store/m4 never came up on 2.0.0", "wave dc-2 started early: store/m5 went down at 01:00:05.500; wave(s) dc-1 were all up on 2.0.0 never"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := CheckWaves(ParseEvents(synthLog(tc.log...)), "store", "2.0.0", time.Time{}, waves)
			if len(got) != len(tc.want) {
				t.Fatalf("violations %d, want %d:\n%s", len(got), len(tc.want), strings.Join(got, "\n"))
			}
			for i, w := range tc.want {
				if !strings.Contains(got[i], w) {
					t.Errorf("violation %d %q, want it to contain %q", i, got[i], w)
				}
			}
		})
	}
}
