package coordinator

import (
	"context"
	"path/filepath"
	"testing"

	"dcroll/internal/sign"
	"dcroll/znodes"
)

// TestSignedPushAndRollback: every HEAD move numbers HEAD one higher; a
// push or rollback with a signer signs spec id and sequence for this root;
// pushing the HEAD spec again with a signer re-signs HEAD only.
func TestSignedPushAndRollback(t *testing.T) {
	c := env(t)
	ctx := context.Background()
	key := filepath.Join(t.TempDir(), "release.key")
	if _, err := sign.GenerateKey(key); err != nil {
		t.Fatal(err)
	}
	s, err := sign.LoadSigner(key)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := sign.LoadPublic(key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	v := sign.NewVerifier(pub)
	head := func() *znodes.Head {
		t.Helper()
		h, _, err := ReadHead(c)
		if err != nil || h == nil {
			t.Fatalf("head: %v", err)
		}
		return h
	}
	v1 := mustSpec(t, specYAML("v1", "1", blobA, "1", blobB, "64"))
	if _, err := Push(ctx, c, v1, PushOptions{By: "test"}); err != nil {
		t.Fatal(err)
	}
	if h := head(); h.Seq != 1 || h.Signature != nil {
		t.Fatalf("unsigned first push: seq %d signature %v", h.Seq, h.Signature)
	}
	res, err := Push(ctx, c, v1, PushOptions{By: "test", Signer: s})
	if err != nil || !res.Resigned || res.Seq != 2 {
		t.Fatalf("re-sign: %+v %v", res, err)
	}
	if h := head(); h.SpecID != v1.ID() || v.Verify(c.Paths().Root, h) != nil {
		t.Fatalf("re-signed HEAD does not verify: %+v", h)
	}
	markAllDone(t, c)
	v2 := mustSpec(t, specYAML("v2", "2", blobC, "1", blobB, "64"))
	if res, err = Push(ctx, c, v2, PushOptions{By: "test", Signer: s}); err != nil || res.Seq != 3 || res.KeyID != s.KeyID() {
		t.Fatalf("signed push: %+v %v", res, err)
	}
	if err := v.Verify(c.Paths().Root, head()); err != nil {
		t.Fatal(err)
	}
	if res, err = Rollback(ctx, c, "", PushOptions{By: "test", Signer: s}); err != nil || res.Seq != 4 {
		t.Fatalf("signed rollback: %+v %v", res, err)
	}
	if h := head(); h.SpecID != v1.ID() || h.Seq != 4 || v.Verify(c.Paths().Root, h) != nil {
		t.Fatalf("rollback HEAD: %+v", h)
	}
	// An unsigned push after signed ones is still numbered (agents with
	// --trust refuse it for its missing signature).
	markAllDone(t, c)
	if res, err = Push(ctx, c, v2, PushOptions{By: "test"}); err != nil || res.Seq != 5 || head().Signature != nil {
		t.Fatalf("unsigned push: %+v %v", res, err)
	}
}
