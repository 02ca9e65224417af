package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/user"
	"sort"
	"strings"
	"time"

	"github.com/go-zookeeper/zk"

	"dcroll/internal/sign"
	"dcroll/spec"
	"dcroll/znodes"
)

// Sentinel errors callers branch on.
var (
	ErrRolloutInProgress = errors.New("a rollout is unfinished")
	ErrConcurrentPush    = errors.New("HEAD moved while this push was prepared")
	ErrNoPrevious        = errors.New("no previous spec to roll back to")
	ErrUnknownSpec       = errors.New("unknown spec")
	ErrMissingBlobs      = errors.New("blobs not published")
	// ErrBadBuild: a build of the spec halted a rollout (/dc/bad); --force.
	ErrBadBuild = errors.New("a build of the spec halted a rollout")
	// ErrQuorumTooLarge: a service's quorum exceeds its members: no
	// machine could ever take a step.
	ErrQuorumTooLarge = errors.New("quorum larger than the members")
	// ErrHeadMoved: HEAD is not the one PushOptions.IfHead names.
	ErrHeadMoved = errors.New("HEAD is not the expected spec")
)

// refusal is an error whose message is exactly msg and which wraps a sentinel.
type refusal struct {
	msg string
	err error
}

func (r *refusal) Error() string { return r.msg }
func (r *refusal) Unwrap() error { return r.err }

// PushOptions tune Push and Rollback.
type PushOptions struct {
	// Supersede replaces an unfinished rollout's queue instead of refusing.
	Supersede bool
	// Force pushes past builds recorded as bad in /dc/bad (their records
	// are deleted in the same transaction and named in the history entry),
	// and does not keep a superseded halted entry halted when the same
	// build is pushed again.
	Force bool
	// DryRun computes and returns the plan but writes nothing. It refuses
	// what a real push would refuse.
	DryRun bool
	// IfHead refuses the push (ErrHeadMoved, nothing changed) unless HEAD
	// is this spec id: a unique prefix of at least 4 hex digits, or "none"
	// for no HEAD yet. It lets a reviewed plan (dcroll plan) be applied
	// as planned: the check is on the HEAD the transaction is fenced on.
	IfHead string
	// Signer, when set, signs the new HEAD (spec id and sequence number)
	// for agents started with --trust. Pushing the spec HEAD already
	// names with a Signer whose signature HEAD lacks re-signs HEAD (a
	// higher sequence, same spec): how a running fleet starts signing.
	Signer *sign.Signer
	// By names who moved HEAD (default user@host).
	By string
	// Now is the clock (default time.Now).
	Now func() time.Time

	action   string
	extraOps []any // test hook: appended to the transaction
}

