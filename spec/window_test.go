package spec

import (
	"testing"
	"time"
)

func TestWindow(t *testing.T) {
	paris, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		t.Fatal(err)
	}
	utc := func(s string) time.Time {
		tm, err := time.Parse("2006-01-02 15:04", s)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	inParis := func(s string) time.Time {
		tm, err := time.ParseInLocation("2006-01-02 15:04", s, paris)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	day := &Window{Start: "01:00", End: "05:00", Timezone: "UTC"}
	night := &Window{Start: "22:00", End: "04:00"} // crosses midnight; "" is UTC
	fr := &Window{Start: "01:00", End: "05:00", Timezone: "Europe/Paris"}
	tests := []struct {
		name      string
		w         *Window
		now       time.Time
		open      bool
		remaining time.Duration
		next      time.Time
	}{
		{"nil", nil, utc("2026-11-22 12:00"), true, AlwaysOpenRemaining, utc("2026-11-22 12:00")},
		{"before", day, utc("2026-11-22 00:59"), false, 0, utc("2026-11-22 01:00")},
		{"start inclusive", day, utc("2026-11-22 01:00"), true, 4 * time.Hour, utc("2026-11-22 01:00")},
		{"inside", day, utc("2026-11-22 04:30"), true, 30 * time.Minute, utc("2026-11-22 04:30")},
		{"last second", day, utc("2026-11-22 05:00").Add(-time.Second), true, time.Second, utc("2026-11-22 05:00").Add(-time.Second)},
		{"end exclusive", day, utc("2026-11-22 05:00"), false, 0, utc("2026-11-23 01:00")},
		{"after", day, utc("2026-11-22 23:00"), false, 0, utc("2026-11-23 01:00")},
		{"night before", night, utc("2026-11-22 21:59"), false, 0, utc("2026-11-22 22:00")},
		{"night start", night, utc("2026-11-22 22:00"), true, 6 * time.Hour, utc("2026-11-22 22:00")},
		{"night before midnight", night, utc("2026-11-22 23:30"), true, 4*time.Hour + 30*time.Minute, utc("2026-11-22 23:30")},
		{"night after midnight", night, utc("2026-11-23 03:00"), true, time.Hour, utc("2026-11-23 03:00")},
		{"night end", night, utc("2026-11-23 04:00"), false, 0, utc("2026-11-23 22:00")},
		{"night midday", night, utc("2026-11-23 12:00"), false, 0, utc("2026-11-23 22:00")},
		// Paris is UTC+1 in winter: 01:00 Paris is 00:00 UTC.
		{"tz open", fr, utc("2026-11-22 00:00"), true, 4 * time.Hour, utc("2026-11-22 00:00")},
		{"tz closed", fr, utc("2026-11-22 04:00"), false, 0, inParis("2026-11-23 01:00")},
		{"tz before, UTC date differs", fr, utc("2026-11-21 23:30"), false, 0, utc("2026-11-22 00:00")},
		// DST: on 2026-03-29 Paris jumps 02:00 -> 03:00, the window is 3h long.
		{"dst short night", fr, inParis("2026-03-29 01:00"), true, 3 * time.Hour, inParis("2026-03-29 01:00")},
		// On 2026-10-25 it falls back 03:00 -> 02:00, the window is 5h long.
		{"dst long night", fr, inParis("2026-10-25 01:00"), true, 5 * time.Hour, inParis("2026-10-25 01:00")},
		{"invalid window is closed", &Window{Start: "1", End: "2"}, utc("2026-11-22 01:30"), false, 0, time.Time{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.w.Open(tt.now); got != tt.open {
				t.Errorf("Open = %v, want %v", got, tt.open)
			}
			if got := tt.w.Remaining(tt.now); got != tt.remaining {
				t.Errorf("Remaining = %v, want %v", got, tt.remaining)
			}
			if got := tt.w.NextOpen(tt.now); !got.Equal(tt.next) {
				t.Errorf("NextOpen = %v, want %v", got, tt.next)
			}
			if next := tt.w.NextOpen(tt.now); !next.IsZero() && !tt.w.Open(next) {
				t.Errorf("window not open at NextOpen %v", next)
			}
		})
	}
}

// Paris changes clocks at 01:00 UTC: on 2026-03-29 02:00 CET (UTC+1) becomes
// 03:00 CEST (UTC+2), so 02:00-02:59 does not exist; on 2026-10-25 03:00 CEST
// becomes 02:00 CET, so 02:00-02:59 happens twice. Instants are written in
// UTC so that the repeated hour is unambiguous; names give the Paris clock.
func TestWindowDST(t *testing.T) {
	utc := func(s string) time.Time {
		tm, err := time.Parse("2006-01-02 15:04", s)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	fr := func(start, end string) *Window { return &Window{Start: start, End: end, Timezone: "Europe/Paris"} }
	tests := []struct {
		name      string
		w         *Window
		now       string // UTC
		open      bool
		remaining time.Duration
		next      string // UTC; "" means now
	}{
		// Spring forward, End in the gap: 22:00-02:30 closes at the jump.
		{"spring end in gap, 22:00 CET", fr("22:00", "02:30"), "2026-03-28 21:00", true, 4 * time.Hour, ""},
		{"spring end in gap, 01:50 CET", fr("22:00", "02:30"), "2026-03-29 00:50", true, 10 * time.Minute, ""},
		{"spring end in gap, 03:00 CEST", fr("22:00", "02:30"), "2026-03-29 01:00", false, 0, "2026-03-29 20:00"},
		{"spring end in gap, 03:10 CEST", fr("22:00", "02:30"), "2026-03-29 01:10", false, 0, "2026-03-29 20:00"},
		{"spring end in gap, next night 01:50 CEST", fr("22:00", "02:30"), "2026-03-29 23:50", true, 40 * time.Minute, ""},
		// Spring forward, Start in the gap: 02:30-05:00 opens at the jump.
		{"spring start in gap, 01:30 CET", fr("02:30", "05:00"), "2026-03-29 00:30", false, 0, "2026-03-29 01:00"},
		{"spring start in gap, 03:00 CEST", fr("02:30", "05:00"), "2026-03-29 01:00", true, 2 * time.Hour, ""},
		// Spring forward, spanning the jump: 01:00-05:00 is 3 real hours.
		{"spring spanning, 01:30 CET", fr("01:00", "05:00"), "2026-03-29 00:30", true, 150 * time.Minute, ""},
		{"spring spanning, 03:30 CEST", fr("01:00", "05:00"), "2026-03-29 01:30", true, 90 * time.Minute, ""},
		// Spring forward, entirely in the gap: 02:10-02:40 does not open that day.
		{"spring inside gap, day before 02:20 CET", fr("02:10", "02:40"), "2026-03-28 01:20", true, 20 * time.Minute, ""},
		{"spring inside gap, 01:30 CET", fr("02:10", "02:40"), "2026-03-29 00:30", false, 0, "2026-03-30 00:10"},
		{"spring inside gap, 03:00 CEST", fr("02:10", "02:40"), "2026-03-29 01:00", false, 0, "2026-03-30 00:10"},
		{"spring inside gap, day after 02:10 CEST", fr("02:10", "02:40"), "2026-03-30 00:10", true, 30 * time.Minute, ""},
		// Spring forward, crossing midnight with the closed part in the gap:
		// 02:40-02:10 is open from 03-28 02:40 CET to 03-30 02:10 CEST.
		{"spring closed part in gap, 03:00 CET", fr("02:40", "02:10"), "2026-03-28 02:00", true, 46*time.Hour + 10*time.Minute, ""},
		{"spring closed part in gap, 03:00 CEST", fr("02:40", "02:10"), "2026-03-29 01:00", true, 23*time.Hour + 10*time.Minute, ""},
		// Fall back, End in the repeated hour: 22:00-02:30 closes at 02:30 CEST
		// and does not reopen at 02:00 CET.
		{"fall end repeated, 22:00 CEST", fr("22:00", "02:30"), "2026-10-24 20:00", true, 270 * time.Minute, ""},
		{"fall end repeated, 02:20 CEST", fr("22:00", "02:30"), "2026-10-25 00:20", true, 10 * time.Minute, ""},
		{"fall end repeated, 02:30 CEST", fr("22:00", "02:30"), "2026-10-25 00:30", false, 0, "2026-10-25 21:00"},
		{"fall end repeated, 02:15 CET", fr("22:00", "02:30"), "2026-10-25 01:15", false, 0, "2026-10-25 21:00"},
		// Fall back, Start in the repeated hour: 02:30-05:00 opens at 02:30
		// CEST and stays open while the clock shows 02:00-02:30 CET.
		{"fall start repeated, 02:10 CEST", fr("02:30", "05:00"), "2026-10-25 00:10", false, 0, "2026-10-25 00:30"},
		{"fall start repeated, 02:10 CET", fr("02:30", "05:00"), "2026-10-25 01:10", true, 170 * time.Minute, ""},
		// Fall back, spanning the repeated hour: 01:00-05:00 is 5 real hours.
		{"fall spanning, 02:30 CEST", fr("01:00", "05:00"), "2026-10-25 00:30", true, 210 * time.Minute, ""},
		{"fall spanning, 02:30 CET", fr("01:00", "05:00"), "2026-10-25 01:30", true, 150 * time.Minute, ""},
		// Fall back, entirely in the repeated hour: 02:10-02:40 opens once.
		{"fall inside repeated, 02:20 CEST", fr("02:10", "02:40"), "2026-10-25 00:20", true, 20 * time.Minute, ""},
		{"fall inside repeated, 02:20 CET", fr("02:10", "02:40"), "2026-10-25 01:20", false, 0, "2026-10-26 01:10"},
		// Fall back, crossing midnight with the closed part in the repeated
		// hour: 02:45-02:15 is still closed for 30 minutes.
		{"fall closed part repeated, 02:10 CEST", fr("02:45", "02:15"), "2026-10-25 00:10", true, 5 * time.Minute, ""},
		{"fall closed part repeated, 02:20 CEST", fr("02:45", "02:15"), "2026-10-25 00:20", false, 0, "2026-10-25 00:45"},
		{"fall closed part repeated, 02:45 CEST", fr("02:45", "02:15"), "2026-10-25 00:45", true, 24*time.Hour + 30*time.Minute, ""},
		// Normal days and UTC.
		{"paris summer, 01:50 CEST", fr("22:00", "02:30"), "2026-07-01 23:50", true, 40 * time.Minute, ""},
		{"paris summer, 02:30 CEST", fr("22:00", "02:30"), "2026-07-02 00:30", false, 0, "2026-07-02 20:00"},
		{"paris winter, 01:50 CET", fr("22:00", "02:30"), "2026-12-01 00:50", true, 40 * time.Minute, ""},
		{"utc, Paris spring night", &Window{Start: "22:00", End: "02:30", Timezone: "UTC"}, "2026-03-29 01:50", true, 40 * time.Minute, ""},
		{"utc, Paris fall night", &Window{Start: "02:10", End: "02:40", Timezone: "UTC"}, "2026-10-25 02:20", true, 20 * time.Minute, ""},
		{"utc, Paris fall night closed", &Window{Start: "02:10", End: "02:40", Timezone: "UTC"}, "2026-10-25 02:40", false, 0, "2026-10-26 02:10"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now, next := utc(tt.now), utc(tt.now)
			if tt.next != "" {
				next = utc(tt.next)
			}
			if got := tt.w.Open(now); got != tt.open {
				t.Errorf("Open = %v, want %v", got, tt.open)
			}
			if got := tt.w.Remaining(now); got != tt.remaining {
				t.Errorf("Remaining = %v, want %v", got, tt.remaining)
			}
			if got := tt.w.NextOpen(now); !got.Equal(next) {
				t.Errorf("NextOpen = %v, want %v", got.UTC(), next)
			}
		})
	}
}

// TestWindowDSTProperty checks Remaining and NextOpen against Open itself,
// minute by minute, around both Paris transitions of 2026: Remaining(now) is
// the real time until the first minute at which Open is false, and
// NextOpen(now) the first minute at which it is true.
func TestWindowDSTProperty(t *testing.T) {
	windows := []*Window{}
	for _, se := range [][2]string{
		{"22:00", "02:30"}, {"01:00", "05:00"}, {"02:30", "05:00"}, {"02:10", "02:40"},
		{"02:40", "02:10"}, {"02:45", "02:15"}, {"02:00", "03:00"}, {"03:00", "02:00"},
		{"00:00", "23:59"}, {"23:59", "00:00"}, {"12:00", "13:00"},
	} {
		for _, tz := range []string{"Europe/Paris", "UTC"} {
			windows = append(windows, &Window{Start: se[0], End: se[1], Timezone: tz})
		}
	}
	for _, day := range []time.Time{
		time.Date(2026, 3, 29, 0, 0, 0, 0, time.UTC),
		time.Date(2026, 10, 25, 0, 0, 0, 0, time.UTC),
	} {
		from, to := day.Add(-24*time.Hour), day.Add(48*time.Hour) // the instants checked
		// open[i]: Open at from + i minutes, far enough ahead for a window
		// that stays open for two days.
		open := make([]bool, int(to.Add(3*24*time.Hour).Sub(from)/time.Minute))
		for _, w := range windows {
			for i := range open {
				open[i] = w.Open(from.Add(time.Duration(i) * time.Minute))
			}
			for i := 0; from.Add(time.Duration(i) * time.Minute).Before(to); i += 5 {
				now := from.Add(time.Duration(i) * time.Minute)
				j := i // first minute at which Open differs from Open(now)
				for j < len(open) && open[j] == open[i] {
					j++
				}
				if j == len(open) {
					t.Fatalf("%+v at %v: Open stays %v for days", *w, now, open[i])
				}
				first := from.Add(time.Duration(j) * time.Minute)
				rem, next := w.Remaining(now), w.NextOpen(now)
				if open[i] {
					if d := first.Sub(now) - rem; d < 0 || d >= time.Minute {
						t.Errorf("%+v at %v: Remaining = %v, but Open is first false at %v", *w, now, rem, first)
					}
					if !next.Equal(now) {
						t.Errorf("%+v at %v: open, but NextOpen = %v", *w, now, next)
					}
					continue
				}
				if rem != 0 {
					t.Errorf("%+v at %v: closed, but Remaining = %v", *w, now, rem)
				}
				if !next.Equal(first) || !w.Open(next) || w.Open(next.Add(-time.Minute)) {
					t.Errorf("%+v at %v: NextOpen = %v, but Open is first true at %v", *w, now, next, first)
				}
			}
		}
	}
}
