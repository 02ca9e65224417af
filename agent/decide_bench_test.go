package agent

import "testing"

// BenchmarkDecide measures one decision on a 5-machine snapshot: the cost
// paid on every watch nudge.
func BenchmarkDecide(b *testing.B) {
	s := base()
	b.ReportAllocs()
	for b.Loop() {
		_ = Decide(s)
	}
}
