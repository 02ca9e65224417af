package znodes

import (
	"errors"
	"strings"
	"testing"

	"github.com/go-zookeeper/zk"
)

type testCounter struct {
	V int `json:"v"`
	N int `json:"n"`
}

func TestUpdateConcurrentNeverLosesAnIncrement(t *testing.T) {
	addr := startZK(t)
	conns := []*Conn{dial(t, addr), dial(t, addr)}
	p := conns[0].Paths().Budget("svc")
	const workers, each = 4, 25
	errs := make(chan error, workers)
	for i := range workers {
		c := conns[i%len(conns)]
		go func() {
			for range each {
				if err := Update(c, p, func(v *testCounter) error { v.N++; return nil }); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range workers {
		if err := recv(t, errs, "worker"); err != nil {
			t.Fatal(err)
		}
	}
	var got testCounter
	st, err := conns[1].GetJSON(p, &got)
	if err != nil {
		t.Fatal(err)
	}
	if got.N != workers*each {
		t.Fatalf("counter = %d, want %d", got.N, workers*each)
	}
	// The node was created by one worker, then set once per other increment.
	if st.Version != workers*each-1 {
		t.Fatalf("version %d, want %d writes after the create", st.Version, workers*each-1)
	}
}

func TestUpdate(t *testing.T) {
	addr := startZK(t)
	c := dial(t, addr)
	boom := errors.New("boom")
	inc := func(v *testCounter) error { v.N++; return nil }
	tests := []struct {
		name        string
		initial     string // "" = no node
		fn          func(*testCounter) error
		wantErr     string // "" = none
		wantData    string
		wantVersion int32
	}{
		{"missing node is created", "", func(v *testCounter) error { v.N = 7; return nil }, "", `{"v":0,"n":7}`, 0},
		{"existing node is set", `{"v":0,"n":1}`, inc, "", `{"v":0,"n":2}`, 1},
		{"unchanged payload is not written", `{"v":0,"n":1}`, func(*testCounter) error { return nil }, "", `{"v":0,"n":1}`, 0},
		{"fn error aborts", `{"v":0,"n":1}`, func(v *testCounter) error { v.N = 99; return boom }, "boom", `{"v":0,"n":1}`, 0},
		{"newer schema refused", `{"v":99,"n":1}`, inc, "newer than this dcroll", `{"v":99,"n":1}`, 0},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := c.Paths().Budget(string(rune('a' + i)))
			if tt.initial != "" {
				if _, err := c.Create(p, []byte(tt.initial), 0); err != nil {
					t.Fatal(err)
				}
			}
			err := Update(c, p, tt.fn)
			if (err != nil) != (tt.wantErr != "") || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
			b, st, err := c.ZK().Get(p)
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tt.wantData || st.Version != tt.wantVersion {
				t.Fatalf("node = %s version %d, want %s version %d", b, st.Version, tt.wantData, tt.wantVersion)
			}
		})
	}
}

// Multi is all or nothing, and its error names the op that failed (the
// library reports nil for the ops before it).
func TestMultiFailureAppliesNothing(t *testing.T) {
	addr := startZK(t)
	c := dial(t, addr)
	created := c.Paths().Budget("new")
	missing := c.Paths().Budget("missing")
	res, err := c.Multi(
		c.CreateOp(created, []byte("x"), 0),
		SetOp(missing, []byte("y"), -1),
		c.CreateOp(c.Paths().Budget("other"), nil, 0),
	)
	if err == nil {
		t.Fatal("Multi with a set on a missing node succeeded")
	}
	if !errors.Is(err, zk.ErrNoNode) || !strings.Contains(err.Error(), "op 1") || !strings.Contains(err.Error(), "set "+missing) {
		t.Fatalf("err = %v; want ErrNoNode naming op 1 (set %s)", err, missing)
	}
	if len(res) != 3 || res[0].Error != nil {
		t.Fatalf("responses %+v: the library reports nil for op 0 (that is why Multi names the failing op)", res)
	}
	for _, p := range []string{created, c.Paths().Budget("other")} {
		if ok, _, err := c.ZK().Exists(p); err != nil || ok {
			t.Fatalf("%s exists=%v (%v) after a failed transaction", p, ok, err)
		}
	}

	// The same transaction with the node in place applies every op.
	if _, err := c.Create(missing, nil, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Multi(c.CreateOp(created, []byte("x"), 0), SetOp(missing, []byte("y"), 0), CheckOp(missing, 1)); err != nil {
		t.Fatal(err)
	}
	if b, _, err := c.ZK().Get(missing); err != nil || string(b) != "y" {
		t.Fatalf("after the transaction: %q %v", b, err)
	}
}