func (o *PushOptions) defaults() {
	if o.By == "" {
		o.By = whoAmI()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.action == "" {
		o.action = znodes.ActionPush
	}
}

// WhoAmI names the operator for records: user@host.
func WhoAmI() string { return whoAmI() }

func whoAmI() string {
	name := "unknown"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	host, _ := os.Hostname()
	return name + "@" + host
}

// PushResult says what a push did (or would do, for a dry run).
type PushResult struct {
	SpecID     string        `json:"spec_id"`
	Name       string        `json:"name"`
	PrevID     string        `json:"prev_id,omitempty"`
	Unchanged  bool          `json:"unchanged"` // HEAD already pointed to this spec
	DryRun     bool          `json:"dry_run"`
	Superseded bool          `json:"superseded"`
	Plan       []spec.Change `json:"plan"`
	// Entries is the new deploy queue, in order (for a dry run: the queue
	// it would write). It has the plan's services plus the unfinished
	// services of a superseded queue that the plan leaves alone.
	Entries []znodes.DeployEntry `json:"entries"`
	Queue   []string             `json:"queue"` // deploy entry znode names created
	Action  string               `json:"action"`
	// SupersededHalts are the halted entries of the replaced queue.
	SupersededHalts []SupersededHalt `json:"superseded_halts,omitempty"`
	// Forced are the /dc/bad keys pushed past with Force (and deleted).
	Forced []string `json:"forced,omitempty"`
	// Seq is the new HEAD's sequence number, KeyID the key that signed it
	// ("": unsigned); Resigned: HEAD already named the spec and was only
	// signed again.
	Seq      uint64 `json:"seq,omitempty"`
	KeyID    string `json:"key_id,omitempty"`
	Resigned bool   `json:"resigned,omitempty"`
	// Night is the night plan (PlanNight) that dcroll push --dry-run
	// prints with the result; nil otherwise.
	Night *NightPlan `json:"night,omitempty"`
}

// MarshalJSON writes empty lists as [] (an unchanged push has no plan,
// entries or queue), never null.
func (r PushResult) MarshalJSON() ([]byte, error) {
	type plain PushResult // no MarshalJSON: no recursion
	p := plain(r)
	if p.Plan == nil {
		p.Plan = []spec.Change{}
	}
	if p.Entries == nil {
		p.Entries = []znodes.DeployEntry{}
	}
	if p.Queue == nil {
		p.Queue = []string{}
	}
	return json.Marshal(p)
}

// Push makes sp the HEAD spec and queues its rollout, atomically: one
// Multi, and nothing changes when it refuses. It refuses a spec whose
// blobs are not published, an unfinished rollout without Supersede, a
// build recorded as bad without Force (ErrBadBuild), and a quorum larger
// than a service's members (ErrQuorumTooLarge).
func Push(ctx context.Context, c *znodes.Conn, sp *spec.Spec, o PushOptions) (*PushResult, error) {
	o.defaults()
	id := sp.ID()
	wrap := func(err error) error { return fmt.Errorf("%s %s: %w", o.action, spec.ShortID(id), err) }
	if err := c.EnsureSkeleton(); err != nil {
		return nil, wrap(err)
	}
	p := c.Paths()
	head, headStat, err := ReadHead(c)
	if err != nil {
		return nil, wrap(err)
	}
	if err := checkIfHead(head, o); err != nil {
		return nil, err
	}
	res := &PushResult{SpecID: id, Name: sp.Name, DryRun: o.DryRun, Action: o.action}
	var cur *spec.Spec
	if head != nil {
		res.PrevID = head.SpecID
		if head.SpecID == id {
			res.Unchanged = true
			if o.Signer != nil && !o.DryRun && (head.Signature == nil || head.Signature.KeyID != o.Signer.KeyID()) {
				return resign(c, head, headStat, o, res)
			}
			return res, nil
		}
		if cur, err = LoadSpec(c, head.SpecID); err != nil {
			return nil, fmt.Errorf("%s %s: load HEAD spec: %w", o.action, spec.ShortID(id), err)
		}
	}
	plan, err := spec.Plan(cur, sp)
	if err != nil {
		return nil, fmt.Errorf("%s %s: plan: %w", o.action, spec.ShortID(id), err)
	}
	res.Plan = plan

	missing, err := MissingBlobs(c, sp.Blobs())
	if err != nil {
		return nil, wrap(err)
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%w: %s (publish them first: dcroll blob publish FILE)", ErrMissingBlobs, strings.Join(missing, ", "))
	}

	queue, err := ReadQueue(c)
	if err != nil {
		return nil, wrap(err)
	}
	unfinished := unfinishedEntries(queue)
	if len(unfinished) > 0 {
		if !o.Supersede {
			return nil, fmt.Errorf("%w: %s; wait for it, or replace it with --supersede", ErrRolloutInProgress, strings.Join(unfinished, ", "))
		}
		res.Superseded = true
	}

	now := o.Now().UTC()
	entries, halts, err := newQueue(cur, sp, id, plan, queue, haltedSpecs(c, head, cur, queue), o.Force, now)
	if err != nil {
		return nil, fmt.Errorf("%s %s: plan: %w", o.action, spec.ShortID(id), err)
	}
	res.Entries, res.SupersededHalts = entries, halts

	badOps, forced, err := checkBadBuilds(c, sp, o)
	if err != nil {
		return nil, err
	}
	res.Forced = forced
	if err := checkQuorums(c, sp, entries, o.action); err != nil {
		return nil, err
	}
	if o.DryRun {
		return res, nil
	}

	var ops []any
	specExists, _, err := c.ZK().Exists(p.Spec(id))
	if err != nil {
		return nil, wrap(err)
	}
	if !specExists {
		ops = append(ops, c.CreateOp(p.Spec(id), sp.Canonical(), 0))
	}
	newHead := &znodes.Head{SpecID: id, Name: sp.Name, By: o.By, At: now, Action: o.action, Seq: nextSeq(head, now)}
	if o.Signer != nil {
		newHead.Signature = o.Signer.Sign(p.Root, id, newHead.Seq)
		res.KeyID = o.Signer.KeyID()
	}
	res.Seq = newHead.Seq
	if head != nil {
		newHead.Prev = head.SpecID
		ops = append(ops, &zk.SetDataRequest{Path: p.Head(), Data: znodes.MustEncode(newHead), Version: headStat.Version})
	} else {
		ops = append(ops, c.CreateOp(p.Head(), znodes.MustEncode(newHead), 0))
	}
	hist := &znodes.HistoryEntry{
		Action: o.action, From: res.PrevID, To: id, Name: sp.Name, By: o.By, At: now,
		Superseded: res.Superseded, Forced: forced,
	}
	for _, e := range entries {
		hist.Services = append(hist.Services, e.Service)
	}
	for _, h := range halts {
		hist.SupersededHalts = append(hist.SupersededHalts, h.String())
	}
	ops = append(ops, c.CreateOp(p.HistoryEntryPrefix(), znodes.MustEncode(hist), zk.FlagSequence))
	for _, e := range queue {
		ops = append(ops, &zk.DeleteRequest{Path: p.DeployEntry(e.Node), Version: e.ZVersion})
	}
	for i := range entries {
		ops = append(ops, c.CreateOp(p.DeployEntryPrefix(), znodes.MustEncode(&entries[i]), zk.FlagSequence))
	}
	ops = append(ops, badOps...)
	budgetOps, err := missingBudgets(c, sp, now)
	if err != nil {
		return nil, wrap(err)
	}
	ops = append(ops, budgetOps...)
	ops = append(ops, o.extraOps...)

	resp, err := c.Multi(ops...)
	if err != nil {
		if errors.Is(err, zk.ErrBadVersion) || errors.Is(err, zk.ErrNodeExists) || errors.Is(err, zk.ErrNoNode) {
			return nil, fmt.Errorf("%w (%v): nothing was changed; run the command again", ErrConcurrentPush, err)
		}
		return nil, fmt.Errorf("%s %s: nothing was changed: %w", o.action, spec.ShortID(id), err)
	}
	for i, r := range resp {
		if cr, ok := ops[i].(*zk.CreateRequest); ok && strings.HasPrefix(cr.Path, p.DeployEntryPrefix()) {
			res.Queue = append(res.Queue, r.String[strings.LastIndex(r.String, "/")+1:])
		}
	}
	return res, nil
}

// haltedSpecs loads the stored specs of the halted entries of queue, by
// spec id, for newQueue (cur is HEAD's spec, already loaded). A spec that
// cannot be loaded is left out: sameTarget then assumes the same settings
// (the entry stays halted).
func haltedSpecs(c *znodes.Conn, head *znodes.Head, cur *spec.Spec, queue []QueueEntry) map[string]*spec.Spec {
	specs := map[string]*spec.Spec{}
	for _, e := range queue {
		if e.State != znodes.DeployHalted || specs[e.SpecID] != nil {
			continue
		}
		if cur != nil && head != nil && e.SpecID == head.SpecID {
			specs[e.SpecID] = cur
		} else if old, err := LoadSpec(c, e.SpecID); err == nil {
			specs[e.SpecID] = old
		}
	}
	return specs
}

// checkIfHead refuses when o.IfHead is set and head (nil: none) is not
// it. HEAD was read with its version, and the transaction checks that
// version: a HEAD that moves after this check aborts the push.
func checkIfHead(head *znodes.Head, o PushOptions) error {
	want := strings.ToLower(strings.TrimPrefix(strings.TrimSpace(o.IfHead), "sha256:"))
	if want == "" {
		return nil
	}
	got := "none"
	if head != nil {
		got = head.SpecID
	}
	if err := ValidIfHead(want); err != nil {
		return fmt.Errorf("%s: %w", o.action, err)
	}
	if want == "none" && head == nil || want != "none" && head != nil && strings.HasPrefix(head.SpecID, want) {
		return nil
	}
	return &refusal{err: ErrHeadMoved,
		msg: fmt.Sprintf("%s: HEAD is %s, not %s: nothing was changed; plan again (dcroll plan SPEC)", o.action, spec.ShortID(got), want)}
}

// ValidIfHead checks the form of an --if-head value: "none", or at least
// 4 hex digits of a spec id.
func ValidIfHead(v string) error {
	v = strings.ToLower(strings.TrimPrefix(v, "sha256:"))
	if v == "none" {
		return nil
	}
	if len(v) < 4 || strings.Trim(v, "0123456789abcdef") != "" {
		return fmt.Errorf("--if-head %q: want at least 4 hex digits of a spec id, or none", v)
	}
	return nil
}

// specBad is a bad-build record that names a build of a spec's service.
type specBad struct {
	service string
	line    string // badLine: what halted and when
	key     string
	version int32 // znode version of the record
}

// readSpecBad reads the /dc/bad records of every build of sp (alone, or
// with the service's settings): the one reader of push, rollback and plan.
func readSpecBad(c *znodes.Conn, sp *spec.Spec) ([]specBad, error) {
	var out []specBad
	seen := map[string]bool{}
	for _, name := range sp.Names() {
		svc := sp.Services[name]
		if svc == nil {
			continue
		}
		for _, key := range badKeys(svc) {
			if seen[key] {
				continue
			}
			seen[key] = true
			var b znodes.BadBuild
			st, err := c.GetJSON(c.Paths().Bad(key), &b)
			if errors.Is(err, zk.ErrNoNode) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("read bad builds: %w", err)
			}
			out = append(out, specBad{service: name, line: badLine(name, svc, b), key: key, version: st.Version})
		}
	}
	return out, nil
}

