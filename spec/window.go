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

// maxOffset is more than any UTC offset (real ones lie within -12h..+14h).
const maxOffset = 26 * time.Hour

// reach returns the first instant at which the wall clock of loc reads
// off after midnight of y-m-d, or later. Usually that is the instant the
// clock shows exactly that time; for a time that does not exist (it lies in
// a gap, such as 02:30 when the clock jumps from 02:00 to 03:00) it is the
// instant of the jump; for a time that occurs twice (the clock falls back) it
// is the first occurrence. y-m-d is normalized as by [time.Date].
func reach(y int, m time.Month, d int, off time.Duration, loc *time.Location) time.Time {
	wall := time.Date(y, m, d, 0, 0, 0, 0, time.UTC).Add(off) // the wall time, read as UTC
	// Walk the zone periods of loc from an instant where the clock surely
	// reads less than wall. Within one period the clock reads instant+offset,
	// which only grows.
	t := wall.Add(-maxOffset)
	for {
		local := t.In(loc)
		_, offset := local.Zone()
		_, end := local.ZoneBounds()
		c := wall.Add(-time.Duration(offset) * time.Second) // the instant that reads wall in this period
		if !c.After(t) {
			return local // the clock is past wall when the period starts: wall is in a gap
		}
		if end.IsZero() || c.Before(end) {
			return c.In(loc)
		}
		t = end
	}
}

// span is one opening of a window: [open, close).
type span struct{ open, close time.Time }

// spans returns the window's openings that start on the local dates from
// two days before now's to three days after, in order. Openings that are
// empty (both bounds in one DST gap) are left out. Openings never overlap,
// but one may close at the instant the next opens (the closed part of a
// window that crosses midnight lies in a gap).
func (w *Window) spans(now time.Time) []span {
	start, end, loc, ok := w.bounds()
	if !ok {
		return nil // an invalid window is closed
	}
	y, m, d := now.In(loc).Date()
	spans := make([]span, 0, 6)
	for day := d - 2; day <= d+3; day++ {
		closeDay := day
		if end < start {
			closeDay++ // crosses midnight: closes the next day
		}
		s := span{reach(y, m, day, start, loc), reach(y, m, closeDay, end, loc)}
		if s.open.Before(s.close) {
			spans = append(spans, s)
		}
	}
	return spans
}

// Open reports whether now is inside the window. A nil window is always
// open; an invalid one never. See [Window] for how DST transitions are
// handled.
func (w *Window) Open(now time.Time) bool {
	if w == nil {
		return true
	}
	spans := w.spans(now)
	for _, s := range spans {
		if !now.Before(s.open) && now.Before(s.close) {
			return true
		}
	}
	return false
}

// Remaining returns the real time (not the wall-clock difference) until
// the window next closes, that is until the first instant at which Open is
// false: 0 if it is closed now, [AlwaysOpenRemaining] for a nil window.
func (w *Window) Remaining(now time.Time) time.Duration {
	if w == nil {
		return AlwaysOpenRemaining
	}
	spans := w.spans(now)
	for i, s := range spans {
		if now.Before(s.open) || !now.Before(s.close) {
			continue
		}
		end := s.close
		for _, next := range spans[i+1:] {
			if !next.open.Equal(end) {
				break
			}
			end = next.close // reopens at once: Open never turns false here
		}
		return end.Sub(now)
	}
	return 0
}

// NextOpen returns the first instant at which Open is true: now if it is
// open, the zero time for an invalid window. A later instant is in the
// window's timezone.
func (w *Window) NextOpen(now time.Time) time.Time {
	if w.Open(now) {
		return now
	}
	spans := w.spans(now)
	for _, s := range spans {
		if s.open.After(now) {
			return s.open
		}
	}
	return time.Time{} // invalid window (a valid one opens on at least one of the next three days)
}

// String is "01:00-05:00 Europe/Paris" ("" for no window).
func (w *Window) String() string {
	if w == nil {
		return ""
	}
	tz := w.Timezone
	if tz == "" {
		tz = "UTC"
	}
	return w.Start + "-" + w.End + " " + tz
}
