package coordinator

import (
	"context"
	"path/filepath"
	"testing"

	"dcroll/internal/sign"
	"dcroll/znodes"
)

// TestSignedPushAndRollback: every HEAD move numbers HEAD higher; a
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
	seq := head().Seq
	if seq == 0 || head().Signature != nil {
		t.Fatalf("unsigned first push: seq %d signature %v", seq, head().Signature)
	}
	higher := func(got uint64) bool {
		ok := got > seq
		seq = got
		return ok
	}
	res, err := Push(ctx, c, v1, PushOptions{By: "test", Signer: s})
	if err != nil || !res.Resigned || !higher(res.Seq) {
		t.Fatalf("re-sign: %+v %v", res, err)
	}
	if h := head(); h.SpecID != v1.ID() || v.Verify(c.Paths().Root, h) != nil {
		t.Fatalf("re-signed HEAD does not verify: %+v", h)
	}
	markAllDone(t, c)
	v2 := mustSpec(t, specYAML("v2", "2", blobC, "1", blobB, "64"))
	if res, err = Push(ctx, c, v2, PushOptions{By: "test", Signer: s}); err != nil || !higher(res.Seq) || res.KeyID != s.KeyID() {
		t.Fatalf("signed push: %+v %v", res, err)
	}
	if err := v.Verify(c.Paths().Root, head()); err != nil {
		t.Fatal(err)
	}
	if res, err = Rollback(ctx, c, "", PushOptions{By: "test", Signer: s}); err != nil || !higher(res.Seq) {
		t.Fatalf("signed rollback: %+v %v", res, err)
	}
	if h := head(); h.SpecID != v1.ID() || h.Seq != seq || v.Verify(c.Paths().Root, h) != nil {
		t.Fatalf("rollback HEAD: %+v", h)
	}
	// An unsigned push after signed ones is still numbered (agents with
	// --trust refuse it for its missing signature).
	markAllDone(t, c)
	if res, err = Push(ctx, c, v2, PushOptions{By: "test"}); err != nil || !higher(res.Seq) || head().Signature != nil {
		t.Fatalf("unsigned push: %+v %v", res, err)
	}
	// HEAD lowered by someone with write access: the next push is still
	// numbered above every HEAD before (the clock part).
	lowered := head()
	lowered.Seq = 1
	if _, err := c.ZK().Set(c.Paths().Head(), znodes.MustEncode(lowered), -1); err != nil {
		t.Fatal(err)
	}
	markAllDone(t, c)
	if res, err = Rollback(ctx, c, "", PushOptions{By: "test", Signer: s}); err != nil || !higher(res.Seq) {
		t.Fatalf("push after a lowered HEAD: %+v %v", res, err)
	}
}