// checkBadBuilds refuses sp if a build of one of its services (alone, or
// with the service's settings) is recorded in /dc/bad, unless o.Force:
// then it returns the versioned deletes of those records and their keys.
func checkBadBuilds(c *znodes.Conn, sp *spec.Spec, o PushOptions) (ops []any, forced []string, err error) {
	bad, err := readSpecBad(c, sp)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", o.action, err)
	}
	var lines []string
	for _, b := range bad {
		lines = append(lines, b.line)
		forced = append(forced, b.key)
		ops = append(ops, &zk.DeleteRequest{Path: c.Paths().Bad(b.key), Version: b.version})
	}
	if len(lines) > 0 && !o.Force {
		return nil, nil, &refusal{err: ErrBadBuild,
			msg: o.action + ": " + strings.Join(lines, "; ") + "; push a fixed build, or --force to try it again"}
	}
	return ops, forced, nil
}

// checkQuorums refuses a queue in which a service that has members asks a
// quorum that leaves no member free to step: larger than, or equal to, its
// members. A new service (kind new: its machines start it, nothing steps)
// and a removal may have any quorum; so may a service without members.
func checkQuorums(c *znodes.Conn, sp *spec.Spec, entries []znodes.DeployEntry, action string) error {
	var lines []string
	for _, e := range entries {
		svc := sp.Services[e.Service]
		if e.Kind == znodes.KindRemoved || e.Kind == string(spec.ChangeNew) || svc == nil {
			continue
		}
		f, err := c.ReadFleet(e.Service)
		if err != nil {
			return fmt.Errorf("%s: %w", action, err)
		}
		states := f.States()
		n := len(states)
		if n == 0 {
			continue
		}
		names := make([]string, n)
		for i, s := range states {
			names[i] = s.Machine
		}
		switch need := svc.Quorum.Min(n); {
		case svc.Quorum.Percent == 0 && svc.Quorum.Count > n:
			lines = append(lines, fmt.Sprintf("%s: quorum %d is larger than its %d members (%s)", e.Service, svc.Quorum.Count, n, strings.Join(names, ",")))
		case need >= n:
			lines = append(lines, fmt.Sprintf("%s: quorum %s of its %d members (%s) leaves none free to step", e.Service, svc.Quorum, n, strings.Join(names, ",")))
		}
	}
	if len(lines) > 0 {
		return &refusal{err: ErrQuorumTooLarge,
			msg: action + ": " + strings.Join(lines, "; ") + ": lower the quorum or add machines"}
	}
	return nil
}

