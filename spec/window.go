package spec

import (
	"fmt"
	"sync"
	"time"
	_ "time/tzdata" // windows must mean the same on every machine, tzdata installed or not
)

// AlwaysOpenRemaining is what Remaining returns for a nil window (no
// window: rollouts may always progress). Treat it as "at least this long"
// and ask again later.
const AlwaysOpenRemaining = 24 * time.Hour

// parseClock parses "HH:MM" (24h) into an offset from midnight.
func parseClock(s string) (time.Duration, error) {
	if len(s) != 5 || s[2] != ':' || !isDigit(s[0]) || !isDigit(s[1]) || !isDigit(s[3]) || !isDigit(s[4]) {
		return 0, fmt.Errorf("%q is not a time of day; write \"HH:MM\", e.g. \"01:00\"", s)
	}
	h := int(s[0]-'0')*10 + int(s[1]-'0')
	m := int(s[3]-'0')*10 + int(s[4]-'0')
	if h > 23 || m > 59 {
		return 0, fmt.Errorf("%q is not a time of day between 00:00 and 23:59", s)
	}
	return time.Duration(h)*time.Hour + time.Duration(m)*time.Minute, nil
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

var locations sync.Map // name -> *time.Location

// loadLocation is time.LoadLocation with a cache, an empty name meaning
// UTC, and "Local" rejected (machines must agree on the window).
func loadLocation(name string) (*time.Location, error) {
	if name == "" {
		return time.UTC, nil
	}
	if name == "Local" {
		return nil, fmt.Errorf("\"Local\" differs between machines; name a zone such as \"Europe/Paris\" or \"UTC\"")
	}
	if l, ok := locations.Load(name); ok {
		return l.(*time.Location), nil
	}
	l, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("unknown timezone %q; use an IANA name such as \"Europe/Paris\" or \"UTC\"", name)
	}
	locations.Store(name, l)
	return l, nil
}

// bounds parses the window; ok is false for an invalid window (which
// validation rejects), and an invalid window is treated as closed.
func (w *Window) bounds() (start, end time.Duration, loc *time.Location, ok bool) {
	start, err1 := parseClock(w.Start)
	end, err2 := parseClock(w.End)
	loc, err3 := loadLocation(w.Timezone)
	return start, end, loc, err1 == nil && err2 == nil && err3 == nil && start != end
}

// at returns the instant at offset off from midnight, days after the date
// of t (in t's location). Wall times that do not exist (DST gaps) are
// normalized forward by package time.
func at(t time.Time, days int, off time.Duration) time.Time {
	y, m, d := t.Date()
	return time.Date(y, m, d+days, int(off/time.Hour), int(off%time.Hour/time.Minute), 0, 0, t.Location())
}

func sinceMidnight(t time.Time) time.Duration {
	h, m, s := t.Clock()
	return time.Duration(h)*time.Hour + time.Duration(m)*time.Minute + time.Duration(s)*time.Second + time.Duration(t.Nanosecond())
}

// Open reports whether now is inside the window (start inclusive, end
// exclusive, wall clock of the window's timezone). A nil window is always
// open; an invalid one never.
func (w *Window) Open(now time.Time) bool {
	if w == nil {
		return true
	}
	start, end, loc, ok := w.bounds()
	if !ok {
		return false
	}
	t := sinceMidnight(now.In(loc))
	if start < end {
		return start <= t && t < end
	}
	return t >= start || t < end // crosses midnight
}

// Remaining returns how long until the window closes: 0 if it is closed,
// [AlwaysOpenRemaining] for a nil window.
func (w *Window) Remaining(now time.Time) time.Duration {
	if w == nil {
		return AlwaysOpenRemaining
	}
	if !w.Open(now) {
		return 0
	}
	start, end, loc, _ := w.bounds()
	local := now.In(loc)
	days := 0
	if start > end && sinceMidnight(local) >= start {
		days = 1 // crosses midnight and we are before it: closes tomorrow
	}
	return at(local, days, end).Sub(now)
}

// NextOpen returns when the window next opens: now if it is open, the zero
// time for an invalid window.
func (w *Window) NextOpen(now time.Time) time.Time {
	if w.Open(now) {
		return now
	}
	start, _, loc, ok := w.bounds()
	if !ok {
		return time.Time{}
	}
	local := now.In(loc)
	for days := 0; days < 3; days++ {
		if t := at(local, days, start); t.After(now) {
			return t
		}
	}
	return time.Time{} // not reached: start tomorrow is always after now
}
