package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"dcroll/internal/sign"
	"dcroll/spec"
	"dcroll/znodes"
)

// headGate is the agent's trust in HEAD (Config.Trust): the keys whose
// signatures it accepts and the highest HEAD it accepted, kept in the data
// directory so that a restarted agent does not accept a replayed older
// HEAD either. Without trusted keys every HEAD passes (the default of an
// unsecured fleet). Its own lock: every worker asks it.
type headGate struct {
	v    *sign.Verifier // nil: no keys configured
	root string
	path string

	mu  sync.Mutex
	acc acceptedHead
}

// acceptedHead is the highest signed HEAD an agent accepted.
type acceptedHead struct {
	Seq    uint64    `json:"seq"`
	SpecID string    `json:"spec_id"`
	KeyID  string    `json:"key_id"`
	At     time.Time `json:"at"`
}

// trustFile is where an agent keeps acceptedHead.
const trustFile = "accepted-head.json"

func newHeadGate(cfg Config) (*headGate, error) {
	g := &headGate{root: cfg.Root, path: filepath.Join(cfg.DataDir, trustFile)}
	if len(cfg.Trust) == 0 {
		return g, nil
	}
	v, err := sign.LoadVerifier(cfg.Trust)
	if err != nil {
		return nil, fmt.Errorf("agent --trust: %w", err)
	}
	g.v = v
	b, err := os.ReadFile(g.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("agent: read %s: %w", g.path, err)
	default:
		if err := json.Unmarshal(b, &g.acc); err != nil {
			return nil, fmt.Errorf("agent: %s is unreadable (%v): move it away only if you trust the current HEAD", g.path, err)
		}
	}
	return g, nil
}

// check accepts h or says why not: unsigned, signed by an untrusted key,
// a signature that does not verify, or a sequence lower than one accepted
// (or equal with another spec). Accepting a higher sequence is recorded
// first; if that record cannot be written, h is refused.
func (g *headGate) check(h *znodes.Head) error {
	if g.v == nil {
		return nil
	}
	if err := g.v.Verify(g.root, h); err != nil {
		return err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case h.Seq < g.acc.Seq:
		return fmt.Errorf("%w: seq %d (spec %s) after seq %d (spec %s) was accepted at %s",
			sign.ErrReplayed, h.Seq, spec.ShortID(h.SpecID), g.acc.Seq, spec.ShortID(g.acc.SpecID), g.acc.At.UTC().Format(time.DateTime))
	case h.Seq == g.acc.Seq && h.SpecID != g.acc.SpecID:
		return fmt.Errorf("%w: seq %d names spec %s, but seq %d accepted before named %s",
			sign.ErrReplayed, h.Seq, spec.ShortID(h.SpecID), g.acc.Seq, spec.ShortID(g.acc.SpecID))
	case h.Seq == g.acc.Seq:
		return nil
	}
	next := acceptedHead{Seq: h.Seq, SpecID: h.SpecID, KeyID: h.Signature.KeyID, At: time.Now().UTC()}
	b, err := json.MarshalIndent(next, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(g.path, append(b, '\n')); err != nil {
		return fmt.Errorf("HEAD seq %d not accepted: cannot record it in %s: %w", h.Seq, g.path, err)
	}
	g.acc = next
	return nil
}