func missingBudgets(c *znodes.Conn, sp *spec.Spec, now time.Time) ([]any, error) {
	names := make([]string, 0, len(sp.Services))
	for name := range sp.Services {
		names = append(names, name)
	}
	sort.Strings(names)
	var ops []any
	for _, name := range names {
		p := c.Paths().Budget(name)
		ok, _, err := c.ZK().Exists(p)
		if err != nil {
			return nil, fmt.Errorf("budget %s: %w", name, err)
		}
		if !ok {
			ops = append(ops, c.CreateOp(p, znodes.MustEncode(&znodes.Budget{Service: name, At: now}), 0))
		}
	}
	return ops, nil
}

// nextSeq numbers the HEAD that replaces head: above head's, and at least
// the time in milliseconds. The clock part matters when someone with write
// access lowered HEAD's number (writing an old signed HEAD back): agents
// refuse that replay, and the next real push must still be numbered above
// everything they accepted, which were all numbered by earlier pushes'
// clocks.
func nextSeq(head *znodes.Head, now time.Time) uint64 {
	seq := uint64(max(now.UnixMilli(), 1))
	if head != nil && head.Seq >= seq {
		seq = head.Seq + 1
	}
	return seq
}

// resign writes HEAD again with the next sequence number, signed by
// o.Signer, fenced on the HEAD version read: nothing else changes.
func resign(c *znodes.Conn, head *znodes.Head, st *zk.Stat, o PushOptions, res *PushResult) (*PushResult, error) {
	h := *head
	h.Seq = nextSeq(head, o.Now())
	h.Signature = o.Signer.Sign(c.Paths().Root, h.SpecID, h.Seq)
	h.By, h.At = o.By, o.Now().UTC()
	if _, err := c.ZK().Set(c.Paths().Head(), znodes.MustEncode(&h), st.Version); err != nil {
		if errors.Is(err, zk.ErrBadVersion) {
			return nil, fmt.Errorf("%w: HEAD moved while signing it; nothing was changed, run it again", ErrConcurrentPush)
		}
		return nil, fmt.Errorf("sign HEAD: %w", err)
	}
	res.Resigned, res.Seq, res.KeyID = true, h.Seq, o.Signer.KeyID()
	return res, nil
}

// Rollback moves HEAD to spec toID (the previous HEAD when empty) through
// the same atomic path as a push. It always supersedes an unfinished rollout:
// rolling back is how a halted rollout is abandoned. Like a push, it refuses
// a spec with a build recorded as bad (the spec being rolled back to just
// halted a rollout) unless o.Force.
func Rollback(ctx context.Context, c *znodes.Conn, toID string, o PushOptions) (*PushResult, error) {
	head, _, err := ReadHead(c)
	if err != nil {
		return nil, fmt.Errorf("rollback: %w", err)
	}
	if toID == "" {
		if head == nil || head.Prev == "" {
			return nil, fmt.Errorf("rollback: %w: HEAD has no predecessor; name a spec id (see dcroll history)", ErrNoPrevious)
		}
		toID = head.Prev
	}
	full, err := ResolveSpecID(c, toID)
	if err != nil {
		return nil, fmt.Errorf("rollback: %w", err)
	}
	sp, err := LoadSpec(c, full)
	if err != nil {
		return nil, fmt.Errorf("rollback: %w", err)
	}
	o.Supersede = true
	o.action = znodes.ActionRollback
	return Push(ctx, c, sp, o)
}
