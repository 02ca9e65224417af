package spec

import (
	"os"
	"testing"
)

// BenchmarkParse measures parsing and validating the example spec, plus its
// canonical id (what `dcroll push` does before talking to ZooKeeper).
func BenchmarkParse(b *testing.B) {
	data, err := os.ReadFile("testdata/good.yaml")
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		sp, err := Parse("good.yaml", data)
		if err != nil {
			b.Fatal(err)
		}
		_ = sp.ID()
	}
}
