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
	}{
		{"0", 0}, {"1048576", 1 << 20}, {"100B", 100}, {"100 b", 100},
		{"8GiB", 8 << 30}, {"512MiB", 512 << 20}, {"64KiB", 64 << 10}, {"1TiB", 1 << 40},
		{"8gib", 8 << 30}, {"8 GiB", 8 << 30}, {" 8GIB ", 8 << 30}, {"1.5KiB", 1536},
		{"8GB", 8e9}, {"8gb", 8e9}, {"8 GB", 8e9}, {"512MB", 512e6}, {"64KB", 64e3}, {"64kb", 64e3}, {"2TB", 2e12},
		{"0.5GB", 5e8},
	} {
		if got, err := ParseBytes(tc.in); err != nil || got != tc.want {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
	for _, tc := range []struct{ in, want string }{
		{"-1", `"-1" is not a size: write bytes, 8GiB or 8GB`},
		{"lots", `"lots" is not a size: write bytes, 8GiB or 8GB`},
		{"GiB", `"GiB" is not a size: write bytes, 8GiB or 8GB`},
		{"", `"" is not a size: write bytes, 8GiB or 8GB`},
		{"8XB", `"8XB" is not a size: write bytes, 8GiB or 8GB`},
		{"1.2.3MB", `"1.2.3MB" is not a size: write bytes, 8GiB or 8GB`},
		{"8G", `"8G" is ambiguous: write 8GiB (binary) or 8GB (decimal)`},
		{"8g", `"8g" is ambiguous: write 8GiB (binary) or 8GB (decimal)`},
		{"8Gi", `"8Gi" is ambiguous: write 8GiB (binary) or 8GB (decimal)`},
		{"99999999999TiB", `"99999999999TiB" is not a size: too large`},
		{"9223372036854775808", `"9223372036854775808" is not a size: too large`},
		{"1e30GB", `"1e30GB" is not a size: write bytes, 8GiB or 8GB`},
	} {
		if got, err := ParseBytes(tc.in); err == nil || err.Error() != tc.want {
			t.Errorf("ParseBytes(%q) = %d, %v; want error %s", tc.in, got, err, tc.want)
		}
	}
}

func FuzzParseBytes(f *testing.F) {
	for _, s := range []string{"8GiB", "8 gb", "1.5KiB", "100", "8G", "-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if n, err := ParseBytes(s); err == nil && n < 0 {
			t.Fatalf("ParseBytes(%q) = %d", s, n)
		}
	})
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
