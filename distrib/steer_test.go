package distrib

import "testing"

// The window holds windowSpan of the measured rate, never less than the
// configured window, and an unlimited window stays unlimited.
func TestSteeringWindowFollowsRate(t *testing.T) {
	const pl = 128 << 10
	for _, tc := range []struct {
		name        string
		windowBytes int64
		rates       []float64 // bytes/s, in turn
		wantPieces  int
	}{
		{"no rate yet", DefaultRequestWindow, nil, 2},
		{"a 16 Mbit/s link keeps the default", DefaultRequestWindow, []float64{2e6}, 2},
		{"10 Gbit/s", DefaultRequestWindow, []float64{2e6, 1.25e9}, 1221}, // 1.25e9 x 0.128 s / 128 KiB, rounded up
		{"slower again shrinks to the floor", 1 << 20, []float64{1.25e9, 1e6}, 8},
		{"a stall keeps the window", DefaultRequestWindow, []float64{1.25e9, 0}, 1221},
		{"unlimited", -1, []float64{2e6}, unlimitedWindow},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSteering(0, 0, pl, tc.windowBytes)
			for _, r := range tc.rates {
				s.adapt(r)
			}
			if s.window != tc.wantPieces {
				t.Fatalf("window %d pieces, want %d", s.window, tc.wantPieces)
			}
		})
	}
}
