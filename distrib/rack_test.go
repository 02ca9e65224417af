package distrib

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

// TestRackPreference runs 2 racks x 3 nodes against an origin whose upload
// is throttled, so the nodes must share: rack B's bytes must come mostly
// from inside rack B, and every tracker answer must rank same-rack first.
func TestRackPreference(t *testing.T) {
	c := testConn(t)
	var mu sync.Mutex
	var answers []Answer
	o := startOrigin(t, c, OriginConfig{
		UploadRateLimiter: rate.NewLimiter(1<<20, 256<<10),
		OnAnswer: func(a Answer) {
			mu.Lock()
			answers = append(answers, a)
			mu.Unlock()
		},
	})
	const size = 4 << 20
	file, id := writeRandom(t, t.TempDir(), size)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if _, err := Publish(ctx, c, o.cfg.Store, []string{file}, PublishOptions{OriginURL: o.URL(), PieceLength: 128 << 10}); err != nil {
		t.Fatal(err)
	}
	waitSeeding(t, o, id)

	type member struct {
		n    *Node
		rack string
	}
	var ms []member
	for r, rack := range []string{"ra", "rb"} {
		for i := range 3 {
			ip := fmt.Sprintf("127.0.%d.%d", 20+r, 10+i)
			ms = append(ms, member{startNode(t, c, fmt.Sprintf("%s-%d", rack, i), ip, rack, "dc1", nil), rack})
		}
	}
	if err := o.Racks().Refresh(); err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if err := m.n.Racks().Refresh(); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, len(ms))
	start := time.Now()
	for i, m := range ms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, err := m.n.Fetch(ctx, id, nil)
			if err == nil && sha256File(t, p) != id {
				err = fmt.Errorf("content mismatch")
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	t.Logf("6 nodes fetched %d MiB in %s", size>>20, time.Since(start))
	var rackB struct{ rack, dc, other int64 }
	for i, m := range ms {
		if errs[i] != nil {
			t.Fatalf("%s: %v", m.n.cfg.Machine, errs[i])
		}
		p := m.n.Progress()[0]
		t.Logf("%s: from rack %d KiB, other racks %d KiB, origin/other %d KiB", m.n.cfg.Machine, p.FromRack>>10, p.FromDC>>10, p.FromOther>>10)
		if m.rack == "rb" {
			rackB.rack += p.FromRack
			rackB.dc += p.FromDC
			rackB.other += p.FromOther
		}
	}
	if rackB.rack <= rackB.dc {
		t.Fatalf("rack B received %d bytes from its own rack and %d from other racks: want most from its own rack", rackB.rack, rackB.dc)
	}

	mu.Lock()
	defer mu.Unlock()
	sawRack := false
	for _, a := range answers {
		if a.Self.Rack == "" {
			continue
		}
		cls := classes(a.Self, a.Peers)
		if !ordered(cls) {
			t.Fatalf("answer to %s not ranked same-rack first: %q", a.Self.Machine, cls)
		}
		sawRack = sawRack || (len(cls) > 0 && cls[0] == 'R')
	}
	if !sawRack {
		t.Fatalf("no answer started with a same-rack peer (%d answers)", len(answers))
	}
}

// ordered reports whether classes come in the order R*, D*, X*, O*.
func ordered(cls string) bool {
	rank := map[byte]int{'R': 0, 'D': 1, 'X': 2, 'O': 3}
	for i := 1; i < len(cls); i++ {
		if rank[cls[i]] < rank[cls[i-1]] {
			return false
		}
	}
	return true
}
