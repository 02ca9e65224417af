package units

import (
	"bytes"
	"context"
	"io"
	"testing"
)

func TestHumanBytes(t *testing.T) {
	for _, tc := range []struct {
		n    int64
		want string
	}{{0, "0 B"}, {1023, "1023 B"}, {1024, "1.0 KiB"}, {1536, "1.5 KiB"}, {128 << 20, "128.0 MiB"}, {3 << 30, "3.0 GiB"}} {
		if got := HumanBytes(tc.n); got != tc.want {
			t.Errorf("HumanBytes(%d) = %q, want %q", tc.n, got, tc.want)
		}
	}
}

func TestParseBytes(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		bad  bool
	}{{"8GiB", 8 << 30, false}, {"512MiB", 512 << 20, false}, {"1G", 1e9, false}, {"100B", 100, false}, {"1048576", 1 << 20, false}, {"1.5KiB", 1536, false},
		{"-1", 0, true}, {"lots", 0, true}, {"GiB", 0, true}} {
		got, err := ParseBytes(tc.in)
		if (err != nil) != tc.bad || got != tc.want {
			t.Errorf("ParseBytes(%q) = %d, %v", tc.in, got, err)
		}
	}
}

func TestContextReaderStops(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	r := ContextReader(ctx, bytes.NewReader(make([]byte, 10)))
	if _, err := r.Read(make([]byte, 4)); err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := io.ReadAll(r); err != context.Canceled {
		t.Fatalf("read after cancel: %v", err)
	}
}
