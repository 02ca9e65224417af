// Package units formats and parses byte sizes and wraps readers with a
// context: small helpers shared by the CLI, distrib and the supervisor.
package units

import (
	"context"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// HumanBytes formats n with binary units: 512 B, 1.5 KiB, 3.0 GiB.
func HumanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// SizeForms describes the sizes ParseBytes accepts, for flag help and
// config docs.
const SizeForms = "plain bytes (1048576), binary 8GiB/512MiB/64KiB, or decimal 8GB/512MB/64KB; case-insensitive, a space is allowed (8 GiB)"

// sizeUnits maps a lower-case unit to its multiplier. A bare K, M, G or T
// is refused: some tools read 8G as 8 GiB, others as 8 GB.
var sizeUnits = map[string]int64{
	"": 1, "b": 1,
	"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
	"kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
}

// ParseBytes reads a non-negative size: plain bytes (1048576, 100B),
// binary units (8GiB, 512MiB, 64KiB, 1TiB) or decimal units (8GB, 512MB,
// 64KB, 1TB). Units are case-insensitive and may follow a space; the number
// may have a fraction (1.5GiB), rounded down to whole bytes. Every size of
// dcroll (flags and YAML) is read by it; SizeForms describes the forms.
func ParseBytes(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := strings.IndexFunc(t, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	if i < 0 {
		i = len(t)
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	mult, ok := sizeUnits[unit]
	if num == "" || !ok {
		switch unit {
		case "k", "m", "g", "t", "ki", "mi", "gi", "ti":
			u := strings.ToUpper(unit[:1])
			return 0, fmt.Errorf("%q is ambiguous: write %s%siB (binary) or %s%sB (decimal)", s, num, u, num, u)
		}
		return 0, fmt.Errorf("%q is not a size: write bytes, 8GiB or 8GB", s)
	}
	if !strings.Contains(num, ".") {
		n, err := strconv.ParseInt(num, 10, 64)
		if err != nil || n > math.MaxInt64/mult {
			return 0, fmt.Errorf("%q is not a size: too large", s)
		}
		return n * mult, nil
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a size: write bytes, 8GiB or 8GB", s)
	}
	if f*float64(mult) >= math.MaxInt64 {
		return 0, fmt.Errorf("%q is not a size: too large", s)
	}
	return int64(f * float64(mult)), nil
}

// ContextReader returns a reader that fails with ctx.Err() once ctx ends,
// so a long copy stops promptly.
func ContextReader(ctx context.Context, r io.Reader) io.Reader { return ctxReader{ctx, r} }

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
