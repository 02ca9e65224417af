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
